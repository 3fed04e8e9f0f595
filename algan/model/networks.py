"""ALGAN networks for the feature variant: fully connected generator and discriminator (no optimiser here).

Murase & Fukumizu, "ALGAN: Anomaly Detection by Generating Pseudo Anomalous Data via Latent Variables",
IEEE Access 2022 (arXiv:2202.10281): the feature variant uses fully connected G and D on ImageNet features.
"""

from __future__ import annotations

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
