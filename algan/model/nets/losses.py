"""ALGAN objectives (Murase & Fukumizu 2022, arXiv:2202.10281: the discriminator loss with buffered samples).

All terms are written with logits for numerical stability: ``-log D(x) = softplus(-l)`` and
``-log(1 - D(x)) = softplus(l)`` where ``D = sigmoid(l)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discriminator_loss(
    real: torch.Tensor,
    fake_normal: torch.Tensor,
    fake_anomalous: torch.Tensor,
    buffer_normal: torch.Tensor | None = None,
    buffer_anomalous: torch.Tensor | None = None,
    alpha: float = 0.5,
    beta: float = 0.5,
) -> torch.Tensor:
    """ALGAN discriminator loss.

    ``L_D = -E[log D(x)] - alpha*(beta*E[log(1-D(G(z_n)))] + (1-beta)*E[log(1-D(buf_n))])
    - (1-alpha)*(beta*E[log(1-D(G(z_a)))] + (1-beta)*E[log(1-D(buf_a))])``

    Args:
        real: logits of real normal data, float32 (B,).
        fake_normal: logits of G(z_n), z_n ~ N(0, I), (B,).
        fake_anomalous: logits of G(z_a), z_a ~ N(0, sigma^2 I), (B,).
        buffer_normal, buffer_anomalous: logits of buffered early-training samples of each kind, (B,); when
            ``None`` (the buffer is still empty) the fresh term takes the whole weight (beta is treated as 1).
        alpha: share of the fake-normal terms vs the pseudo-anomalous terms, in [0, 1].
        beta: share of fresh vs buffered samples, in [0, 1].

    Returns:
        scalar loss tensor.
    """
    if not 0.0 <= alpha <= 1.0 or not 0.0 <= beta <= 1.0:
        raise ValueError(f"alpha and beta must lie in [0, 1], got alpha={alpha}, beta={beta}")
    loss = F.softplus(-real).mean()
    b = beta if buffer_normal is not None and buffer_anomalous is not None else 1.0
    normal = b * F.softplus(fake_normal).mean()
    anomalous = b * F.softplus(fake_anomalous).mean()
    if b < 1.0:
        normal = normal + (1.0 - b) * F.softplus(buffer_normal).mean()
        anomalous = anomalous + (1.0 - b) * F.softplus(buffer_anomalous).mean()
    return loss + alpha * normal + (1.0 - alpha) * anomalous


def generator_loss(fake_normal: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss on fake-normal samples only: ``-E[log D(G(z_n))]``.

    Args:
        fake_normal: D's logits of G(z_n), float32 (B,).
    """
    return F.softplus(-fake_normal).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor, gamma: float) -> torch.Tensor:
    """R1 gradient penalty on real data, ``gamma/2 * E_x ||grad_x logit D(x)||^2`` (Mescheder, Geiger & Nowozin
    2018, "Which training methods for GANs do actually converge?", eq. 9).

    Args:
        real_logits: D's logits of ``real``, float32 (B,), computed with ``real.requires_grad_(True)``.
        real: the real batch, float32 (B, K).
        gamma: penalty weight (>= 0).
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return 0.5 * gamma * grad.pow(2).sum(dim=1).mean()
