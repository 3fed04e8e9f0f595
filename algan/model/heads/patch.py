"""Patch-level heads: a score per grid cell from patch feature maps, for anomaly maps.

Every head maps float32 patch features (N, K, gh, gw) to raw per-cell anomaly scores (N, gh, gw), higher = more
anomalous, by applying a vector head of :mod:`algan.model.heads.vector` / :mod:`algan.model.nets.algan_head` to each
cell
(:class:`PatchwiseHead`, a 1x1 convolution in effect). All are traceable to ONNX (reshape, matrix products, TopK).

- ALGAN-patch: the ALGAN discriminator (ensemble) applied per cell, trained by
:func:`algan.model.gan.feature.train_algan`
  on sampled training patch vectors (real) against G's fake-normal and pseudo-anomalous patch vectors (Murase &
  Fukumizu 2022, applied per location).
- PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022): distance to the
  nearest vector of a memory bank, a greedy coreset of the training patches (:func:`greedy_coreset`).
- PaDiM-style Gaussian (Defard et al., "PaDiM: a Patch Distribution Modeling Framework", ICPR 2021): Mahalanobis
  distance to one Gaussian fitted to all training patches with Ledoit-Wolf shrinkage (a shared Gaussian per patch
  rather than PaDiM's one per location: it does not assume aligned objects).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from algan.model.heads.vector import KnnHead, MahalanobisHead

#: patch heads of ``algan-train --variant patch --head ...``
PATCH_HEADS = ("algan", "patchcore", "padim")


class PatchwiseHead(nn.Module):
    """Apply a vector head (float32 (M, K) -> (M,)) to every cell: (N, K, gh, gw) -> (N, gh, gw).

    ``global_branch``: an image-level score of the same cells (:class:`GlobalBranch`, ALGAN-patch) that the detector
    fuses with the map's image score (:meth:`algan.model.detector.AnomalyDetector.raw_scores`), or ``None``."""

    def __init__(self, inner: nn.Module, global_branch: GlobalBranch | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.global_branch = global_branch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k, h, w = x.shape
        v = x.permute(0, 2, 3, 1).reshape(-1, k)
        return self.inner(v).reshape(-1, h, w)


#: default weight of ALGAN-patch's image-level discriminator in the image score (:class:`GlobalBranch`): the
#: global score counts at half its calibrated size, so it raises an image only at twice its own threshold. Chosen on
#: MTD, ballscrew, weave, metal and bottle frames together (benchmarks/RESULTS.md, "Session 17"): weight 1 gave MTD
#: +0.06 image AUROC and weave -0.05, 0.5 MTD +0.05 and weave -0.02, 0.2 MTD +0.02.
GLOBAL_WEIGHT = 0.5
#: fewest unseen normal images the global branch is scaled on; with fewer the bundle ships without the branch
MIN_BRANCH_NORMALS = 20


def pool_cells(x: torch.Tensor) -> torch.Tensor:
    """Per-channel mean and standard deviation over the grid: float32 (N, K, gh, gw) -> (N, 2K)."""
    mean = x.mean(dim=(2, 3))
    std = ((x - mean[:, :, None, None]) ** 2).mean(dim=(2, 3)).sqrt()
    return torch.cat([mean, std], 1)


class GlobalBranch(nn.Module):
    """ALGAN-patch's image-level discriminator: (N, K, gh, gw) cells -> (N,) raw scores on the patch image score's
    scale.

    The cells are pooled (:func:`pool_cells`: mean and standard deviation per channel, the pooling of the feature
    variant), standardised and scored by an ALGAN discriminator trained on the pooled training images (Murase &
    Fukumizu 2022, the feature variant's objective), so a change of the whole image that no single cell shows
    (uneven texture, a shifted or rotated part) is scored too. The score is mapped onto the patch image score's raw
    scale with both scores' median and threshold on the same normal images (:meth:`set_scales`)::

        out = p_center + weight * (g - g_center) / (g_threshold - g_center) * (p_threshold - p_center)

    and the detector's image score is ``max(patch image score, out)``: with ``weight`` 0.5 the global score raises an
    image only where it reaches twice its own threshold, so the false alarms it adds on normals stay few.
    """

    def __init__(self, head: nn.Module, dim: int, weight: float = GLOBAL_WEIGHT) -> None:
        super().__init__()
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"global branch weight must lie in (0, 1], got {weight}")
        self.head = head
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        for name in ("g_center", "p_center"):
            self.register_buffer(name, torch.tensor(0.0))
        for name in ("g_scale", "p_scale"):
            self.register_buffer(name, torch.tensor(1.0))
        self.register_buffer("weight", torch.tensor(float(weight)))

    def standardize(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled vectors (N, 2K) -> standardised with the training mean and standard deviation."""
        return (pooled - self.mean) / self.std

    def fit_standardization(self, pooled: np.ndarray) -> np.ndarray:
        """Set the standardisation from training pooled vectors float32 (N, 2K); returns them standardised.
        Constant columns (standard deviation below 1e-4 of the largest, e.g. the zero spread of the image mean that
        ``--patch-context mean`` appends) are divided by 1, so rounding noise is not blown up."""
        x = torch.as_tensor(np.asarray(pooled, np.float32))
        std = x.std(0, unbiased=False)
        floor = max(1e-6, 1e-4 * float(std.max()))
        self.mean.copy_(x.mean(0))
        self.std.copy_(torch.where(std < floor, torch.ones_like(std), std))
        return self.standardize(x).numpy()

    def raw(self, cells: torch.Tensor) -> torch.Tensor:
        """The discriminator's own score float32 (N,) of cells (N, K, gh, gw)."""
        return self.head(self.standardize(pool_cells(cells)))

    def to_patch_scale(self, g: torch.Tensor) -> torch.Tensor:
        """Raw global scores (N,) mapped onto the patch image score's scale (the class docstring's formula)."""
        return self.p_center + self.weight * (g - self.g_center) / self.g_scale * self.p_scale

    def set_scales(self, patch_scores: np.ndarray, global_scores: np.ndarray, target_fpr: float) -> None:
        """Set both scores' median and threshold at ``target_fpr`` from the patch image scores and the raw global
        scores (:meth:`raw`) of the same normal images, float (N,) each, not trained on: the median and the bundle's
        threshold rule (:func:`algan.contract.center_and_threshold`; too few images give their maximum, and the
        bundle's own calibration warns about that)."""
        from algan.contract import center_and_threshold

        for prefix, scores in (("p", patch_scores), ("g", global_scores)):
            center, threshold, _ = center_and_threshold(scores, target_fpr)
            getattr(self, f"{prefix}_center").fill_(center)
            getattr(self, f"{prefix}_scale").fill_(threshold - center)

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        return self.to_patch_scale(self.raw(cells))


def scores_and_maps(head: nn.Module, post: nn.Module, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw ``(image scores (N,), maps (N, h, w))`` of a patch head on cells float32 (N, K, gh, gw) through a map
    postprocess (:class:`algan.features.patch.MapPostprocess`): the image score is the map's reduction, or with the
    head's :class:`GlobalBranch` the larger of that and the branch's score (the one rule of the detector, the head
    selection and the benchmark)."""
    maps = post(head(cells))
    scores = post.reduce(maps)
    branch = head.global_branch if isinstance(head, PatchwiseHead) else None
    if branch is not None:
        scores = torch.maximum(scores, branch(cells))
    return scores, maps


@torch.no_grad()
def scale_global_branch(head: nn.Module, post: nn.Module, cells: torch.Tensor, target_fpr: float,
                        batch_size: int = 32) -> None:
    """Set a fitted head's global branch scales (:meth:`GlobalBranch.set_scales`) from unseen normal images' cells
    (N, K, gh, gw) (float16 or float32): their map scores and the branch's raw scores. Nothing without a branch."""
    branch = head.global_branch if isinstance(head, PatchwiseHead) else None
    if branch is None:
        return
    head.eval()
    batches = [cells[i : i + batch_size].float() for i in range(0, len(cells), batch_size)]
    p = torch.cat([post.reduce(post(head(c))) for c in batches]).numpy()
    g = torch.cat([branch.raw(c) for c in batches]).numpy()
    branch.set_scales(p, g, target_fpr)


def greedy_coreset(x: np.ndarray, n: int, proj_dim: int = 128, seed: int = 0) -> np.ndarray:
    """Indices of a greedy k-center coreset of ``n`` rows of ``x`` (PatchCore, Roth et al. 2022, Algorithm 1).

    Starting from a random row, repeatedly adds the row farthest from the rows chosen so far; distances are
    computed after a random Gaussian projection to ``proj_dim`` dimensions (as PatchCore does, Sec. 3.2) when
    ``x`` is wider. The result minimises (greedily, a 2-approximation) the largest distance of any row to its
    nearest chosen row.

    Args:
        x: float (M, C) patch vectors.
        n: coreset size, 1 <= n <= M.
        proj_dim: projection dimension for the distance computations (0 = none).
        seed: seed of the projection and the first row.

    Returns:
        int64 (n,) distinct row indices, in the order chosen.

    Raises:
        ValueError: ``n`` outside [1, M].
    """
    m = len(x)
    if not 1 <= n <= m:
        raise ValueError(f"coreset size must lie in [1, {m}] (number of training patches), got {n}")
    rng = np.random.default_rng(seed)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if proj_dim and xt.shape[1] > proj_dim:
        g = torch.as_tensor((rng.standard_normal((xt.shape[1], proj_dim)) / np.sqrt(proj_dim)).astype(np.float32))
        xt = xt @ g
    sq = (xt * xt).sum(1)
    first = int(rng.integers(m))
    chosen = np.empty(n, np.int64)
    chosen[0] = first
    mind = torch.clamp(sq - 2.0 * (xt @ xt[first]) + sq[first], min=0.0)
    for j in range(1, n):
        i = int(torch.argmax(mind))
        chosen[j] = i
        torch.minimum(mind, torch.clamp(sq - 2.0 * (xt @ xt[i]) + sq[i], min=0.0), out=mind)
    return chosen


def patchcore_head(patches: np.ndarray, n_bank: int, seed: int = 0) -> PatchwiseHead:
    """PatchCore head: nearest-neighbour distance to a greedy coreset of ``n_bank`` training patch vectors.

    Features and bank are centred on the bank's mean inside the head (the same distances; the expanded
    ``|x|^2 - 2 x.b + |b|^2`` then keeps float32 and FP16 precision on uncentred backbone features)."""
    idx = greedy_coreset(patches, n_bank, seed=seed)
    bank = np.asarray(patches, np.float32)[np.sort(idx)]
    return PatchwiseHead(KnnHead(bank, k=1, center=bank.mean(axis=0, dtype=np.float64).astype(np.float32)))


def padim_head(patches: np.ndarray) -> PatchwiseHead:
    """PaDiM-style head: Mahalanobis distance to one Ledoit-Wolf Gaussian of all training patch vectors."""
    return PatchwiseHead(MahalanobisHead.fit(patches))


def nearest_distances(bank: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Euclidean distance of each query to its nearest bank row with faiss (exact, ``IndexFlatL2``), float32 (Q,).

    The reference the exported PatchCore head is checked against; faiss-cpu is what PatchCore implementations
    use for this search.
    """
    import faiss

    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(np.ascontiguousarray(bank, dtype=np.float32))
    d2, _ = index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    return np.sqrt(np.maximum(d2[:, 0], 0.0)).astype(np.float32)
