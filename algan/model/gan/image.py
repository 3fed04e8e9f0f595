"""ALGAN-image: the pixel variant of ALGAN with DCGAN-like convolutional G and D (Murase & Fukumizu 2022, Sec. IV;
architecture after Radford et al. 2016, "Unsupervised representation learning with deep convolutional GANs").

The same objective as the feature variant (:mod:`algan.model.nets.losses`): D separates real normal images from fresh
fake-normal G(z_n), fresh pseudo-anomalous G(z_a) (z_a ~ N(0, sigma^2 I)) and buffered early-training samples of
both kinds. At inference only D runs: score = -logit D(x).

In the detector pipeline the "backbone" of this variant is :class:`PixelBackbone` (RGB -> gray for 1-channel
models), the feature transform is the identity and the head is :class:`ImageHead`; so it exports through the same
ONNX path as the feature variant (uint8 BGR frames in, calibrated scores out).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from algan.model.gan.loop import GanConfig, Strategy, resolve_device, train_gan
from algan.model.nets.networks import D_NORMS, DCGANDiscriminator, DCGANGenerator, check_size

#: pixels are scaled to [-1, 1] (G ends in tanh): mean 0.5, std 0.5 on [0, 1] values
PIXEL_MEAN = (0.5, 0.5, 0.5)
PIXEL_STD = (0.5, 0.5, 0.5)


#: the paper's settings (Murase & Fukumizu 2022): DCGAN G and D with batch norm, 256 px, 512 epochs
PAPER = {
    "size": 256,
    "channels": 3,
    "z_dim": 100,
    "sigma": 4.0,
    "alpha": 0.5,
    "beta": 0.5,
    "epochs": 512,
    "batch_size": 16,
    "lr_g": 2e-4,
    "lr_d": 1e-4,
    "adam_betas": (0.0, 0.9),
    "buffer_epochs": 10,
    "buffer_size": 512,
    "ngf": 32,
    "ndf": 32,
    "d_norm": "batch",
    "d_mixed": False,
    "g_anomaly_eval": False,
    "r1_gamma": 0.0,
    "d_dropout": 0.0,
    "instance_noise": 0.0,
    "flip": True,
    "translate": 0,
    "d_ema": 0.0,
    "d_weight_decay": 0.0,
    "min_steps": 0,
    "seed": 0,
}
#: the product default; every entry differing from PAPER is a measured change (benchmarks/ALGAN_EXPERIMENTS.md)
DEFAULT = {**PAPER, "d_norm": "spectral", "d_mixed": True, "g_anomaly_eval": True}
PRESETS = {"paper": PAPER, "default": DEFAULT}


def _field(name: str):
    return field(default=DEFAULT[name])


@dataclass
class ImageConfig(GanConfig):
    """ALGAN-image hyper-parameters. ``ImageConfig()`` is the ``default`` preset; ``preset("paper")`` the paper's.

    Attributes:
        size: square input size in pixels, a power of two >= 64 (paper: 256).
        channels: 1 (gray; MTD) or 3 (colour).
        z_dim: latent dimension of G (paper: 100).
        sigma, alpha, beta, epochs, batch_size, lr_g, lr_d, adam_betas, buffer_epochs, buffer_size, d_dropout,
            d_weight_decay, r1_gamma, d_ema, min_steps, seed: shared by every variant, see
            :class:`algan.model.gan.loop.GanConfig` (paper: 4, 0.5, 0.5, 512 epochs, 16, 2e-4, 1e-4, (0, 0.9),
            a buffer of 512 images per latent kind filled in epochs ``[0, 10)``).
        ngf, ndf: base widths of G and D (doubled per resolution halving, capped at 512).
        d_norm: normalisation in D: ``batch`` (DCGAN), ``spectral`` (spectral norm, Miyato et al. 2018),
            ``instance`` (per-image, affine) or ``none``.
        d_mixed: one D forward pass over real, fresh and buffered samples together (with ``d_norm="batch"`` the
            batch statistics are then shared by real and generated images); False = one pass per kind (paper).
        g_anomaly_eval: generate the pseudo-anomalies G(z_a) with G's batch norm in eval mode (running statistics
            of z_n batches), so the sigma scaling of z_a is not normalised away; False = train mode (paper).
        instance_noise: std (in [-1, 1] pixel units) of Gaussian noise added to every D input during training,
            decaying linearly to 0 at the last epoch (Sonderby et al. 2017); 0 = off.
        flip: random horizontal and vertical flips of real images (data augmentation).
        translate: random translations of real images by up to this many pixels (reflect padding), 0 = off.
    """

    PRESETS = PRESETS
    KIND = "ALGAN-image"

    # shared fields whose default differs from GanConfig's; the others are declared there
    epochs: int = _field("epochs")
    buffer_size: int = _field("buffer_size")
    # image-variant fields
    size: int = _field("size")
    channels: int = _field("channels")
    z_dim: int = _field("z_dim")
    ngf: int = _field("ngf")
    ndf: int = _field("ndf")
    d_norm: str = _field("d_norm")
    d_mixed: bool = _field("d_mixed")
    g_anomaly_eval: bool = _field("g_anomaly_eval")
    instance_noise: float = _field("instance_noise")
    flip: bool = _field("flip")
    translate: int = _field("translate")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_size(self.size)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.d_norm not in D_NORMS:
            raise ValueError(f"d_norm must be one of {', '.join(D_NORMS)}, got {self.d_norm!r}")
        if self.instance_noise < 0 or self.translate < 0:
            raise ValueError("instance_noise and translate must be >= 0")

    def build_generator(self) -> DCGANGenerator:
        """A fresh G (not part of the inference head)."""
        return DCGANGenerator(self.z_dim, self.size, self.channels, self.ngf)

    def build_discriminator(self) -> DCGANDiscriminator:
        """A fresh D with the configured normalisation (spectral norm as a parametrisation)."""
        return DCGANDiscriminator(self.size, self.channels, self.ndf, self.d_norm, self.d_dropout)

    def build_head(self, in_dim: int = 0) -> ImageHead:
        """Untrained head of this shape (bundle loading); ``in_dim`` is unused (pixels, not vectors)."""
        # a trained spectral-norm D is stored with its normalised weights baked in (see bake_spectral_norm)
        norm = "none" if self.d_norm == "spectral" else self.d_norm
        return ImageHead(DCGANDiscriminator(self.size, self.channels, self.ndf, norm, self.d_dropout))


class ImageHead(nn.Module):
    """Raw score = -logit D(x). Input float32 (N, C, S, S) in [-1, 1]; output (N,)."""

    def __init__(self, discriminator: DCGANDiscriminator) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.discriminator(x)


class PixelBackbone(nn.Module):
    """The "backbone" of ALGAN-image: normalised RGB (N, 3, S, S) -> (N, channels, S, S); gray = channel mean."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1, keepdim=True) if self.channels == 1 else x


