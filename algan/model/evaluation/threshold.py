"""Pure threshold estimators on anomaly scores (numpy/scipy/scikit-learn, no torch, no I/O).

Score direction: higher = more anomalous, and a frame alarms when ``score >= threshold``
(the edge daemon's rule, ``alarm.threshold``). All rates here are *per frame*.

Estimators follow the scikit-learn estimator contract: ``__init__`` only stores its parameters, ``fit``
returns ``self``, learned attributes end in ``_``, and using an unfitted estimator raises ``NotFittedError``.

Unsupervised (normal scores only; anomalies are rare and unlabelled), the threshold at a false-alarm rate ``alpha``:

* :class:`QuantileThreshold`: the order statistic ``X_(k)``, ``k = ceil((n + 1)(1 - alpha))``. For exchangeable
  scores ``F(X_(k))`` is Beta(k, n + 1 - k) distributed, so the expected out-of-sample false-alarm rate is
  ``1 - k / (n + 1) <= alpha`` (distribution-free; the split-conformal quantile, Vovk et al. 2005). It needs
  ``k <= n``, i.e. ``alpha >= 1 / (n + 1)``, and about ``10 / alpha`` images for a stable estimate
  (:func:`images_needed`).
* :class:`GPDTailThreshold`: for rates the sample cannot resolve, a generalised Pareto fit to the exceedances
  over a high empirical quantile ``u`` (Pickands 1975; Balkema & de Haan 1974: the excess distribution over a high
  threshold converges to a GPD). With ``zeta_u = n_u / n`` the tail estimate is
  ``P(X > x) = zeta_u * (1 + xi (x - u) / sigma) ** (-1 / xi)`` and the threshold is
  ``x_alpha = u + sigma / xi * ((alpha / zeta_u) ** (-xi) - 1)`` (Coles 2001, "An Introduction to Statistical
  Modeling of Extreme Values", eqs. 4.13-4.14); ``xi``, ``sigma`` are maximum-likelihood estimates
  (``scipy.stats.genpareto.fit`` with location fixed at 0).
* :class:`TargetFprThreshold`: picks one of the two (``method="auto"``: empirical when ``n * alpha >= 1``).

Supervised (normal and labelled anomalous scores; reported, not used as the alarm threshold by default):

* :class:`F1Threshold`: maximises F1 = 2 P R / (P + R) over all candidate thresholds.
* :class:`YoudenThreshold`: maximises Youden's J = TPR - FPR (Youden 1950) along the ROC curve.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from algan.contract import empirical_threshold  # the one threshold rule (algan.model.fit uses it too)

#: exceedances per target rate wanted for a stable empirical quantile: n >= STABLE_EXCEEDANCES / target_fpr
STABLE_EXCEEDANCES = 10
#: fewest normal scores any threshold estimate is made from
MIN_SCORES = 20


def images_needed(target_fpr: float, exceedances: int = STABLE_EXCEEDANCES) -> int:
    """Normal images needed for a stable empirical threshold at ``target_fpr`` (per frame): ``ceil(exceedances /
    target_fpr)``, i.e. about ``exceedances`` calibration scores at or above the threshold."""
    return math.ceil(exceedances / target_fpr - 1e-9)


def sample_size_warning(n: int, target_fpr: float) -> str | None:
    """One-line warning when ``n`` normal scores are too few for a stable estimate at ``target_fpr``, else None."""
    need = images_needed(target_fpr)
    if n >= need:
        return None
    expected = n * target_fpr
    how = ("the empirical quantile is used" if n * target_fpr >= 1
           else "the rate lies below 1/n, so a generalised Pareto tail fit extrapolates it")
    return (f"{n} normal images give about {expected:.2g} expected false alarms at target FPR {target_fpr:g}; "
            f"a stable estimate needs >= {need} images ({STABLE_EXCEEDANCES}/target), {how}: treat the threshold as "
            "approximate and re-check it with algan-calibrate --check on more frames")


def expected_alarms_interval(n_calib: int, rank: int | None, n_new: int, target_fpr: float,
                             confidence: float = 0.95) -> tuple[int, int]:
    """Central interval of the number of false alarms on ``n_new`` new normal frames.

    With an empirical threshold ``X_(rank)`` of ``n_calib`` exchangeable normal scores, the threshold's true
    exceedance rate is ``p ~ Beta(n_calib + 1 - rank, rank)``, so the count is beta-binomial
    ``BetaBinomial(n_new, n_calib + 1 - rank, rank)``: it includes the threshold's own sampling error, which a plain
    binomial interval of the target misses. For ``rank=None`` (a fitted tail) the binomial ``Bin(n_new, target_fpr)``
    interval is returned.

    Returns:
        ``(low, high)`` alarm counts, each tail holding at most ``(1 - confidence) / 2``.
    """
    from scipy.stats import betabinom, binom

    a = (1.0 - confidence) / 2
    dist = binom(n_new, target_fpr) if rank is None else betabinom(n_new, n_calib + 1 - rank, rank)
    return int(dist.ppf(a)), int(dist.ppf(1 - a))


def check_scores(scores: np.ndarray, name: str = "normal scores", min_n: int = MIN_SCORES) -> np.ndarray:
    """Validate a 1-D array of finite scores; returns it as float64.

    Raises:
        ValueError: not 1-D, non-finite values, fewer than ``min_n`` values, or all values equal.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contain {int((~np.isfinite(s)).sum())} NaN/inf values; the model output is broken")
    if len(s) < min_n:
        raise ValueError(f"need at least {min_n} {name}, got {len(s)}; record more normal frames")
    if np.ptp(s) <= 1e-12 * max(1.0, abs(float(s[0]))):
        msg = (f"all {len(s)} {name} are equal ({s[0]:.6g}): the model does not distinguish these images; check "
               "that the data are real camera frames of the product the bundle was trained on")
        raise ValueError(msg)
    return s


