"""torchvision ResNet backbones (``wide_resnet50_2``, ``wide_resnet101_2``, ``resnet18``), optional.

torchvision is not a dependency: it is imported only when one of these backbones is built, and the ImageNet
weights are never downloaded. They come from ``--backbone-weights PATH`` (a ``.pth`` state dict or a
``.safetensors`` file) or from the torch hub cache (``torch.hub.get_dir()/checkpoints/<file>``, where torchvision
itself keeps them). Features are the globally pooled outputs of chosen stages (layer1..layer4 = 1..4; PatchCore
uses 2 and 3), concatenated.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from algan.contract import file_sha256
from algan.features.base import POOLINGS, BackboneError, BackboneSpec, check_pooling, global_pool

#: ImageNet normalisation of the torchvision models, on [0, 1] RGB pixels.
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)

#: file names of the IMAGENET1K_V1 weights as torchvision stores them in the hub cache.
HUB_WEIGHTS_FILES = {
    "wide_resnet50_2": "wide_resnet50_2-95faca4d.pth",
    "wide_resnet101_2": "wide_resnet101_2-32ee1156.pth",
    "resnet18": "resnet18-f37072fd.pth",
}

#: output channels of layer1..layer4 (stage index -> channels).
STAGE_CHANNELS = {
    "wide_resnet50_2": {1: 256, 2: 512, 3: 1024, 4: 2048},
    "wide_resnet101_2": {1: 256, 2: 512, 3: 1024, 4: 2048},
    "resnet18": {1: 64, 2: 128, 3: 256, 4: 512},
}

#: default stages (PatchCore's mid-level layer2 + layer3).
DEFAULT_BLOCKS = (2, 3)

TORCHVISION_PAIR = "torch==2.14.1 torchvision==0.29.1"


class TorchvisionUnavailable(BackboneError, ValueError):
    """torchvision or the ImageNet weights are missing: something the user installs or points to (CLI exit 2)."""


def hub_weights_path(name: str, hub_dir: str | Path | None = None) -> Path:
    """Where torchvision keeps the IMAGENET1K_V1 weights of ``name``: ``<hub_dir>/checkpoints/<file>``.

    ``hub_dir`` defaults to ``torch.hub.get_dir()`` (``$TORCH_HOME/hub``, usually ``~/.cache/torch/hub``).
    """
    if name not in HUB_WEIGHTS_FILES:
        raise BackboneError(f"unknown torchvision backbone {name!r}; available: {', '.join(HUB_WEIGHTS_FILES)}")
    base = Path(hub_dir) if hub_dir is not None else Path(torch.hub.get_dir())
    return base / "checkpoints" / HUB_WEIGHTS_FILES[name]


def missing_weights_message(name: str, hub_dir: str | Path | None = None, tried: str | Path | None = None) -> str:
    """The one sentence naming both ways to provide the weights of ``name``."""
    hub = hub_weights_path(name, hub_dir)
    where = f"{tried} does not exist; " if tried else ""
    return (f"backbone {name} needs its ImageNet weights: {where}put the ImageNet weights file {hub.name} in the "
            f"torch hub cache {hub.parent}/ or pass --backbone-weights PATH (.pth state dict or .safetensors)")


def resolve_weights(spec: BackboneSpec, hub_dir: str | Path | None = None) -> Path:
    """The weights file of ``spec``: ``spec.weights_path`` if it exists, else the hub cache file.

    A ``weights_path`` that does not exist falls back to the hub cache only when the spec records a sha256 (a
    reloaded bundle: the hash then guarantees the same weights); a fresh, explicit path must exist.

    Raises:
        TorchvisionUnavailable: no weights file, with both ways to get one.
    """
    hub = hub_weights_path(spec.name, hub_dir)
    if spec.weights_path:
        given = Path(spec.weights_path).expanduser()
        if given.is_file():
            return given
        if not spec.weights_sha256 or not hub.is_file():
            raise TorchvisionUnavailable(missing_weights_message(spec.name, hub_dir, tried=given))
        return hub
    if hub.is_file():
        return hub
    raise TorchvisionUnavailable(missing_weights_message(spec.name, hub_dir))


def check_weights_sha256(name: str, path: Path, expected: str, actual: str) -> None:
    """Refuse weights that differ from the ones a model was trained with (``expected`` empty = nothing recorded)."""
    if expected and expected != actual:
        msg = (f"{name} weights at {path} (sha256 {actual[:12]}) differ from the ones this model was trained with "
               f"({expected[:12]}); pass the same file with --backbone-weights or re-train")
        raise BackboneError(msg)


def import_torchvision_models(name: str):
    """``torchvision.models``, or a one-sentence error naming the package pair to install."""
    try:
        import torchvision.models as models
    except Exception as exc:  # ImportError, or a torchvision built for another torch (operator errors)
        msg = (f"backbone {name} needs torchvision: pip install {TORCHVISION_PAIR} (or a matching pair; "
               f"torchvision could not be imported: {type(exc).__name__}: {exc})")
        raise TorchvisionUnavailable(msg) from exc
    return models


def preflight(spec: BackboneSpec, hub_dir: str | Path | None = None) -> Path:
    """Check, without building anything, that torchvision imports and the weights file exists; returns its path."""
    if spec.name not in HUB_WEIGHTS_FILES:
        raise BackboneError(f"unknown torchvision backbone {spec.name!r}; available: {', '.join(HUB_WEIGHTS_FILES)}")
    import_torchvision_models(spec.name)
    return resolve_weights(spec, hub_dir)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a ``.pth`` (loaded with ``weights_only=True``)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BackboneError(f"cannot read backbone weights {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"backbone weights {path} are not a state dict (name -> tensor)")
    return {k.removeprefix("module."): v for k, v in state.items()}


class TorchvisionFeatures(nn.Module):
    """Pooled, concatenated stage outputs of a torchvision ResNet.

    Input: float32 (N, 3, H, W), RGB, ImageNet-normalised (``spec.mean``/``spec.std``).
    Output: float32 (N, D), D = sum of the chosen stages' channels (x2 for ``avgmax``); resnet18 with stages 2, 3
    gives 128 + 256 = 384, the wide ResNets 512 + 1024 = 1536.
    """

    def __init__(self, spec: BackboneSpec, hub_dir: str | Path | None = None) -> None:
        super().__init__()
        if spec.name not in STAGE_CHANNELS:
            raise BackboneError(f"unknown torchvision backbone {spec.name!r}; available: {', '.join(STAGE_CHANNELS)}")
        channels = STAGE_CHANNELS[spec.name]
        if not spec.blocks or not set(spec.blocks) <= set(channels):
            raise BackboneError(f"backbone blocks {spec.blocks} out of range: {spec.name} has stages 1-4 "
                                "(layer1..layer4)")
        check_pooling(spec.pooling)
        models = import_torchvision_models(spec.name)
        weights = resolve_weights(spec, hub_dir)
        sha = file_sha256(weights)
        check_weights_sha256(spec.name, weights, spec.weights_sha256, sha)
        net = getattr(models, spec.name)(weights=None)
        state = load_state_dict_file(weights)
        try:
            missing, _unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape mismatches: weights of another architecture
            first = str(exc).strip().splitlines()
            detail = first[1].strip() if len(first) > 1 else first[0] if first else ""
            raise BackboneError(f"weights {weights} do not fit {spec.name}: {detail}") from exc
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing:
            raise BackboneError(f"weights {weights} do not fit {spec.name}: missing {len(missing)} tensors, "
                                f"e.g. {missing[:3]}")
        spec.weights_sha256 = sha
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.take = sorted(set(spec.blocks))
        self.stages = nn.ModuleList(getattr(net, f"layer{i}") for i in range(1, max(self.take) + 1))
        self.pooling = spec.pooling
        self.out_dim = sum(channels[i] for i in self.take) * POOLINGS[spec.pooling]
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(x, self.pooling)

    def block_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The chosen stages' feature maps, unpooled: float32 (N, C_s, H / s, W / s) with s = 2 ** (stage + 1)."""
        x = self.stem(x)
        maps = []
        for idx, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if idx in self.take:
                maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._pool(m) for m in self.block_maps(x)], dim=1)
