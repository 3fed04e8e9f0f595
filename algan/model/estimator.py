"""scikit-learn-style ALGAN outlier detector for plain vector data (no images, no backbone).

>>> det = ALGANDetector(epochs=16).fit(X_train)            # X_train: normal samples, (N, D)
>>> det.score_samples(X_test)                              # LOWER = more abnormal (sklearn convention)
>>> det.predict(X_test)                                    # +1 inlier, -1 outlier

The model is :func:`algan.model.gan.feature.train_algan` (Murase & Fukumizu 2022, arXiv:2202.10281) behind a feature
transform (:class:`algan.model.heads.vector.FeatureTransform`). Conventions follow sklearn's outlier detectors
(``IsolationForest``, ``LocalOutlierFactor(novelty=True)``): ``score_samples`` is the *negated* ALGAN anomaly score,
i.e. the discriminator's logit of "normal data", averaged over the head's discriminators; ``decision_function`` is
``score_samples - offset_`` (negative = outlier); ``offset_`` is the ``contamination`` quantile of the training
scores.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from algan.model.gan.feature import DEFAULT, AlganConfig, train_algan
from algan.model.heads.vector import FeatureTransform

_CFG_FIELDS = tuple(AlganConfig.__dataclass_fields__)


class ALGANDetector(OutlierMixin, BaseEstimator):
    """ALGAN outlier detector for vector data, sklearn API.

    Parameters: every :class:`algan.model.gan.feature.AlganConfig` field (defaults: the ``default`` preset), plus

    Args:
        transform: ``standardize`` (per-feature z-score), ``pca`` (PCA whitening to ``pca_dim`` components) or
            ``none``; fitted on the training data, applied before ALGAN.
        pca_dim: components for ``pca`` (``None`` = min(N - 1, D, 128)).
        contamination: expected share of outliers in the *training* data, in (0, 0.5]; sets ``offset_`` to that
            quantile of the training ``score_samples``. Training scores are optimistic (the model has seen those
            points), so on fresh normal data expect more than ``contamination`` flagged; calibrate ``offset_`` on
            held-out normals when the false-alarm rate matters.
        progress: show a progress bar while training.

    Attributes (after ``fit``):
        transform_: the fitted FeatureTransform (``torch.nn.Identity`` for ``none``);
        head_: the ALGAN head (torch module, eval mode); config_: the AlganConfig used;
        history_: per-epoch mean losses; offset_: float threshold;
        n_features_in_: input dimension.
    """

    def __init__(
        self,
        *,
        z_dim=DEFAULT["z_dim"],
        sigma=DEFAULT["sigma"],
        alpha=DEFAULT["alpha"],
        beta=DEFAULT["beta"],
        epochs=DEFAULT["epochs"],
        batch_size=DEFAULT["batch_size"],
        lr_g=DEFAULT["lr_g"],
        lr_d=DEFAULT["lr_d"],
        adam_betas=DEFAULT["adam_betas"],
        buffer_epochs=DEFAULT["buffer_epochs"],
        buffer_size=DEFAULT["buffer_size"],
        g_hidden=tuple(DEFAULT["g_hidden"]),
        d_hidden=tuple(DEFAULT["d_hidden"]),
        g_batch_norm=DEFAULT["g_batch_norm"],
        d_dropout=DEFAULT["d_dropout"],
        spectral_norm=DEFAULT["spectral_norm"],
        d_quadratic=DEFAULT["d_quadratic"],
        d_weight_decay=DEFAULT["d_weight_decay"],
        r1_gamma=DEFAULT["r1_gamma"],
        d_ema=DEFAULT["d_ema"],
        whiten=DEFAULT["whiten"],
        whiten_shrinkage=DEFAULT["whiten_shrinkage"],
        ensemble=DEFAULT["ensemble"],
        min_steps=DEFAULT["min_steps"],
        seed=DEFAULT["seed"],
        transform="standardize",
        pca_dim=None,
        contamination=0.01,
        progress=False,
    ) -> None:
        self.z_dim = z_dim
        self.sigma = sigma
        self.alpha = alpha
        self.beta = beta
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr_g = lr_g
        self.lr_d = lr_d
        self.adam_betas = adam_betas
        self.buffer_epochs = buffer_epochs
        self.buffer_size = buffer_size
        self.g_hidden = g_hidden
        self.d_hidden = d_hidden
        self.g_batch_norm = g_batch_norm
        self.d_dropout = d_dropout
        self.spectral_norm = spectral_norm
        self.d_quadratic = d_quadratic
        self.d_weight_decay = d_weight_decay
        self.r1_gamma = r1_gamma
        self.d_ema = d_ema
        self.whiten = whiten
        self.whiten_shrinkage = whiten_shrinkage
        self.ensemble = ensemble
        self.min_steps = min_steps
        self.seed = seed
        self.transform = transform
        self.pca_dim = pca_dim
        self.contamination = contamination
        self.progress = progress

    def _config(self) -> AlganConfig:
        return AlganConfig(**{k: getattr(self, k) for k in _CFG_FIELDS})

    def fit(self, X, y=None) -> ALGANDetector:
        """Fit on normal samples X, array-like (N, D), N >= 2; ``y`` is ignored. Returns ``self``."""
        X = validate_data(self, X, dtype=np.float32, ensure_min_samples=2)
        if not 0.0 < float(self.contamination) <= 0.5:
            raise ValueError(f"contamination must lie in (0, 0.5], got {self.contamination}")
        cfg = self._config()
        if self.transform == "none":
            self.transform_ = FeatureTransform(np.zeros(X.shape[1], np.float32), np.ones(X.shape[1], np.float32))
        else:
            self.transform_ = FeatureTransform.fit(X, self.transform, self.pca_dim)
        with torch.no_grad():
            xt = self.transform_(torch.from_numpy(X)).numpy()
        result = train_algan(xt, cfg, progress=self.progress)
        self.config_ = cfg
        self.head_ = result.head.eval()
        self.history_ = result.history
        self.offset_ = float(np.quantile(self._raw(X), float(self.contamination)))
        return self

    @torch.no_grad()
    def _raw(self, X: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        return (-self.head_(self.transform_(x))).numpy().astype(np.float64)

    def score_samples(self, X) -> np.ndarray:
        """Normality score, float64 (N,): the discriminator's logit of "normal" (= minus the ALGAN anomaly score).

        LOWER = more abnormal (sklearn convention, as ``IsolationForest.score_samples``).
        """
        check_is_fitted(self, "head_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        return self._raw(X)

    def decision_function(self, X) -> np.ndarray:
        """``score_samples(X) - offset_``, float64 (N,); negative = outlier."""
        return self.score_samples(X) - self.offset_

    def predict(self, X) -> np.ndarray:
        """+1 for inliers, -1 for outliers, int (N,)."""
        return np.where(self.decision_function(X) < 0, -1, 1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags


__all__ = ["ALGANDetector"]