def _check_fpr(target_fpr: float) -> None:
    if not 0.0 < target_fpr < 0.5:
        raise ValueError(f"target_fpr must lie in (0, 0.5) (per-frame false-alarm rate), got {target_fpr}")


class _Fitted(BaseEstimator):
    """Base: scikit-learn parameter handling (``get_params`` / ``clone``); ``_check_fitted()`` raises
    NotFittedError until ``fit`` has set ``threshold_``."""

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(scores) first")

    def predict(self, scores: np.ndarray) -> np.ndarray:
        """Alarm decision per score: 1 where ``score >= threshold_``, else 0 (int array)."""
        self._check_fitted()
        return (np.asarray(scores, dtype=np.float64) >= self.threshold_).astype(int)


class QuantileThreshold(_Fitted):
    """Empirical threshold at a target per-frame false-alarm rate: ``threshold_ = X_(k)``,
    ``k = ceil((n + 1)(1 - target_fpr))`` (expected out-of-sample FPR ``1 - k / (n + 1) <= target_fpr``).

    Args:
        target_fpr: per-frame false-alarm rate in (0, 0.5), e.g. 0.001.

    Attributes:
        threshold_: raw-score threshold (alarm when ``score >= threshold_``).
        center_: median normal score.
        n_samples_seen_: number of normal scores fitted.
        rank_: the order statistic used (1-based).
        expected_fpr_: ``1 - rank_ / (n + 1)``.

    Raises (fit):
        ValueError: bad scores, or ``target_fpr < 1 / (n + 1)`` (use :class:`GPDTailThreshold`).
    """

    def __init__(self, target_fpr: float = 0.001) -> None:
        self.target_fpr = target_fpr

    def fit(self, scores: np.ndarray) -> QuantileThreshold:
        _check_fpr(self.target_fpr)
        s = check_scores(scores)
        try:
            t = empirical_threshold(s, self.target_fpr, clip=False)
        except ValueError as e:
            raise ValueError(f"{e}; use the generalised Pareto tail fit (method gpd)") from None
        self.rank_ = t.rank
        self.threshold_ = t.threshold
        self.center_ = float(np.median(s))
        self.n_samples_seen_ = len(s)
        self.expected_fpr_ = t.expected_fpr
        return self