@dataclass
class ImageTrainResult:
    generator: DCGANGenerator
    discriminator: DCGANDiscriminator
    history: list[dict]
    train_s: float

    @property
    def head(self) -> ImageHead:
        return ImageHead(self.discriminator)


class ImageStrategy(Strategy):
    """The image variant in the loop: samples are images (C, S, S) in [-1, 1]; real batches are flipped and
    translated, the pseudo-anomalies are generated with G's batch norm in eval mode (``g_anomaly_eval``), D runs
    once over all parts (``d_mixed``) and every D input gets decaying instance noise (``instance_noise``)."""

    name = "ALGAN-image"
    cfg: ImageConfig

    def latent_dim(self, sample_shape: tuple[int, ...]) -> int:
        return self.cfg.z_dim

    def build_generator(self, sample_shape: tuple[int, ...]) -> nn.Module:
        return self.cfg.build_generator()

    def build_discriminator(self, sample_shape: tuple[int, ...]) -> nn.Module:
        return self.cfg.build_discriminator()

    def real_batch(self, batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return augment(batch, gen, self.cfg.flip, self.cfg.translate)

    def generate(self, G: nn.Module, z_n: torch.Tensor, z_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            fake_n = G(z_n)
            if self.cfg.g_anomaly_eval:
                G.eval()
            fake_a = G(z_a)
            G.train()
        return fake_n, fake_a

    def discriminate(self, D: nn.Module, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        if not self.cfg.d_mixed:
            return [D(p) for p in parts]
        return list(D(torch.cat(parts)).split([len(p) for p in parts]))

    def perturb(self, parts: list[torch.Tensor], step: int, total_steps: int,
                gen: torch.Generator) -> list[torch.Tensor]:
        std = self.cfg.instance_noise * max(0.0, 1.0 - step / max(total_steps, 1))
        if std <= 0:
            return parts
        return [p + std * torch.randn(p.shape, generator=gen).to(p.device) for p in parts]


def augment(x: torch.Tensor, gen: torch.Generator, flip: bool, translate: int) -> torch.Tensor:
    """Random horizontal and vertical flips (each with probability 1/2) and translations by up to ``translate``
    pixels (reflect padding) of images (N, C, S, S); random numbers from ``gen``."""
    n = x.shape[0]
    if flip:
        hflip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        vflip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        x = torch.where(hflip[:, None, None, None], x.flip(3), x)
        x = torch.where(vflip[:, None, None, None], x.flip(2), x)
    if translate > 0:
        t, s = translate, x.shape[-1]
        padded = nn.functional.pad(x, (t, t, t, t), mode="reflect")
        off = torch.randint(0, 2 * t + 1, (n, 2), generator=gen).tolist()
        x = torch.stack([padded[i, :, dy : dy + s, dx : dx + s] for i, (dy, dx) in enumerate(off)])
    return x


def train_algan_image(
    x: torch.Tensor,
    cfg: ImageConfig | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, ImageHead], None] | None = None,
    device: str | torch.device | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
) -> ImageTrainResult:
    """Train ALGAN-image on normal images (the loop of :func:`algan.model.gan.loop.train_gan`).

    Args:
        x: float32 (N, C, S, S) in [-1, 1] (what :class:`PixelBackbone` outputs), N >= 2.
        cfg: hyper-parameters (``cfg.size == S``, ``cfg.channels == C``; ``None`` = ``ImageConfig()``).
        progress: tqdm bar with losses (on a terminal).
        on_epoch: optional ``f(epoch, head)`` called after every epoch with the current inference head (eval
            mode; do not keep it, training continues to change it).
        device: where G and D train; ``None`` = ``cuda`` when available, else ``cpu``. Random numbers are drawn
            on the CPU either way; the returned networks are on the CPU.
        checkpoint, checkpoint_every: resumable training, as in :func:`algan.model.gan.loop.train_gan`.

    Returns:
        trained G and D (eval mode; D is the EMA copy when ``cfg.d_ema > 0``, its spectral norm baked in),
        per-epoch mean losses, wall time.

    Raises:
        ValueError: images of another shape than the config's, fewer than 2 images, or a checkpoint of another
            config or data.
    """
    cfg = cfg or ImageConfig()
    if x.ndim != 4 or x.shape[1] != cfg.channels or x.shape[2] != cfg.size or x.shape[3] != cfg.size:
        raise ValueError(f"expected images (N, {cfg.channels}, {cfg.size}, {cfg.size}), got {tuple(x.shape)}")
    if len(x) < 2:
        raise ValueError(f"ALGAN-image needs at least 2 training images, got {len(x)}")
    cb = None if on_epoch is None else (lambda e, d: on_epoch(e, ImageHead(d).eval()))
    run = train_gan(x, cfg, ImageStrategy(cfg), progress=progress, on_epoch=cb, checkpoint=checkpoint,
                    checkpoint_every=checkpoint_every, device=resolve_device(device))
    return ImageTrainResult(run.generators[0], run.discriminators[0], run.history, run.train_s)


@torch.no_grad()
def pixels(preprocess: nn.Module, backbone: PixelBackbone, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """uint8 BGR (N, S, S, 3) -> float32 (N, C, S, S) in [-1, 1], exactly as the exported graph computes it."""
    out = [backbone(preprocess(torch.from_numpy(images[i : i + batch_size]))) for i in range(0, len(images),
                                                                                           batch_size)]
    return torch.cat(out)
