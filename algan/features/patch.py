"""Patch features: per-location feature vectors on one grid, for the patch-level heads (anomaly maps).

Following PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022, Sec. 3.1):
the feature maps of chosen mid-level blocks of an ImageNet backbone are

1. locally aggregated: each cell's vector is averaged over its ``aggregate x aggregate`` neighbourhood
   (``avg_pool2d``, stride 1, zero padding not counted), which widens the receptive field without losing
   resolution;
2. resized (bilinear) to one grid of ``input / stride`` cells per side (28 x 28 for a 224 x 224 input at stride 8);
3. concatenated along channels: float32 (N, C, gh, gw), C = the blocks' channels summed (EfficientNet-Lite0
   blocks 4 + 10: 40 + 112 = 152);
4. optionally reduced in dimension by a fixed linear map fitted on training patches (:class:`PatchProjection`:
   a random Gaussian projection, Johnson-Lindenstrauss, or PCA), applied per cell like a 1x1 convolution.

Strides at the backbone's input: EfficientNet-Lite0 blocks 0 / 1-2 / 3-4 / 5-10 / 11-15 = 2 / 4 / 8 / 16 / 32 px;
torchvision ResNet stages 1-4 = 4 / 8 / 16 / 32 px. Everything here is traceable to ONNX (pooling, resize, concat,
matrix products).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from algan.contract.patch import MAP_NORMS, PROJECTIONS, REDUCTIONS, PatchSpec  # noqa: F401 - the features' spec
from algan.features.backbone import LITE_VARIANTS, BackboneError, BackboneSpec, build_backbone, lite_stage_blocks


def default_patch_blocks(name: str, head: str = "algan") -> list[int]:
    """Blocks whose maps make the patch vectors when none are chosen, per head kind.

    ALGAN-patch and PaDiM-style: the last blocks of the EfficientNet-Lite stages 4 and 5 (strides 16 and 32; Lite0
    10 + 14, 304 channels; Lite1/Lite2 14 + 19, 304 / 328 channels). PatchCore: the last blocks of stages 2 and 4
    (strides 8 and 16; Lite0 4 + 10, 152 channels; Lite1/Lite2 6 + 14), the analogue of the PatchCore paper's
    layer2 + layer3 (Roth et al., CVPR 2022, sec. 3.1): on all six dev sets PatchCore gains with them (+0.005 to
    +0.124 image AUROC, mean +0.043) while ALGAN-patch loses up to 0.145 (benchmarks/RESULTS.md, "Earlier backbone
    blocks"). The ResNets: layer2 + layer3 for every head (PatchCore's choice).

    Args:
        name: backbone name (:data:`algan.features.backbone.BACKBONE_NAMES`).
        head: the patch head (``algan``, ``padim``, ``patchcore``).
    """
    if name in LITE_VARIANTS:
        stages = (2, 4) if head == "patchcore" else (4, 5)
        return [lite_stage_blocks(name, (s,))[-1] for s in stages]
    return [2, 3]


def block_channels(spec: BackboneSpec) -> list[int]:
    """Channels of each chosen block of ``spec`` (sorted block order)."""
    if spec.name in LITE_VARIANTS:
        return [LITE_VARIANTS[spec.name].channels[i] for i in sorted(set(spec.blocks))]
    from algan.features.torchvision_backbones import STAGE_CHANNELS

    return [STAGE_CHANNELS[spec.name][i] for i in sorted(set(spec.blocks))]


class PatchFeatureMaps(nn.Module):
    """Normalised RGB float32 (N, 3, H, W) -> patch feature maps float32 (N, C, gh, gw).

    ``C`` = sum of the chosen blocks' channels (:func:`block_channels`), twice that with ``PatchSpec.context ==
    "mean"`` (the image's mean patch vector appended to every cell); ``(gh, gw)`` = :meth:`PatchSpec.grid`.
    """

    def __init__(self, backbone_spec: BackboneSpec, patch: PatchSpec) -> None:
        super().__init__()
        self.trunk = build_backbone(backbone_spec)
        if not hasattr(self.trunk, "block_maps"):
            raise BackboneError(f"backbone {backbone_spec.name} has no feature maps for the patch variant")
        self.grid = patch.grid(tuple(backbone_spec.input_size))
        self.aggregate = int(patch.aggregate)
        self.context = patch.context
        channels = int(sum(block_channels(backbone_spec)))
        self.out_dim = 2 * channels if self.context == "mean" else channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for m in self.trunk.block_maps(x):
            if self.aggregate > 1:
                m = F.avg_pool2d(m, self.aggregate, stride=1, padding=self.aggregate // 2, count_include_pad=False)
            if tuple(m.shape[-2:]) != self.grid:
                m = F.interpolate(m, size=self.grid, mode="bilinear", align_corners=False)
            out.append(m)
        maps = torch.cat(out, dim=1)
        if self.context == "mean":  # the image's mean patch vector beside every cell's own
            maps = torch.cat([maps, maps.mean(dim=(2, 3), keepdim=True).expand_as(maps)], dim=1)
        return maps


class PatchProjection(nn.Module):
    """Per-cell affine map ``(x - mean) @ proj``: float32 (N, C, gh, gw) -> (N, K, gh, gw) (a 1x1 convolution).

    ``kind``: ``none`` (identity, K = C), ``random`` (proj = Gaussian N(0, 1/K) entries, seeded; distances are kept
    up to a factor 1 +- eps, Johnson & Lindenstrauss 1984), ``pca`` (proj = the top-K principal axes of training
    patches, not whitened: the heads do their own whitening).
    """

    def __init__(self, kind: str, in_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        if kind not in PROJECTIONS:
            raise ValueError(f"unknown patch projection {kind!r}; use one of {', '.join(PROJECTIONS)}")
        self.kind = kind
        k = in_dim if kind == "none" else int(out_dim or in_dim)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("proj", torch.eye(in_dim) if kind == "none" else torch.zeros(in_dim, k))

    @property
    def out_dim(self) -> int:
        return int(self.proj.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "none":
            return x
        return self.vectors(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def vectors(self, v: torch.Tensor) -> torch.Tensor:
        """The same map on vectors: float32 (..., C) -> (..., K)."""
        return v if self.kind == "none" else (v - self.mean) @ self.proj

    @classmethod
    def fit(cls, kind: str, patches: np.ndarray, out_dim: int | None = None, seed: int = 0) -> PatchProjection:
        """Fit on training patch vectors float (M, C).

        Raises:
            ValueError: unknown kind, or ``out_dim`` larger than C (pca) / missing.
        """
        c = patches.shape[1]
        p = cls(kind, c, out_dim)
        if kind == "none":
            return p
        k = p.out_dim
        if kind == "pca" and k > min(c, len(patches)):
            raise ValueError(f"PCA to {k} dimensions needs at least {k} patches of >= {k} channels, got "
                             f"{len(patches)} x {c}")
        x = np.asarray(patches, dtype=np.float64)
        mean = x.mean(0)
        if kind == "random":
            w = np.random.default_rng(seed).standard_normal((c, k)) / np.sqrt(k)
        else:
            xc = x - mean
            if len(xc) > c:  # the C x C covariance's eigenvectors: one matrix product instead of an N x C SVD
                _, v = np.linalg.eigh(xc.T @ xc)
                w = np.ascontiguousarray(v[:, ::-1][:, :k])
            else:
                _, _, vt = np.linalg.svd(xc, full_matrices=False)
                w = vt[:k].T
        p.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        p.proj.copy_(torch.as_tensor(w, dtype=torch.float32))
        return p


def gaussian_kernel1d(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian kernel of half-width ``ceil(3 sigma)`` (``sigma`` in cells), float32."""
    r = max(int(np.ceil(3.0 * sigma)), 1)
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


#: ``standardize``: the per-location standard deviation is floored at this fraction of its median over the map
STD_FLOOR = 0.25


class MapNormalization(nn.Module):
    """Per-location normalisation of anomaly maps: ``(map - mean) * scale``, float32 (N, h, w) -> (N, h, w).

    ``mean`` (h, w) is the map a normal image gets at each location (the average of smoothed training-normal maps)
    and ``scale`` (h, w) is 1 (``kind = "mean"``) or the inverse per-location standard deviation
    (``standardize``, floored at a quarter of the median standard deviation so that a location that never varies
    is not amplified). A location where normal images score high (the map's border, where the backbone's zero
    padding changes the features) is brought to the level of the others, so the map's peak and the image score
    follow the defect rather than the edge. PaDiM (Defard et al., ICPR 2021) models every location separately for
    the same reason; here only the map's first (and second) moment is per location, the patch model stays shared.
    """

    def __init__(self, kind: str, map_size: tuple[int, int]) -> None:
        super().__init__()
        if kind not in MAP_NORMS or kind == "none":
            raise ValueError(f"map normalisation must be mean or standardize, got {kind!r}")
        self.kind = kind
        self.register_buffer("mean", torch.zeros(map_size))
        self.register_buffer("scale", torch.ones(map_size))

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return (maps - self.mean) * self.scale

    @torch.no_grad()
    def fit(self, maps: torch.Tensor) -> MapNormalization:
        """Set the statistics from smoothed, unnormalised maps of normal images, float (N, h, w), N >= 2.

        Raises:
            ValueError: fewer than 2 maps, or maps of another size than the buffers.
        """
        m = maps.detach().double()
        if m.ndim != 3 or tuple(m.shape[1:]) != tuple(self.mean.shape) or len(m) < 2:
            raise ValueError(f"map statistics need >= 2 maps of size {tuple(self.mean.shape)}, got {tuple(m.shape)}")
        self.mean.copy_(m.mean(0).float())
        if self.kind == "standardize":
            std = m.std(0)
            floor = max(float(std.median()) * STD_FLOOR, 1e-12)
            self.scale.copy_((1.0 / std.clamp(min=floor)).float())
        else:
            self.scale.fill_(1.0)
        return self


class MapPostprocess(nn.Module):
    """Raw patch scores (N, gh, gw) -> anomaly map (N, h, w) and image score (N,).

    The grid is resized (bilinear) to the map size, then smoothed with a separable Gaussian of
    ``smooth_sigma / map_stride`` cells (edge-replicated borders), as PatchCore smooths its upsampled map
    (sigma 4 px), then normalised per location (:class:`MapNormalization`, ``PatchSpec.map_norm``; its statistics
    are fitted after the head, :meth:`fit_norm`). Image score = the map's ``max``, or the mean of its
    ``ceil(topk * h * w)`` largest cells (``topk_mean``); see :class:`PatchSpec`.
    """

    def __init__(self, patch: PatchSpec, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.map_size = patch.map_size(tuple(input_size))
        self.reduction = patch.reduction
        self.topk = float(patch.topk)
        h, w = self.map_size
        self.k = max(int(np.ceil(patch.topk * h * w)), 1)
        sigma = patch.smooth_sigma / patch.map_stride
        kernel = gaussian_kernel1d(sigma) if sigma > 0 else np.ones(1, np.float32)
        self.pad = len(kernel) // 2
        self.register_buffer("kernel_h", torch.from_numpy(kernel).view(1, 1, -1, 1))
        self.register_buffer("kernel_w", torch.from_numpy(kernel).view(1, 1, 1, -1))
        self.norm = MapNormalization(patch.map_norm, self.map_size) if patch.map_norm != "none" else None

    def smooth(self, raw: torch.Tensor) -> torch.Tensor:
        """The map before the per-location normalisation: resized and smoothed, float32 (N, h, w)."""
        x = raw.unsqueeze(1)
        if tuple(x.shape[-2:]) != self.map_size:
            x = F.interpolate(x, size=self.map_size, mode="bilinear", align_corners=False)
        if self.pad:
            x = F.pad(x, (0, 0, self.pad, self.pad), mode="replicate")
            x = F.conv2d(x, self.kernel_h)
            x = F.pad(x, (self.pad, self.pad, 0, 0), mode="replicate")
            x = F.conv2d(x, self.kernel_w)
        return x.squeeze(1)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        x = self.smooth(raw)
        return self.norm(x) if self.norm is not None else x

    def fit_norm(self, smoothed: torch.Tensor) -> None:
        """Fit the per-location normalisation on :meth:`smooth` maps of normal images (N, h, w); nothing to fit
        with ``map_norm = "none"``. Raises ValueError as :meth:`MapNormalization.fit`."""
        if self.norm is not None:
            self.norm.fit(smoothed)

    def reduce(self, maps: torch.Tensor) -> torch.Tensor:
        """Image scores float32 (N,) of maps (N, h, w)."""
        flat = maps.flatten(1)
        if self.reduction == "max":
            return flat.amax(dim=1)
        return torch.topk(flat, self.k, dim=1).values.mean(dim=1)


@dataclass
class PatchSample:
    """Training patch vectors sampled from feature maps: float32 (M, C) and the (image, row, col) of each."""

    vectors: np.ndarray
    where: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))


def sample_cells(n_images: int, grid: tuple[int, int], per_image: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct random cells per image: int64 (n_images * k, 3) rows of (image, row, col); ``per_image = 0`` or
    more than the grid = every cell."""
    gh, gw = grid
    cells = gh * gw
    k = cells if per_image <= 0 or per_image >= cells else per_image
    out = np.empty((n_images * k, 3), np.int64)
    for i in range(n_images):
        idx = np.arange(cells) if k == cells else rng.choice(cells, k, replace=False)
        out[i * k : (i + 1) * k, 0] = i
        out[i * k : (i + 1) * k, 1] = idx // gw
        out[i * k : (i + 1) * k, 2] = idx % gw
    return out
