"""sklearn-style ALGANDetector on non-image vector data (algan.model.estimator)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from algan.model.estimator import ALGANDetector
from algan.model.gan.feature import AlganConfig

torch.set_num_threads(1)


def toy(seed: int = 0):
    """Normal data: 3 correlated Gaussian blobs in 10-d; outliers: uniform in a wide box away from the blobs."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(3, 10))
    mix = rng.normal(size=(10, 10)) / 3.0

    def normal(n: int) -> np.ndarray:
        return centers[rng.integers(0, 3, n)] + rng.normal(size=(n, 10)) @ mix

    out = rng.uniform(-10, 10, size=(300, 10))
    out = out[np.min(np.linalg.norm(out[:, None] - centers[None], axis=2), axis=1) > 4.0][:100]
    return normal(400).astype(np.float32), normal(100).astype(np.float32), out.astype(np.float32)


def test_init_only_stores_params_and_get_set_params() -> None:
    det = ALGANDetector(sigma=2.0, epochs=3, transform="pca", contamination=0.05)
    params = det.get_params()
    assert params["sigma"] == 2.0 and params["epochs"] == 3 and params["transform"] == "pca"
    assert set(AlganConfig.__dataclass_fields__) <= set(params)
    assert not [k for k in vars(det) if k.endswith("_")]
    c = clone(det)
    assert c.get_params() == params
    assert det.set_params(epochs=5).epochs == 5


def test_not_fitted() -> None:
    det = ALGANDetector()
    for fn in (det.score_samples, det.decision_function, det.predict):
        with pytest.raises(NotFittedError):
            fn(np.zeros((2, 3), np.float32))


def test_fit_score_predict_on_blobs_vs_outliers() -> None:
    train, normal, outl = toy()
    det = ALGANDetector(epochs=24, contamination=0.05)
    assert det.fit(train) is det
    assert det.n_features_in_ == 10 and det.offset_ == pytest.approx(np.quantile(det.score_samples(train), 0.05))
    x = np.concatenate([normal, outl])
    y = np.r_[np.zeros(len(normal)), np.ones(len(outl))]
    s = det.score_samples(x)
    assert s.shape == (len(x),) and s.dtype == np.float64
    # sklearn convention: LOWER score_samples = more abnormal
    auc = roc_auc_score(y, -s)
    assert auc > 0.95, f"AUROC {auc:.3f}"
    np.testing.assert_allclose(det.decision_function(x), s - det.offset_)
    pred = det.predict(x)
    assert set(np.unique(pred)) <= {-1, 1}
    assert (pred[len(normal):] == -1).mean() >= 0.95  # measured 1.00
    # held-out normals: contamination 0.05 means ~95 % inliers; 0.92 measured, the bar is ~3 binomial standard
    # deviations (sqrt(0.05 * 0.95 / 100) = 0.022) below 0.95
    assert (pred[: len(normal)] == 1).mean() >= 0.88
    # training data: about `contamination` flagged
    assert (det.predict(train) == -1).mean() == pytest.approx(0.05, abs=0.02)


def test_deterministic_and_transforms() -> None:
    train, normal, _ = toy(1)
    a = ALGANDetector(epochs=2, min_steps=0, seed=3).fit(train).score_samples(normal)
    b = ALGANDetector(epochs=2, min_steps=0, seed=3).fit(train).score_samples(normal)
    np.testing.assert_array_equal(a, b)
    for kind in ("pca", "none"):
        det = ALGANDetector(epochs=1, min_steps=0, transform=kind, pca_dim=5).fit(train)
        assert np.isfinite(det.score_samples(normal)).all()
    paper = ALGANDetector(**{**AlganConfig.preset("paper").to_json(), "epochs": 1}).fit(train)
    assert paper.config_ == AlganConfig.preset("paper", epochs=1)


def test_input_validation() -> None:
    train, _, _ = toy()
    det = ALGANDetector(epochs=1, min_steps=0).fit(train)
    with pytest.raises(ValueError):
        det.score_samples(np.zeros((3, 4), np.float32))  # wrong number of features
    with pytest.raises(ValueError):
        ALGANDetector(contamination=0.0, min_steps=0).fit(train)
    with pytest.raises(ValueError):
        ALGANDetector().fit(train[:1])