class GPDTailThreshold(_Fitted):
    """Threshold at a small per-frame false-alarm rate from a generalised Pareto fit of the upper tail.

    Exceedances over ``u`` (the empirical quantile leaving ``n_u = max(tail_fraction * n, min_exceedances)``
    scores above it) are fitted by maximum likelihood with ``scipy.stats.genpareto`` (location 0); the threshold is
    ``u + genpareto.isf(target_fpr / zeta_u, xi, scale=sigma)``, ``zeta_u = n_u / n`` (Pickands-Balkema-de Haan;
    Coles 2001 eq. 4.13). Valid for ``target_fpr < zeta_u``.

    Args:
        target_fpr: per-frame false-alarm rate in (0, 0.5).
        tail_fraction: share of the scores treated as the tail (default 0.1).
        min_exceedances: fewest tail scores to fit (default 10); needs ``n >= 2 * min_exceedances``.

    Attributes:
        threshold_, center_, n_samples_seen_: as :class:`QuantileThreshold`.
        tail_threshold_: ``u`` (raw score).
        n_exceedances_: ``n_u``.
        shape_: GPD shape ``xi`` (0 = exponential tail, > 0 heavy, < 0 bounded).
        scale_: GPD scale ``sigma`` (raw-score units).
    """

    def __init__(self, target_fpr: float = 0.001, tail_fraction: float = 0.1, min_exceedances: int = 10) -> None:
        self.target_fpr = target_fpr
        self.tail_fraction = tail_fraction
        self.min_exceedances = min_exceedances

    def fit(self, scores: np.ndarray) -> GPDTailThreshold:
        from scipy.stats import genpareto

        _check_fpr(self.target_fpr)
        if not 0.0 < self.tail_fraction < 0.5:
            raise ValueError(f"tail_fraction must lie in (0, 0.5), got {self.tail_fraction}")
        s = np.sort(check_scores(scores, min_n=max(MIN_SCORES, 2 * self.min_exceedances)))
        n = len(s)
        n_u = max(int(round(self.tail_fraction * n)), int(self.min_exceedances))
        u = float(s[n - n_u - 1])  # the (n_u + 1)-th largest score: n_u scores lie above it
        exc = s[n - n_u :] - u
        exc = exc[exc > 0]
        if len(exc) < self.min_exceedances or np.ptp(exc) <= 0:
            msg = (f"only {len(exc)} distinct scores above the tail threshold {u:.6g}: too many ties for a tail fit; "
                   "the scores are too coarse, record more varied normal frames")
            raise ValueError(msg)
        zeta = len(exc) / n
        if self.target_fpr >= zeta:
            raise ValueError(f"target_fpr {self.target_fpr:g} is not in the fitted tail (< {zeta:.3g}); use quantile")
        xi, _, sigma = genpareto.fit(exc, floc=0.0)
        self.tail_threshold_ = u
        self.n_exceedances_ = len(exc)
        self.shape_ = float(xi)
        self.scale_ = float(sigma)
        self.threshold_ = float(u + genpareto.isf(self.target_fpr / zeta, xi, loc=0.0, scale=sigma))
        self.center_ = float(np.median(s))
        self.n_samples_seen_ = n
        return self

    def tail_probability(self, x: np.ndarray) -> np.ndarray:
        """Fitted ``P(X > x)`` for raw scores ``x >= tail_threshold_`` (per frame); NaN below the tail."""
        from scipy.stats import genpareto

        self._check_fitted()
        x = np.asarray(x, dtype=np.float64)
        zeta = self.n_exceedances_ / self.n_samples_seen_
        p = zeta * genpareto.sf(x - self.tail_threshold_, self.shape_, loc=0.0, scale=self.scale_)
        return np.where(x >= self.tail_threshold_, p, np.nan)


class TargetFprThreshold(_Fitted):
    """Threshold at a target per-frame false-alarm rate, choosing the estimator (a strategy object).

    Args:
        target_fpr: per-frame false-alarm rate in (0, 0.5).
        method: ``auto`` (empirical quantile when ``n * target_fpr >= 1``, else the GPD tail fit), ``quantile`` or
            ``gpd``.

    Attributes:
        threshold_, center_, n_samples_seen_: as :class:`QuantileThreshold`.
        method_: the estimator used, ``quantile`` or ``gpd``.
        estimator_: the fitted :class:`QuantileThreshold` or :class:`GPDTailThreshold`.
        warning_: :func:`sample_size_warning` text, or None.
    """

    METHODS = ("auto", "quantile", "gpd")

    def __init__(self, target_fpr: float = 0.001, method: str = "auto") -> None:
        self.target_fpr = target_fpr
        self.method = method

    def fit(self, scores: np.ndarray) -> TargetFprThreshold:
        if self.method not in self.METHODS:
            raise ValueError(f"unknown threshold method {self.method!r}; use one of {', '.join(self.METHODS)}")
        _check_fpr(self.target_fpr)
        s = check_scores(scores)
        method = self.method
        if method == "auto":
            method = "quantile" if len(s) * self.target_fpr >= 1.0 else "gpd"
        est = QuantileThreshold(self.target_fpr) if method == "quantile" else GPDTailThreshold(self.target_fpr)
        self.estimator_ = est.fit(s)
        self.method_ = method
        self.threshold_ = est.threshold_
        self.center_ = est.center_
        self.n_samples_seen_ = est.n_samples_seen_
        self.warning_ = sample_size_warning(len(s), self.target_fpr)
        return self


