"""Classical heads: kNN distances against brute force, both metrics, bundle-loading shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from algan.model.heads.vector import KnnHead, MahalanobisHead
from algan.model.nets.algan_head import shrunk_whitening


def data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(6, 6)) * np.array([5.0, 2.0, 1.0, 0.5, 0.1, 0.05])  # very unequal variances
    return (rng.normal(size=(40, 6)) @ a).astype(np.float32), (rng.normal(size=(9, 6)) @ a).astype(np.float32)


def brute(bank: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(((q[:, None, :].astype(np.float64) - bank[None].astype(np.float64)) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, :k].mean(1)


@pytest.mark.parametrize("k", [1, 3])
def test_euclidean_knn_equals_brute_force(k):
    bank, q = data()
    head = KnnHead.fit(bank, k, "euclidean")
    assert head.metric == "euclidean" and head.whitening is None
    out = head(torch.from_numpy(q))
    assert out.shape == (9,) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), brute(bank, q, k), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_whitened_knn_is_knn_in_the_whitened_space(k):
    bank, q = data()
    mean, w, _ = shrunk_whitening(bank)
    head = KnnHead.fit(bank, k)  # default metric: whitened
    assert head.metric == "whitened"
    want = brute((bank - mean) @ w, (q - mean) @ w, k)
    np.testing.assert_allclose(head(torch.from_numpy(q)).numpy(), want, rtol=1e-4, atol=1e-4)
    # the low-variance directions count: a step of 0.5 along the 0.05-std axis outweighs one along the 5-std axis
    base = bank[:1].copy()
    small_axis, big_axis = base.copy(), base.copy()
    small_axis[0] += 0.5 * np.linalg.svd(bank - bank.mean(0))[2][-1]
    big_axis[0] += 0.5 * np.linalg.svd(bank - bank.mean(0))[2][0]
    nearest = KnnHead.fit(bank, 1)  # distance of a shifted training point to itself
    s_small, s_big = nearest(torch.from_numpy(np.r_[small_axis, big_axis])).numpy()
    assert s_small > 5 * s_big


def test_empty_head_loads_the_fitted_state_and_errors_are_clear():
    bank, q = data()
    for metric in ("whitened", "euclidean"):
        head = KnnHead.fit(bank, 2, metric)
        again = KnnHead.empty(len(bank), bank.shape[1], 2, metric)
        again.load_state_dict(head.state_dict())
        torch.testing.assert_close(again(torch.from_numpy(q)), head(torch.from_numpy(q)))
    with pytest.raises(ValueError, match="unknown kNN metric 'cosine'; use one of whitened, euclidean"):
        KnnHead.fit(bank, 1, "cosine")
    with pytest.raises(ValueError, match=r"k must lie in \[1, 40\]"):
        KnnHead.fit(bank, 41)


@pytest.mark.parametrize("n,d", [(30, 80), (120, 40)])
def test_mahalanobis_precision_is_scikit_learns_ledoit_wolf(n, d):
    # fewer images than dimensions takes the Woodbury path, more the direct inverse: both equal LedoitWolf's
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 3.0
    head = MahalanobisHead.fit(x.astype(np.float32))
    lw = LedoitWolf().fit(x.astype(np.float32).astype(np.float64))
    ref = lw.precision_
    np.testing.assert_allclose(head.mu.numpy(), lw.location_, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(head.precision.numpy(), ref, rtol=1e-4, atol=1e-8 * np.abs(ref).max() + 1e-7)
    z = rng.normal(size=(5, d)).astype(np.float32)
    d0 = z - lw.location_
    expect = np.sqrt(np.einsum("ij,jk,ik->i", d0, ref, d0))
    np.testing.assert_allclose(head(torch.from_numpy(z)).numpy(), expect, rtol=1e-4)
