"""ALGAN inference heads: an optional fixed whitening in front of the discriminator(s).

Every head maps float32 features (N, K) (after the pipeline's FeatureTransform) to float32 raw anomaly scores
(N,), higher = more anomalous, using only matrix products and elementwise ops (ONNX-exportable, opset 17).

Why the whitening: on backbone features the defect signal lives mostly in the *low-variance* principal directions
(Rippel et al. 2020, "Modeling the distribution of normal data in pre-trained deep features for anomaly
detection", ICPR; measured on MTD in benchmarks/ALGAN_EXPERIMENTS.md). Standardisation keeps those directions
tiny, and PCA to a few components drops them, so neither a generator nor a discriminator ever sees them. A
shrunk ZCA whitening ``W = (Sigma_shrunk)^(-1/2)`` (Ledoit & Wolf 2004 shrinkage) makes Euclidean geometry equal
the Mahalanobis geometry of the normal data, so G and D work where the anomalies are.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn


def shrunk_whitening(x: np.ndarray, shrinkage: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Fit a shrunk ZCA whitening on normal features.

    ``Sigma_s = (1 - d) S + d (tr(S) / K) I`` (Ledoit & Wolf 2004, "A well-conditioned estimator for
    large-dimensional covariance matrices"), ``W = Sigma_s^(-1/2)`` (symmetric), computed from the thin SVD of the
    centred data (N <= K) or the eigendecomposition of the K x K covariance (N > K), so it costs O(N K min(N, K)).

    Args:
        x: float (N, K) normal training features, N >= 2.
        shrinkage: ``d`` in [0, 1]; ``None`` = the Ledoit-Wolf estimate.

    Returns:
        ``(mean float32 (K,), W float32 (K, K), d)``; whitened features are ``(x - mean) @ W``.
    """
    x = np.asarray(x, dtype=np.float64)
    n, k = x.shape
    mean = x.mean(0)
    xc = x - mean
    if shrinkage is None:
        from sklearn.covariance import ledoit_wolf_shrinkage

        shrinkage = float(ledoit_wolf_shrinkage(xc, assume_centered=True))
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"whitening shrinkage must lie in [0, 1], got {shrinkage}")
    if n > k:
        # many more samples than dimensions (patch vectors): the K x K covariance's eigendecomposition, O(N K^2) in
        # one matrix product, is far cheaper than the thin SVD of the N x K data (same eigenvalues and vectors)
        var, v = np.linalg.eigh(xc.T @ xc / n)
        var, vt = np.clip(var, 0.0, None), v.T
    else:
        _, s, vt = np.linalg.svd(xc, full_matrices=False)
        var = s**2 / n  # eigenvalues of the (biased, as in Ledoit-Wolf) sample covariance
    mu = float((xc**2).sum() / (n * k))  # tr(S) / K
    floor = max(shrinkage * mu, 1e-12 * max(mu, 1e-30))
    lam = (1.0 - shrinkage) * var + floor
    # Sigma_s^(-1/2) = V diag(lam^-1/2) V^T + (I - V V^T) floor^-1/2
    w = (vt.T * (lam**-0.5 - floor**-0.5)) @ vt + np.eye(k) * floor**-0.5
    return mean.astype(np.float32), w.astype(np.float32), float(shrinkage)


class Whitening(nn.Module):
    """Fixed affine map ``(x - mean) @ W``; float32 (N, K) -> (N, K). Identity until fitted/loaded."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("weight", torch.eye(dim))

    def set(self, mean: np.ndarray, weight: np.ndarray) -> Whitening:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) @ self.weight


class AlganEnsembleHead(nn.Module):
    """Raw score = mean over discriminators of ``-logit D_i(whiten(x))``. Input (N, K), output (N,).

    ``whitening`` is ``None`` when ALGAN trains on the pipeline's features directly (the paper's setting); with a
    single discriminator and no whitening the score equals :class:`algan.model.heads.vector.AlganHead`'s.
    """

    def __init__(self, discriminators: list[nn.Module], whitening: Whitening | None = None) -> None:
        super().__init__()
        self.whitening = whitening
        self.discriminators = nn.ModuleList(discriminators)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.whitening is not None:
            x = self.whitening(x)
        score = -self.discriminators[0](x)
        for d in self.discriminators[1:]:
            score = score - d(x)
        return score / len(self.discriminators)


@torch.no_grad()
def fold_whitening(head: AlganEnsembleHead) -> AlganEnsembleHead:
    """An equivalent head without the whitening: ``(x - mean) @ W`` is folded into each discriminator's first
    linear layer (``A' = A W^T``, ``b' = b - A W^T mean``), so inference runs one matrix product less per input
    (for ALGAN-patch a K x K product per cell). Returns ``head`` itself when it has no whitening.

    Raises:
        ValueError: a discriminator whose first layer is not ``nn.Linear`` or that has a quadratic term (which
            needs the whitened input).
    """
    if head.whitening is None:
        return head
    mean, w = head.whitening.mean, head.whitening.weight
    folded = []
    for d in head.discriminators:
        first = d.net[0] if hasattr(d, "net") else None
        if not isinstance(first, nn.Linear) or getattr(d, "quad", None) is not None:
            raise ValueError("cannot fold the whitening into a discriminator without a plain first linear layer")
        new = copy.deepcopy(d)
        a = first.weight @ w.T  # (h, K): A (x - m) W  ==  x (W A^T) - m W A^T
        new.net[0].weight.copy_(a)
        new.net[0].bias.copy_(first.bias - a @ mean)
        folded.append(new)
    return AlganEnsembleHead(folded, None)
