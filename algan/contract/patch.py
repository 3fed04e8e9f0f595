"""The patch variant's settings (:class:`PatchSpec`): how patch vectors and anomaly maps are made. Defined here,
in the contract, because the manifest's ``patch`` section is derived from it
(:class:`algan.contract.manifest.PatchSection`); :mod:`algan.features.patch` builds the torch modules from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: projections of patch vectors: none, a fixed random Gaussian projection, PCA on training patches
PROJECTIONS = ("none", "random", "pca")
#: reductions of an anomaly map to an image score
REDUCTIONS = ("max", "topk_mean")
#: per-location normalisation of the anomaly map (``algan.features.patch.MapNormalization``)
MAP_NORMS = ("none", "mean", "standardize")
#: image context appended to every patch vector (``algan.features.patch.PatchFeatureMaps``)
CONTEXTS = ("none", "mean")


@dataclass
class PatchSpec:
    """How patch vectors and anomaly maps are made (stored in the manifest's ``patch`` section).

    Attributes:
        stride: input pixels per grid cell; the grid is ``(H // stride, W // stride)`` (default 8: 28 x 28 at 224).
        aggregate: neighbourhood size of the local averaging (odd; 1 = none; PatchCore: 3).
        projection: ``none``, ``random`` (fixed Gaussian projection) or ``pca`` (fitted on training patches).
        dim: output dimension of the projection (``projection != "none"``).
        map_stride: input pixels per anomaly-map cell of the exported map (default 4: 56 x 56 at 224).
        smooth_sigma: standard deviation of the Gaussian smoothing of the map, in input pixels (PatchCore: 4).
        reduction: image score = ``topk_mean`` (default: mean of the ``topk`` largest cells, a fraction of the
            map) or ``max`` of the smoothed map. The top-1 % mean scored higher than the max for every patch head
            on four data sets (MTD, synthetic metal and weave, bottle-video frames; benchmarks/RESULTS.md).
        topk: fraction of map cells averaged by ``topk_mean`` (default 0.01: 31 of the 56 x 56 cells at 224 px).
        patches_per_image: training patches sampled per image for the heads (memory bound: all cells are never
            materialised for training; 0 = all cells).
        map_norm: per-location normalisation of the smoothed map by its statistics on training normals
            (``algan.features.patch.MapNormalization``): ``standardize`` (default: the map a normal image gets at
            each location is subtracted and the result divided by the location's standard deviation; removes the
            border bias of the backbone's zero-padded feature maps, whose border cells are both higher and noisier
            on normals), ``mean`` (subtracted only) or ``none``. Measured on six data sets in benchmarks/RESULTS.md
            (Session 11, border bias of the maps): the mean alone leaves the noisier border on top.
        context: ``none`` (default) or ``mean``: every patch vector also carries its image's mean patch vector (the
            map averaged over all cells), so a head scores a cell in the context of the whole image and a change of
            the whole image (uneven brightness, a wrong part) raises every cell (C -> 2C channels).
    """

    stride: int = 8
    aggregate: int = 3
    projection: str = "none"
    dim: int | None = None
    map_stride: int = 4
    smooth_sigma: float = 4.0
    reduction: str = "topk_mean"
    topk: float = 0.01
    patches_per_image: int = 128
    map_norm: str = "standardize"
    context: str = "none"

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ValueError(f"unknown patch context {self.context!r}; use one of {', '.join(CONTEXTS)}")
        if self.map_norm not in MAP_NORMS:
            raise ValueError(f"unknown map normalisation {self.map_norm!r}; use one of {', '.join(MAP_NORMS)}")
        if self.projection not in PROJECTIONS:
            raise ValueError(f"unknown patch projection {self.projection!r}; use one of {', '.join(PROJECTIONS)}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"unknown map reduction {self.reduction!r}; use one of {', '.join(REDUCTIONS)}")
        if self.aggregate < 1 or self.aggregate % 2 == 0:
            raise ValueError(f"patch aggregate must be an odd size >= 1, got {self.aggregate}")
        if self.stride < 1 or self.map_stride < 1:
            raise ValueError(f"patch stride and map stride must be >= 1, got {self.stride}, {self.map_stride}")
        if self.projection != "none" and (self.dim is None or self.dim < 1):
            raise ValueError(f"patch projection {self.projection} needs a dimension >= 1 (--patch-dim)")
        if not 0.0 < self.topk <= 1.0:
            raise ValueError(f"topk must lie in (0, 1], got {self.topk}")
        if self.smooth_sigma < 0:
            raise ValueError(f"smooth_sigma must be >= 0, got {self.smooth_sigma}")
        if self.patches_per_image < 0:
            raise ValueError(f"patches_per_image must be >= 0, got {self.patches_per_image}")

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """Patch grid ``(gh, gw)`` for an input ``(H, W)``."""
        h, w = input_size
        if h % self.stride or w % self.stride:
            raise ValueError(f"input size {h}x{w} is not a multiple of the patch stride {self.stride}")
        return h // self.stride, w // self.stride

    def map_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """Exported anomaly-map size ``(h, w)`` for an input ``(H, W)``."""
        h, w = input_size
        if h % self.map_stride or w % self.map_stride:
            raise ValueError(f"input size {h}x{w} is not a multiple of the map stride {self.map_stride}")
        return h // self.map_stride, w // self.map_stride

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> PatchSpec:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})
