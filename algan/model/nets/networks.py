"""ALGAN networks (no optimiser here; training is :mod:`algan.model.gan.loop`).

Murase & Fukumizu, "ALGAN: Anomaly Detection by Generating Pseudo Anomalous Data via Latent Variables",
IEEE Access 2022 (arXiv:2202.10281): the feature variant uses fully connected G and D on ImageNet features
(:class:`MLPGenerator`, :class:`MLPDiscriminator`), the image variant DCGAN-like convolutional G and D on pixels
(:class:`DCGANGenerator`, :class:`DCGANDiscriminator`; Radford et al. 2016, "Unsupervised representation learning
with deep convolutional GANs").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm


class MLPGenerator(nn.Module):
    """G: latent z -> feature vector.

    Input: float32 (N, z_dim), z ~ N(0, I) for fake-normal samples, N(0, sigma^2 I) for pseudo-anomalies.
    Output: float32 (N, out_dim) in the (standardised) feature space.
    """

    def __init__(self, z_dim: int, out_dim: int, hidden: Sequence[int] = (256, 512), batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = z_dim
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.LeakyReLU(0.2))
            d = h
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)
        self.z_dim = z_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPDiscriminator(nn.Module):
    """D: feature vector -> logit of "real normal data".

    Input: float32 (N, in_dim). Output: float32 (N,) logits; D(x) = sigmoid(logit). The anomaly score used at
    inference is ``-logit`` (higher = more anomalous).

    ``quadratic=True`` adds a learnable radial term ``w * mean_k(x_k^2)`` (w initialised to 0) to the MLP's logit:
    the log density ratio of two centred Gaussians (whitened normal data vs. the sigma-widened pseudo-anomalies
    G(z_a)) is exactly such a quadratic, so the MLP only has to learn the non-Gaussian correction.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int] = (512, 256),
        dropout: float = 0.0,
        spectral: bool = False,
        quadratic: bool = False,
    ) -> None:
        super().__init__()
        self.quad = nn.Parameter(torch.zeros(())) if quadratic else None
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            lin = nn.Linear(d, h)
            layers.append(spectral_norm(lin) if spectral else lin)
            layers.append(nn.LeakyReLU(0.2))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        out = nn.Linear(d, 1)
        layers.append(spectral_norm(out) if spectral else out)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = self.net(x).squeeze(-1)
        if self.quad is not None:
            logit = logit + self.quad * (x * x).mean(dim=-1)
        return logit


def bake_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace spectral-norm parametrisations by their current normalised weights (in place; returns ``module``).

    The result evaluates like ``module`` in eval mode, exports to ONNX (the parametrisation's power iteration does
    not: ``aten::vdot``) and has the plain layers that a config with spectral norm off builds for bundle loading.
    """
    for m in [m for m in module.modules() if parametrize.is_parametrized(m, "weight")]:
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return module


#: widest DCGAN layer
MAX_CHANNELS = 512
#: the normalisations a DCGAN D can use
D_NORMS = ("batch", "spectral", "instance", "none")


def check_size(size: int) -> None:
    """Raise ValueError unless ``size`` is a power of two >= 64."""
    if size < 64 or size & (size - 1):
        raise ValueError(f"ALGAN-image input size must be a power of two >= 64 (64, 128, 256, ...), got {size}")


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

    ``norm``: ``batch``, ``spectral``, ``instance`` or ``none`` (see :class:`algan.model.gan.image.ImageConfig`);
    ``dropout``: dropout probability after each hidden activation.
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
