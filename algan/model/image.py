"""ALGAN-image: the pixel variant of ALGAN with DCGAN-like convolutional G and D (Murase & Fukumizu 2022, Sec. IV;
architecture after Radford et al. 2016, "Unsupervised representation learning with deep convolutional GANs").

The same objective as the feature variant (:mod:`algan.model.losses`): D separates real normal images from fresh
fake-normal G(z_n), fresh pseudo-anomalous G(z_a) (z_a ~ N(0, sigma^2 I)) and buffered early-training samples of
both kinds. At inference only D runs: score = -logit D(x).

In the detector pipeline the "backbone" of this variant is :class:`PixelBackbone` (RGB -> gray for 1-channel
models), the feature transform is the identity and the head is :class:`ImageHead`; so it exports through the same
ONNX path as the feature variant (uint8 BGR frames in, calibrated scores out).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from algan.model.losses import discriminator_loss, generator_loss, r1_penalty
from algan.model.networks import bake_spectral_norm as _bake
from algan.model.presets import PresetConfig
from algan.model.train import Reservoir

#: pixels are scaled to [-1, 1] (G ends in tanh): mean 0.5, std 0.5 on [0, 1] values
PIXEL_MEAN = (0.5, 0.5, 0.5)
PIXEL_STD = (0.5, 0.5, 0.5)
MAX_CHANNELS = 512


def check_size(size: int) -> None:
    """Raise ValueError unless ``size`` is a power of two >= 64."""
    if size < 64 or size & (size - 1):
        raise ValueError(f"ALGAN-image input size must be a power of two >= 64 (64, 128, 256, ...), got {size}")


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
    "seed": 0,
}
#: the product default; every entry differing from PAPER is a measured change (benchmarks/ALGAN_EXPERIMENTS.md)
DEFAULT = {**PAPER, "d_norm": "spectral", "d_mixed": True, "g_anomaly_eval": True}
PRESETS = {"paper": PAPER, "default": DEFAULT}
D_NORMS = ("batch", "spectral", "instance", "none")


def _field(name: str):
    return field(default=DEFAULT[name])


@dataclass
class ImageConfig(PresetConfig):
    """ALGAN-image hyper-parameters. ``ImageConfig()`` is the ``default`` preset; ``preset("paper")`` the paper's.

    Attributes:
        size: square input size in pixels, a power of two >= 64 (paper: 256).
        channels: 1 (gray; MTD) or 3 (colour).
        z_dim, sigma, alpha, beta: latent dimension, anomalous-latent std, fake-normal vs pseudo-anomalous share,
            fresh vs buffered share (paper: 100, 4, 0.5, 0.5).
        epochs, batch_size, lr_g, lr_d, adam_betas: optimisation (paper: 512, 16, 2e-4, 1e-4, (0, 0.9)).
        buffer_epochs, buffer_size: the generated samples of epochs ``[0, buffer_epochs)`` fill a reservoir of
            ``buffer_size`` images per latent kind.
        ngf, ndf: base widths of G and D (doubled per resolution halving, capped at 512).
        d_norm: normalisation in D: ``batch`` (DCGAN), ``spectral`` (spectral norm, Miyato et al. 2018),
            ``instance`` (per-image, affine) or ``none``.
        d_mixed: one D forward pass over real, fresh and buffered samples together (with ``d_norm="batch"`` the
            batch statistics are then shared by real and generated images); False = one pass per kind (paper).
        g_anomaly_eval: generate the pseudo-anomalies G(z_a) with G's batch norm in eval mode (running statistics
            of z_n batches), so the sigma scaling of z_a is not normalised away; False = train mode (paper).
        r1_gamma: R1 gradient penalty on real images (Mescheder et al. 2018), 0 = off.
        d_dropout: dropout probability after each hidden activation of D (0 = off).
        instance_noise: std (in [-1, 1] pixel units) of Gaussian noise added to every D input during training,
            decaying linearly to 0 at the last epoch (Sonderby et al. 2017); 0 = off.
        flip: random horizontal and vertical flips of real images (data augmentation).
        translate: random translations of real images by up to this many pixels (reflect padding), 0 = off.
        d_ema: decay of an exponential moving average of D's weights used at inference (0 = the last D).
        seed: seed of everything random; training is deterministic for a seed on one machine.
    """

    PRESETS = PRESETS
    KIND = "ALGAN-image"

    size: int = _field("size")
    channels: int = _field("channels")
    z_dim: int = _field("z_dim")
    sigma: float = _field("sigma")
    alpha: float = _field("alpha")
    beta: float = _field("beta")
    epochs: int = _field("epochs")
    batch_size: int = _field("batch_size")
    lr_g: float = _field("lr_g")
    lr_d: float = _field("lr_d")
    adam_betas: tuple[float, float] = _field("adam_betas")
    buffer_epochs: int = _field("buffer_epochs")
    buffer_size: int = _field("buffer_size")
    ngf: int = _field("ngf")
    ndf: int = _field("ndf")
    d_norm: str = _field("d_norm")
    d_mixed: bool = _field("d_mixed")
    g_anomaly_eval: bool = _field("g_anomaly_eval")
    r1_gamma: float = _field("r1_gamma")
    d_dropout: float = _field("d_dropout")
    instance_noise: float = _field("instance_noise")
    flip: bool = _field("flip")
    translate: int = _field("translate")
    d_ema: float = _field("d_ema")
    seed: int = _field("seed")

    def __post_init__(self) -> None:
        check_size(self.size)
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.d_norm not in D_NORMS:
            raise ValueError(f"d_norm must be one of {', '.join(D_NORMS)}, got {self.d_norm!r}")
        if not 0.0 <= self.d_dropout < 1.0:
            raise ValueError(f"d_dropout must lie in [0, 1), got {self.d_dropout}")
        if not 0.0 <= self.d_ema < 1.0:
            raise ValueError(f"d_ema must lie in [0, 1), got {self.d_ema}")
        if self.instance_noise < 0 or self.translate < 0 or self.r1_gamma < 0:
            raise ValueError("instance_noise, translate and r1_gamma must be >= 0")
        self.adam_betas = tuple(self.adam_betas)

    def build_head(self, in_dim: int = 0) -> ImageHead:
        """Untrained head of this shape (bundle loading); ``in_dim`` is unused (pixels, not vectors)."""
        # a trained spectral-norm D is stored with its normalised weights baked in (see bake_spectral_norm)
        norm = "none" if self.d_norm == "spectral" else self.d_norm
        return ImageHead(DCGANDiscriminator(self.size, self.channels, self.ndf, norm, self.d_dropout))


def _widths(base: int, n: int) -> list[int]:
    return [min(base * 2**i, MAX_CHANNELS) for i in range(n)]


class DCGANGenerator(nn.Module):
    """G: z (N, z_dim) -> images (N, C, S, S) in [-1, 1] (tanh). 4x4 seed, then stride-2 transposed convs."""

    def __init__(self, z_dim: int, size: int, channels: int, ngf: int = 32) -> None:
        super().__init__()
        check_size(size)
        n_up = int(math.log2(size)) - 2  # 4 -> size
        widths = list(reversed(_widths(ngf, n_up)))  # widest first
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, widths[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.z_dim = z_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


class DCGANDiscriminator(nn.Module):
    """D: images (N, C, S, S) in [-1, 1] -> logits (N,). Stride-2 convs down to 4x4, then a 4x4 conv to 1.

    ``norm``: ``batch``, ``spectral``, ``instance`` or ``none`` (see :class:`ImageConfig`); ``dropout``: dropout
    probability after each hidden activation.
    """

    def __init__(self, size: int, channels: int, ndf: int = 32, norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        check_size(size)
        if norm not in D_NORMS:
            raise ValueError(f"norm must be one of {', '.join(D_NORMS)}, got {norm!r}")
        n_down = int(math.log2(size)) - 2
        widths = _widths(ndf, n_down)
        sn = spectral_norm if norm == "spectral" else (lambda m: m)
        drop = [nn.Dropout(dropout)] if dropout > 0 else []
        layers: list[nn.Module] = [sn(nn.Conv2d(channels, widths[0], 4, 2, 1)), nn.LeakyReLU(0.2, True), *drop]
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers.append(sn(nn.Conv2d(a, b, 4, 2, 1, bias=norm not in ("batch", "instance"))))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(b))
            elif norm == "instance":
                layers.append(nn.InstanceNorm2d(b, affine=True))
            layers += [nn.LeakyReLU(0.2, True), *drop]
        layers.append(sn(nn.Conv2d(widths[-1], 1, 4, 1, 0)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1).squeeze(1)


def bake_spectral_norm(d: DCGANDiscriminator) -> DCGANDiscriminator:
    """Bake D's spectral norm into plain weights (in place): see :func:`algan.model.networks.bake_spectral_norm`;
    the result has the layers of ``norm="none"`` and loads through :meth:`ImageConfig.build_head`."""
    return _bake(d)


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


def _augment(x: torch.Tensor, gen: torch.Generator, flip: bool, translate: int) -> torch.Tensor:
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


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for pe, pm in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
            if pe.dtype.is_floating_point:
                pe.mul_(decay).add_(pm.detach(), alpha=1.0 - decay)
            else:
                pe.copy_(pm)


def train_algan_image(
    x: torch.Tensor,
    cfg: ImageConfig | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, ImageHead], None] | None = None,
    device: str | torch.device | None = None,
) -> ImageTrainResult:
    """Train ALGAN-image on normal images.

    Args:
        x: float32 (N, C, S, S) in [-1, 1] (what :class:`PixelBackbone` outputs), N >= 2.
        cfg: hyper-parameters (``cfg.size == S``, ``cfg.channels == C``; ``None`` = ``ImageConfig()``).
        progress: tqdm bar with losses.
        on_epoch: optional ``f(epoch, head)`` called after every epoch with the current inference head (eval
            mode; do not keep it, training continues to change it).
        device: where G and D train; ``None`` = ``cuda`` when available, else ``cpu``. Random numbers are drawn
            on the CPU either way; the returned networks are on the CPU.

    Returns:
        trained G and D (eval mode; D is the EMA copy when ``cfg.d_ema > 0``), per-epoch mean losses, wall time.
    """
    cfg = cfg or ImageConfig()
    if x.ndim != 4 or x.shape[1] != cfg.channels or x.shape[2] != cfg.size or x.shape[3] != cfg.size:
        raise ValueError(f"expected images (N, {cfg.channels}, {cfg.size}, {cfg.size}), got {tuple(x.shape)}")
    if len(x) < 2:
        raise ValueError(f"ALGAN-image needs at least 2 training images, got {len(x)}")
    dev = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    G = DCGANGenerator(cfg.z_dim, cfg.size, cfg.channels, cfg.ngf).to(dev)
    D = DCGANDiscriminator(cfg.size, cfg.channels, cfg.ndf, cfg.d_norm, cfg.d_dropout).to(dev)
    x = x.to(dev)
    D_ema = copy.deepcopy(D).eval() if cfg.d_ema > 0 else None
    for p in D_ema.parameters() if D_ema is not None else ():
        p.requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=cfg.adam_betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.adam_betas)
    flat = cfg.channels * cfg.size * cfg.size
    buf_n = Reservoir(cfg.buffer_size, flat, gen)
    buf_a = Reservoir(cfg.buffer_size, flat, gen)
    shape = (cfg.channels, cfg.size, cfg.size)
    n = len(x)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = max(n // bs, 1)
    total_steps = cfg.epochs * steps_per_epoch
    history: list[dict] = []
    t0 = time.perf_counter()
    epochs = range(cfg.epochs)
    if progress:
        from tqdm import tqdm

        epochs = tqdm(epochs, desc="ALGAN-image", unit="epoch", dynamic_ncols=True)
    step = 0
    for epoch in epochs:
        G.train()
        D.train()
        perm = torch.randperm(n, generator=gen)
        sums = {"loss_d": 0.0, "loss_g": 0.0, "real_logit": 0.0}
        steps = 0
        for i in range(0, n - bs + 1, bs):
            real = _augment(x[perm[i : i + bs].to(dev)], gen, cfg.flip, cfg.translate)
            with torch.no_grad():
                fake_n = G(torch.randn(bs, cfg.z_dim, generator=gen).to(dev))
                if cfg.g_anomaly_eval:
                    G.eval()
                fake_a = G((torch.randn(bs, cfg.z_dim, generator=gen) * cfg.sigma).to(dev))
                G.train()
            if epoch < cfg.buffer_epochs and cfg.buffer_size > 0:
                buf_n.offer(fake_n.flatten(1).cpu())
                buf_a.offer(fake_a.flatten(1).cpu())
            use_buf = buf_n.size >= bs and cfg.beta < 1.0
            parts = [real, fake_n, fake_a]
            if use_buf:
                parts += [b.sample(bs).view(bs, *shape).to(dev) for b in (buf_n, buf_a)]
            noise_std = cfg.instance_noise * max(0.0, 1.0 - step / max(total_steps, 1))
            if noise_std > 0:
                parts = [p + noise_std * torch.randn(p.shape, generator=gen).to(dev) for p in parts]
            if cfg.r1_gamma > 0:
                parts[0] = parts[0].detach().requires_grad_(True)
            logits = list(D(torch.cat(parts)).split(bs)) if cfg.d_mixed else [D(p) for p in parts]
            loss_d = discriminator_loss(*logits[:3], *(logits[3:] if use_buf else (None, None)),
                                        alpha=cfg.alpha, beta=cfg.beta)
            if cfg.r1_gamma > 0:
                loss_d = loss_d + r1_penalty(logits[0], parts[0], cfg.r1_gamma)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            if D_ema is not None:
                _ema_update(D_ema, D, cfg.d_ema)
            fake_g = G(torch.randn(bs, cfg.z_dim, generator=gen).to(dev))
            if noise_std > 0:
                fake_g = fake_g + noise_std * torch.randn(fake_g.shape, generator=gen).to(dev)
            loss_g = generator_loss(D(fake_g))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            sums["loss_d"] += float(loss_d.detach())
            sums["loss_g"] += float(loss_g.detach())
            sums["real_logit"] += float(logits[0].detach().mean())
            steps += 1
            step += 1
        rec = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()}}
        history.append(rec)
        if progress:
            epochs.set_postfix(loss_d=f"{rec['loss_d']:.3f}", loss_g=f"{rec['loss_g']:.3f}")
        if on_epoch is not None:
            D.eval()
            on_epoch(epoch + 1, ImageHead(D_ema if D_ema is not None else D).eval())
    G.eval()
    D.eval()
    final = D_ema if D_ema is not None else D
    return ImageTrainResult(G.cpu(), bake_spectral_norm(copy.deepcopy(final).cpu().eval()), history,
                            time.perf_counter() - t0)


@torch.no_grad()
def pixels(preprocess: nn.Module, backbone: PixelBackbone, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """uint8 BGR (N, S, S, 3) -> float32 (N, C, S, S) in [-1, 1], exactly as the exported graph computes it."""
    out = [backbone(preprocess(torch.from_numpy(images[i : i + batch_size]))) for i in range(0, len(images),
                                                                                           batch_size)]
    return torch.cat(out)
