"""Has the normal-score distribution moved since calibration? (numpy/scipy, no torch, no I/O)

Two questions on recent normal frames, answered against the raw scores stored at calibration time:

1. Did the distribution move? Two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``, two-sided, exact or
   asymptotic p-value as scipy chooses): drift when ``p < alpha``.
2. What false-alarm rate does the current threshold give now? ``k`` of ``n`` recent normal frames score
   ``>= threshold``; the rate ``k / n`` comes with an exact Clopper-Pearson interval (Clopper & Pearson 1934):
   ``[Beta.ppf(a/2; k, n-k+1), Beta.ppf(1-a/2; k+1, n-k)]``. Drift also when ``k`` exceeds the ``1 - alpha``
   quantile of the count expected on an unchanged line: beta-binomial when the threshold is the empirical order
   statistic ``rank`` of ``n_calib`` scores (this includes the threshold's own sampling error), else binomial at
   the target rate (:func:`algan.model.evaluation.threshold.expected_alarms_interval`).

Either finding means: re-run ``algan-calibrate`` on recent normal frames (``algan-calibrate --check`` exits 3).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.exceptions import NotFittedError

from algan.model.evaluation.threshold import check_scores, expected_alarms_interval

#: most raw scores kept as the drift reference in the bundle (more are reduced to this many quantiles)
MAX_REFERENCE_SCORES = 1000


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided binomial confidence interval of a rate ``k / n``.

    Returns:
        ``(low, high)`` with ``low = 0`` when ``k == 0`` and ``high = 1`` when ``k == n``.

    Example:
        >>> [round(v, 4) for v in clopper_pearson(0, 100)]
        [0.0, 0.0362]
    """
    from scipy.stats import binomtest

    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def reference_scores(scores: np.ndarray, max_n: int = MAX_REFERENCE_SCORES) -> np.ndarray:
    """A compact reference of calibration scores, float32 sorted: all of them when ``n <= max_n``, else the
    ``max_n`` quantiles at levels ``(i + 0.5) / max_n`` (a KS test against them is slightly conservative)."""
    s = np.sort(np.asarray(scores, dtype=np.float64))
    if len(s) > max_n:
        s = np.quantile(s, (np.arange(max_n) + 0.5) / max_n)
    return s.astype(np.float32)


@dataclass
class DriftReport:
    """Outcome of :meth:`DriftCheck.check` (rates per frame).

    Attributes:
        n_reference, n_recent: sample sizes.
        ks_statistic, ks_pvalue: two-sample KS test of recent vs reference raw scores.
        alpha: significance level of the KS test.
        threshold: raw-score alarm threshold checked.
        target_fpr: per-frame false-alarm rate the threshold was calibrated for.
        n_alarms: recent normal frames with ``score >= threshold``.
        fpr, fpr_low, fpr_high: their rate and its Clopper-Pearson interval at ``confidence``.
        max_expected_alarms: ``1 - alpha`` quantile of the alarm count on an unchanged line.
        median_shift: median(recent) - median(reference), raw-score units.
        drifted: True when the KS test rejects or ``n_alarms > max_expected_alarms``.
        reasons: one line per finding.
    """

    n_reference: int
    n_recent: int
    ks_statistic: float
    ks_pvalue: float
    alpha: float
    threshold: float
    target_fpr: float
    n_alarms: int
    fpr: float
    fpr_low: float
    fpr_high: float
    confidence: float
    max_expected_alarms: int
    median_shift: float
    drifted: bool
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


class DriftCheck:
    """Compare recent normal raw scores with the calibration reference.

    Args:
        alpha: KS significance level (default 0.01: at most 1 % false drift reports on an unchanged line).
        confidence: level of the Clopper-Pearson interval of the false-alarm rate (default 0.95).

    Attributes:
        reference_: sorted float64 reference raw scores.
        n_samples_seen_: reference size.
    """

    def __init__(self, alpha: float = 0.01, confidence: float = 0.95) -> None:
        self.alpha = alpha
        self.confidence = confidence

    def fit(self, reference: np.ndarray) -> DriftCheck:
        self.reference_ = np.sort(check_scores(reference, "reference normal scores"))
        self.n_samples_seen_ = len(self.reference_)
        return self

    def check(self, recent: np.ndarray, threshold: float, target_fpr: float, n_calib: int | None = None,
              rank: int | None = None) -> DriftReport:
        """Test recent normal raw scores against the reference and the threshold.

        Args:
            recent: raw scores of recent normal frames, float (n,).
            threshold: the bundle's raw-score threshold.
            target_fpr: the per-frame false-alarm rate it was calibrated for.
            n_calib, rank: calibration size and order statistic of an empirical threshold (None for a tail fit).
        """
        from scipy.stats import ks_2samp

        if not hasattr(self, "reference_"):
            raise NotFittedError("this DriftCheck is not fitted yet; call fit(reference_scores) first")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")
        r = check_scores(recent, "recent normal scores")
        ks = ks_2samp(r, self.reference_)
        k = int((r >= threshold).sum())
        low, high = clopper_pearson(k, len(r), self.confidence)
        reasons = []
        if ks.pvalue < self.alpha:
            reasons.append(f"score distribution moved: KS D={ks.statistic:.3f}, p={ks.pvalue:.2g} < {self.alpha:g}")
        _, most = expected_alarms_interval(n_calib or 0, rank if n_calib else None, len(r), target_fpr,
                                           1.0 - 2.0 * self.alpha)
        if k > most:
            reasons.append(f"{k} of {len(r)} frames alarm (rate {k / len(r):.3g}, CI {low:.3g}-{high:.3g}): more "
                           f"than the {most} expected at most at target {target_fpr:g}")
        return DriftReport(
            n_reference=self.n_samples_seen_, n_recent=len(r), ks_statistic=float(ks.statistic),
            ks_pvalue=float(ks.pvalue), alpha=self.alpha, threshold=float(threshold), target_fpr=float(target_fpr),
            n_alarms=k, fpr=k / len(r), fpr_low=low, fpr_high=high, confidence=self.confidence,
            max_expected_alarms=most,
            median_shift=float(np.median(r) - np.median(self.reference_)), drifted=bool(reasons), reasons=reasons,
        )
