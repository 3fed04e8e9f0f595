"""What every backbone module shares: the spec a bundle stores, the error type and the spatial poolings.

The registry (:func:`algan.features.backbone.build_backbone`) imports the backbone modules; they import this module,
never the registry, so that the imports point one way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

#: Lite models were trained on inputs scaled as (x - 127) / 128 per channel (TF EfficientNet-Lite preprocessing).
LITE_MEAN_RGB = (127.0 / 255.0,) * 3
LITE_STD_RGB = (128.0 / 255.0,) * 3

class BackboneError(RuntimeError):
    """A backbone that cannot be built (missing package or weights, bad block choice): the user's to fix, so the
    command-line tools exit with status 2 (:func:`algan.cli._common.run_cli` reads ``exit_code``)."""

    exit_code = 2


@dataclass
class BackboneSpec:
    """What a bundle needs to rebuild its backbone exactly.

    Attributes:
        name: backbone name, e.g. ``efficientnet-lite0``.
        blocks: indices of the blocks whose outputs are pooled and concatenated (Lite0 default 8-14).
        pooling: ``avg`` (global average), ``max``, ``avgmax`` or ``avgstd`` (mean and spatial standard deviation,
            concatenated; the Lite0 default), see :func:`global_pool`.
        input_size: (height, width) in pixels the backbone is built for.
        mean, std: per-channel RGB normalisation applied to [0, 1] pixels.
        weights_sha256: hash of the weights file the bundle was trained with.
        weights_path: weights file given with ``--backbone-weights`` (torchvision backbones); ``None`` = the
            package's (Lite0) or the torch hub cache's file.
    """

    name: str = "efficientnet-lite0"
    blocks: list[int] = field(default_factory=lambda: list(range(8, 15)))
    pooling: str = "avgstd"
    input_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = LITE_MEAN_RGB
    std: tuple[float, float, float] = LITE_STD_RGB
    weights_sha256: str = ""
    weights_path: str | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        return d

    @classmethod
    def from_json(cls, d: dict) -> BackboneSpec:
        d = dict(d)
        d["input_size"] = tuple(d["input_size"])
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        d.setdefault("weights_path", None)  # manifests written before torchvision backbones
        return cls(**d)


#: spatial poolings -> feature channels per block channel
POOLINGS = {"avg": 1, "max": 1, "avgmax": 2, "avgstd": 2}


def check_pooling(pooling: str) -> None:
    """Raise :class:`BackboneError` for an unknown pooling name."""
    if pooling not in POOLINGS:
        raise BackboneError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")


def global_pool(x: torch.Tensor, pooling: str) -> torch.Tensor:
    """Spatial pooling of a feature map float32 (N, C, H, W) -> (N, C) for ``avg``/``max``, (N, 2C) for
    ``avgmax`` (mean, max) and ``avgstd`` (mean, population standard deviation over the H x W positions).

    ``avgstd`` keeps first- and second-order statistics of each channel (cf. the Gram/style statistics of Gatys et
    al. 2016): a small defect barely moves a channel's spatial mean but raises its spatial spread. The variance is
    computed around the mean (not as E[x^2] - E[x]^2), which stays accurate in FP16.
    """
    if pooling == "max":
        return x.amax(dim=(2, 3))
    mean = x.mean(dim=(2, 3))
    if pooling == "avg":
        return mean
    if pooling == "avgstd":
        var = (x - mean[:, :, None, None]).square().mean(dim=(2, 3))
        return torch.cat([mean, torch.sqrt(var)], dim=1)
    return torch.cat([mean, x.amax(dim=(2, 3))], dim=1)
