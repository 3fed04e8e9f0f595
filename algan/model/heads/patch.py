"""Patch-level heads: a score per grid cell from patch feature maps, for anomaly maps.

Every head maps float32 patch features (N, K, gh, gw) to raw per-cell anomaly scores (N, gh, gw), higher = more
anomalous, by applying a vector head of :mod:`algan.model.heads.vector` / :mod:`algan.model.nets.algan_head` to each
cell
(:class:`PatchwiseHead`, a 1x1 convolution in effect). All are traceable to ONNX (reshape, matrix products, TopK).

- ALGAN-patch: the ALGAN discriminator (ensemble) applied per cell, trained by
:func:`algan.model.gan.feature.train_algan`
  on sampled training patch vectors (real) against G's fake-normal and pseudo-anomalous patch vectors (Murase &
  Fukumizu 2022, applied per location).
- PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022): distance to the
  nearest vector of a memory bank, a greedy coreset of the training patches (:func:`greedy_coreset`).
- PaDiM-style Gaussian (Defard et al., "PaDiM: a Patch Distribution Modeling Framework", ICPR 2021): Mahalanobis
  distance to one Gaussian fitted to all training patches with Ledoit-Wolf shrinkage (a shared Gaussian per patch
  rather than PaDiM's one per location: it does not assume aligned objects).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from algan.model.heads.vector import KnnHead, MahalanobisHead

#: patch heads of ``algan-train --variant patch --head ...``
PATCH_HEADS = ("algan", "patchcore", "padim")


class PatchwiseHead(nn.Module):
    """Apply a vector head (float32 (M, K) -> (M,)) to every cell: (N, K, gh, gw) -> (N, gh, gw)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k, h, w = x.shape
        v = x.permute(0, 2, 3, 1).reshape(-1, k)
        return self.inner(v).reshape(-1, h, w)


def greedy_coreset(x: np.ndarray, n: int, proj_dim: int = 128, seed: int = 0) -> np.ndarray:
    """Indices of a greedy k-center coreset of ``n`` rows of ``x`` (PatchCore, Roth et al. 2022, Algorithm 1).

    Starting from a random row, repeatedly adds the row farthest from the rows chosen so far; distances are
    computed after a random Gaussian projection to ``proj_dim`` dimensions (as PatchCore does, Sec. 3.2) when
    ``x`` is wider. The result minimises (greedily, a 2-approximation) the largest distance of any row to its
    nearest chosen row.

    Args:
        x: float (M, C) patch vectors.
        n: coreset size, 1 <= n <= M.
        proj_dim: projection dimension for the distance computations (0 = none).
        seed: seed of the projection and the first row.

    Returns:
        int64 (n,) distinct row indices, in the order chosen.

    Raises:
        ValueError: ``n`` outside [1, M].
    """
    m = len(x)
    if not 1 <= n <= m:
        raise ValueError(f"coreset size must lie in [1, {m}] (number of training patches), got {n}")
    rng = np.random.default_rng(seed)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    if proj_dim and xt.shape[1] > proj_dim:
        g = torch.as_tensor((rng.standard_normal((xt.shape[1], proj_dim)) / np.sqrt(proj_dim)).astype(np.float32))
        xt = xt @ g
    sq = (xt * xt).sum(1)
    first = int(rng.integers(m))
    chosen = np.empty(n, np.int64)
    chosen[0] = first
    mind = torch.clamp(sq - 2.0 * (xt @ xt[first]) + sq[first], min=0.0)
    for j in range(1, n):
        i = int(torch.argmax(mind))
        chosen[j] = i
        torch.minimum(mind, torch.clamp(sq - 2.0 * (xt @ xt[i]) + sq[i], min=0.0), out=mind)
    return chosen


def patchcore_head(patches: np.ndarray, n_bank: int, seed: int = 0) -> PatchwiseHead:
    """PatchCore head: nearest-neighbour distance to a greedy coreset of ``n_bank`` training patch vectors.

    Features and bank are centred on the bank's mean inside the head (the same distances; the expanded
    ``|x|^2 - 2 x.b + |b|^2`` then keeps float32 and FP16 precision on uncentred backbone features)."""
    idx = greedy_coreset(patches, n_bank, seed=seed)
    bank = np.asarray(patches, np.float32)[np.sort(idx)]
    return PatchwiseHead(KnnHead(bank, k=1, center=bank.mean(axis=0, dtype=np.float64).astype(np.float32)))


def padim_head(patches: np.ndarray) -> PatchwiseHead:
    """PaDiM-style head: Mahalanobis distance to one Ledoit-Wolf Gaussian of all training patch vectors."""
    return PatchwiseHead(MahalanobisHead.fit(patches))


def nearest_distances(bank: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Euclidean distance of each query to its nearest bank row with faiss (exact, ``IndexFlatL2``), float32 (Q,).

    The reference the exported PatchCore head is checked against; faiss-cpu is what PatchCore implementations
    use for this search.
    """
    import faiss

    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(np.ascontiguousarray(bank, dtype=np.float32))
    d2, _ = index.search(np.ascontiguousarray(queries, dtype=np.float32), 1)
    return np.sqrt(np.maximum(d2[:, 0], 0.0)).astype(np.float32)
