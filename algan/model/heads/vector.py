"""Scoring heads on backbone features and the feature transform in front of them.

Every head maps float32 features (N, K) to float32 raw anomaly scores (N,), higher = more anomalous, and is
traceable to ONNX (matrix products, TopK; no cdist, no data-dependent Python control flow).

- ``AlganHead``: the ALGAN discriminator; score = -logit D(x) (the paper scores with the discriminator).
- ``MahalanobisHead``: distance to a Gaussian fitted to normal features with Ledoit-Wolf shrinkage
  (Ledoit & Wolf 2004), as in Rippel et al. 2020 "Modeling the distribution of normal data in pre-trained deep
  features for anomaly detection".
- ``KnnHead``: mean Euclidean distance to the k nearest training features (Bergman et al. 2020, "Deep
  nearest neighbor anomaly detection"), by default after a Ledoit-Wolf shrunk ZCA whitening (metric ``whitened``:
  nearest neighbours in the Mahalanobis metric of the normal data), or on the features as given (``euclidean``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from algan.model.nets.algan_head import Whitening, shrunk_whitening
from algan.model.nets.networks import MLPDiscriminator

#: kNN distance metrics: ``whitened`` (Ledoit-Wolf shrunk ZCA whitening first) or ``euclidean``
KNN_METRICS = ("whitened", "euclidean")


def _check_metric(metric: str) -> None:
    if metric not in KNN_METRICS:
        raise ValueError(f"unknown kNN metric {metric!r}; use one of {', '.join(KNN_METRICS)}")


class FeatureTransform(nn.Module):
    """Affine feature transform ``((x - mean) * scale) [@ proj]``.

    ``standardize``: per-dimension z-score (``scale = 1/std``, no projection, O(D) per image).
    ``pca``: PCA whitening to K components (``scale = 1``, ``proj`` (D, K) = principal axes / sqrt(variance)).

    Input float32 (N, D); output float32 (N, K) (K = D for ``standardize``).
    """

    def __init__(self, mean: np.ndarray, scale: np.ndarray, proj: np.ndarray | None = None) -> None:
        super().__init__()
        self.kind = "standardize" if proj is None else "pca"
        # torch.tensor copies: buffers never share memory with the caller's arrays (or each other)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        # always assigned; an empty (0, 0) matrix means "no projection"
        self.register_buffer("proj", torch.tensor(np.zeros((0, 0)) if proj is None else proj, dtype=torch.float32))

    @property
    def out_dim(self) -> int:
        return int(self.proj.shape[1]) if self.kind == "pca" else int(self.mean.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x - self.mean) * self.scale
        return y @ self.proj if self.kind == "pca" else y

    @classmethod
    def fit(cls, x: np.ndarray, kind: str = "standardize", dim: int | None = None, eps: float = 1e-6):
        """Fit on normal training features, float (N, D).

        Args:
            kind: ``standardize`` (per-dimension z-score) or ``pca`` (PCA whitening to ``dim`` components).
            dim: number of PCA components (``pca`` only; default min(N - 1, D, 128)).
        """
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(0)
        if kind == "standardize":
            return cls(mean, 1.0 / (x.std(0) + eps))
        if kind == "pca":
            k = dim or min(x.shape[0] - 1, x.shape[1], 128)
            _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
            var = s[:k] ** 2 / max(x.shape[0] - 1, 1)
            return cls(mean, np.ones_like(mean), vt[:k].T / np.sqrt(var + eps))
        raise ValueError(f"unknown feature transform {kind!r}; use standardize or pca")

    @classmethod
    def empty(cls, kind: str, in_dim: int, out_dim: int) -> FeatureTransform:
        """Shape-only instance to load saved buffers into."""
        proj = None if kind == "standardize" else np.zeros((in_dim, out_dim), np.float32)
        return cls(np.zeros(in_dim, np.float32), np.ones(in_dim, np.float32), proj)


class AlganHead(nn.Module):
    """Raw score = -logit of the ALGAN discriminator. Input (N, K) features, output (N,)."""

    def __init__(self, discriminator: MLPDiscriminator) -> None:
        super().__init__()
        self.discriminator = discriminator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -self.discriminator(x)


class MahalanobisHead(nn.Module):
    """Raw score = sqrt((x - mu)^T P (x - mu)) with P the inverse of a Ledoit-Wolf shrunk covariance."""

    def __init__(self, mean: np.ndarray, precision: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mu", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("precision", torch.tensor(precision, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - self.mu
        m = ((d @ self.precision) * d).sum(dim=1)
        return torch.sqrt(torch.clamp(m, min=0.0))

    @classmethod
    def fit(cls, x: np.ndarray) -> MahalanobisHead:
        """Fit on training features x (N, D): mean and the inverse of the Ledoit-Wolf shrunk covariance
        ``(1 - s) S + s (tr(S) / D) I`` (Ledoit & Wolf, J. Multivariate Anal. 2004; ``s`` from
        :func:`sklearn.covariance.ledoit_wolf_shrinkage`, ``S`` the empirical covariance), the precision
        scikit-learn's ``LedoitWolf`` returns (equal to 1e-8, tested). With fewer images than dimensions (MTD: 619 x
        2208) the inverse goes through the Woodbury identity on the N x N Gram matrix (about 10x faster than
        inverting the D x D matrix, which matters for cross-fitted calibration's folds)."""
        from scipy.linalg import pinvh
        from sklearn.covariance import ledoit_wolf_shrinkage

        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0)
        xc = x - mean
        n, d = xc.shape
        shrink = float(ledoit_wolf_shrinkage(xc, assume_centered=True))
        a = shrink * float((xc**2).sum()) / (n * d)  # the ridge s * tr(S) / D
        b = (1.0 - shrink) / n  # the weight of X^T X
        if n < d and a > 0 and b > 0:
            # (a I + b X^T X)^-1 = (I - X^T (I / b + X X^T / a)^-1 X / a) / a
            inner = np.linalg.inv(np.eye(n) / b + (xc @ xc.T) / a)
            precision = (np.eye(d) - (xc.T @ inner @ xc) / a) / a
        else:
            precision = pinvh(b * (xc.T @ xc) + a * np.eye(d))
        return cls(mean, precision)

    @classmethod
    def empty(cls, dim: int) -> MahalanobisHead:
        return cls(np.zeros(dim, np.float32), np.zeros((dim, dim), np.float32))