def _check_labelled(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(int)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of equal length, got {s.shape} and {y.shape}")
    if not set(np.unique(y)) <= {0, 1} or y.min() == y.max():
        raise ValueError("labels must contain both 0 (normal) and 1 (anomalous)")
    return s, y


def _rates(s: np.ndarray, y: np.ndarray, thr: float) -> tuple[float, float, float]:
    """``(recall, fpr, precision)`` of the rule ``score >= thr``."""
    pred = s >= thr
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    recall = tp / int((y == 1).sum())
    fpr = fp / int((y == 0).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    return recall, fpr, precision


def recall_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Share of anomalous scores (label 1) at or above ``threshold``."""
    s, y = _check_labelled(scores, labels)
    return _rates(s, y, threshold)[0]


def recall_above(anomaly_scores: np.ndarray, threshold: float) -> float | None:
    """Share of anomaly scores at or above ``threshold`` (a frame alarms when ``score >= threshold``); ``None`` for
    no scores. The recall algan-calibrate prints, algan-bench and algan-eval report and ``--head auto`` ranks by."""
    a = np.asarray(anomaly_scores, dtype=np.float64)
    return float((a >= threshold).mean()) if a.size else None


def recall_at_fpr(normal_scores: np.ndarray, anomaly_scores: np.ndarray, target_fpr: float = 0.01,
                  method: str = "auto") -> float | None:
    """Recall at the threshold algan-calibrate would set for ``target_fpr`` on ``normal_scores``.

    The threshold is :class:`TargetFprThreshold` ``(target_fpr, method)`` fitted on the normal scores (the empirical
    order statistic when ``n * target_fpr >= 1``, else the generalised Pareto tail fit), and the recall is
    :func:`recall_above` of the anomaly scores at it: the share of defective frames a line calibrated at that
    false-alarm rate catches.

    Args:
        normal_scores: float (N,) scores of normal images not trained on (N >= 20, not all equal).
        anomaly_scores: float (M,) scores of defective images.
        target_fpr: per-frame false-alarm rate in (0, 0.5).

    Returns:
        the recall in [0, 1], or ``None`` without anomaly scores.

    Raises:
        ValueError: fewer than 20 normal scores, NaN/inf, constant scores, ``target_fpr`` outside (0, 0.5).
    """
    est = TargetFprThreshold(target_fpr, method).fit(normal_scores)
    return recall_above(anomaly_scores, est.threshold_)


class F1Threshold(_Fitted):
    """The threshold that maximises F1 on labelled scores (``sklearn.metrics.precision_recall_curve``).

    Attributes:
        threshold_: raw score (alarm when ``score >= threshold_``); ties go to the lowest such threshold.
        f1_, precision_, recall_, fpr_: at ``threshold_`` on the fitted data (in-sample).
        n_samples_seen_: number of scores.
    """

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> F1Threshold:
        from sklearn.metrics import precision_recall_curve

        s, y = _check_labelled(scores, labels)
        precision, recall, thresholds = precision_recall_curve(y, s)
        p, r = precision[:-1], recall[:-1]
        f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0.0)
        i = int(np.argmax(f1))
        self.threshold_ = float(thresholds[i])
        self.f1_ = float(f1[i])
        self.recall_, self.fpr_, self.precision_ = _rates(s, y, self.threshold_)
        self.n_samples_seen_ = len(s)
        return self


class YoudenThreshold(_Fitted):
    """The ROC point that maximises Youden's J = TPR - FPR (``sklearn.metrics.roc_curve``).

    Attributes:
        threshold_: raw score (alarm when ``score >= threshold_``).
        j_: Youden's J at ``threshold_``; recall_, fpr_, precision_: at ``threshold_`` (in-sample).
        n_samples_seen_: number of scores.
    """

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> YoudenThreshold:
        from sklearn.metrics import roc_curve

        s, y = _check_labelled(scores, labels)
        fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
        finite = np.isfinite(thresholds)
        j = np.where(finite, tpr - fpr, -np.inf)
        i = int(np.argmax(j))
        self.threshold_ = float(thresholds[i])
        self.j_ = float(j[i])
        self.recall_, self.fpr_, self.precision_ = _rates(s, y, self.threshold_)
        self.n_samples_seen_ = len(s)
        return self