class KnnHead(nn.Module):
    """Raw score = mean distance to the k nearest of the stored normal training features.

    Input float32 (N, K) features, output float32 (N,). ``whitening`` (optional, fixed) maps features and bank alike;
    the bank (M, K) is stored already whitened. With a whitening the distance is the Mahalanobis distance under the
    shrunk covariance of the normal data: on MTD (2208-d default features) whitened k=1 gives AUROC 0.982 against 0.967
    for plain Euclidean (benchmarks/ALGAN_EXPERIMENTS.md, "Session 3").
    """

    def __init__(self, bank: np.ndarray, k: int = 1, whitening: Whitening | None = None,
                 center: np.ndarray | None = None) -> None:
        super().__init__()
        if k < 1 or k > len(bank):
            raise ValueError(f"k must lie in [1, {len(bank)}] (number of training images), got {k}")
        self.k = int(k)
        self.whitening = whitening
        bank_t = torch.tensor(bank, dtype=torch.float32)
        # optional centre (K,) subtracted from features and bank alike: distances are unchanged, but the expanded
        # form below no longer subtracts two large squared norms (float32 / FP16 cancellation on uncentred
        # features such as post-ReLU ResNet maps); ``None`` keeps the state dict of bundles written without it
        self.register_buffer("center", None if center is None else torch.tensor(center, dtype=torch.float32))
        if self.center is not None:
            bank_t = bank_t - self.center
        self.register_buffer("bank", bank_t)
        self.register_buffer("bank_sq", (bank_t * bank_t).sum(dim=1))

    @property
    def metric(self) -> str:
        return "euclidean" if self.whitening is None else "whitened"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.whitening is not None:
            x = self.whitening(x)
        if self.center is not None:
            x = x - self.center
        # ||x - b||^2 = ||x||^2 - 2 x.b + ||b||^2 finds the k nearest (one matrix product, exportable; torch.cdist
        # is not); their distances are then computed from the differences themselves, so that a frame close to a
        # bank entry (a training image: every one with cross-fitted calibration) gets no cancellation error,
        # which sqrt would amplify near 0
        d2 = (x * x).sum(dim=1, keepdim=True) - 2.0 * (x @ self.bank.T) + self.bank_sq
        idx = torch.topk(d2, self.k, dim=1, largest=False).indices  # (N, k)
        diff = x.unsqueeze(1) - self.bank[idx]  # (N, k, K)
        return torch.sqrt((diff * diff).sum(dim=2)).mean(dim=1)

    @classmethod
    def fit(cls, x: np.ndarray, k: int = 1, metric: str = "whitened") -> KnnHead:
        """Store normal features float (M, K) as the bank; ``metric`` is ``whitened`` or ``euclidean``.

        Raises:
            ValueError: unknown metric, or k outside [1, M].
        """
        _check_metric(metric)
        x = np.asarray(x, dtype=np.float32)
        if metric == "euclidean":
            return cls(x, k)
        mean, w, _ = shrunk_whitening(x)
        return cls((x - mean) @ w, k, Whitening(x.shape[1]).set(mean, w))

    @classmethod
    def empty(cls, n: int, dim: int, k: int, metric: str = "euclidean", centered: bool = False) -> KnnHead:
        """Shape-only instance to load saved buffers into (``metric`` and ``centered`` as stored in the manifest)."""
        _check_metric(metric)
        return cls(np.zeros((n, dim), np.float32), k, Whitening(dim) if metric == "whitened" else None,
                   np.zeros(dim, np.float32) if centered else None)
