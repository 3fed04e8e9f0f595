"""The threshold rule: the one order statistic that training (``algan.model.fit``), re-calibration
(``algan.model.evaluation.threshold``) and every other "threshold at a target false-alarm rate" use;
:func:`pixel_threshold` applies it to the anomaly-map cells of normal images."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


# -- the threshold rule -----------------------------------------------------------------------------------------
def order_statistic_rank(n: int, target_fpr: float) -> int:
    """1-based rank ``k = ceil((n + 1)(1 - target_fpr))`` of the empirical threshold among ``n`` sorted normal
    scores. For exchangeable scores the expected false-alarm rate of ``X_(k)`` on new normal frames is
    ``1 - k / (n + 1) <= target_fpr`` (the split-conformal quantile, Vovk et al. 2005). May exceed ``n``: the rate
    cannot then be resolved from ``n`` scores (it needs ``n >= 1 / target_fpr - 1``)."""
    return math.ceil((n + 1) * (1.0 - target_fpr) - 1e-9)


@dataclass(frozen=True)
class EmpiricalThreshold:
    """Result of :func:`empirical_threshold`.

    Attributes:
        threshold: the chosen order statistic (score units of the input).
        rank: its 1-based rank among the sorted scores.
        expected_fpr: ``1 - rank / (n + 1)``, the expected per-frame false-alarm rate on new normal frames.
        resolved: False when ``target_fpr`` needed a rank above ``n`` and the maximum was used instead (then
            ``expected_fpr`` is ``1 / (n + 1)``, above the target).
        needed: fewest scores that resolve ``target_fpr`` (:func:`scores_needed`).
    """

    threshold: float
    rank: int
    expected_fpr: float
    resolved: bool
    needed: int


def scores_needed(target_fpr: float) -> int:
    """Fewest normal scores ``n`` whose order statistic resolves ``target_fpr``: ``ceil(1 / target_fpr - 1)``
    (then ``order_statistic_rank(n, target_fpr) <= n``)."""
    return max(1, math.ceil(1.0 / target_fpr - 1.0 - 1e-9))


def empirical_threshold(scores: np.ndarray, target_fpr: float, *, clip: bool) -> EmpiricalThreshold:
    """The threshold at ``target_fpr`` (per frame): order statistic ``X_(k)`` with :func:`order_statistic_rank`.

    Args:
        scores: finite normal scores, 1-D (any float dtype).
        target_fpr: per-frame false-alarm rate in (0, 1).
        clip: what happens when ``n`` scores cannot resolve the rate (``k > n``): True takes the maximum and
            reports ``resolved=False`` (training, where too few held-out images must not stop a run; the caller
            says so); False raises.

    Raises:
        ValueError: empty or non-finite scores, ``target_fpr`` outside (0, 1), or (``clip=False``) too few scores.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    n = len(s)
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must lie in (0, 1), got {target_fpr}")
    if n == 0 or not np.all(np.isfinite(s)):
        raise ValueError(f"need finite normal scores for a threshold, got {n} values "
                         f"({int((~np.isfinite(s)).sum())} NaN/inf)")
    k = order_statistic_rank(n, target_fpr)
    need = scores_needed(target_fpr)
    if k > n:
        if not clip:
            raise ValueError(f"{n} normal scores cannot resolve a per-frame FPR of {target_fpr:g} empirically "
                             f"(needs >= {need})")
        return EmpiricalThreshold(float(s[-1]), n, 1.0 / (n + 1), False, need)
    return EmpiricalThreshold(float(s[k - 1]), k, 1.0 - k / (n + 1), True, need)


def center_and_threshold(scores: np.ndarray, target_fpr: float) -> tuple[float, float, EmpiricalThreshold]:
    """``(center, threshold, rule)`` of normal raw scores float (N,): their median and :func:`empirical_threshold`
    (clipped to the maximum when ``N`` cannot resolve ``target_fpr``; ``rule.resolved`` says so), the threshold
    widened to the median plus the scores' standard deviation when it does not exceed the median (tied scores), so
    ``(raw - center) / (threshold - center)`` stays a valid calibrated scale.

    Raises:
        ValueError: as :func:`empirical_threshold`.
    """
    s = np.asarray(scores, dtype=np.float64)
    rule = empirical_threshold(s, target_fpr, clip=True)
    center, threshold = float(np.median(s)), float(rule.threshold)
    if threshold <= center:
        threshold = center + (float(np.std(s)) or abs(center) * 1e-3 or 1e-3)
    return center, threshold, rule


#: default per-pixel false-positive rate of the pixel threshold (share of normal map cells at or above it): the lowest
#: rate measured, the best mask F1 on every dev set with flagged defects (benchmarks/pixel_threshold.py, RESULTS.md
#: "Session 11"); still resolved by 2 held-out images of 56 x 56 cells
DEFAULT_PIXEL_FPR = 0.001
#: default share of the normal training images held out to set the threshold on (algan-train --holdout)
DEFAULT_HOLDOUT = 0.2


def pixel_threshold(maps: np.ndarray, target_fpr: float = DEFAULT_PIXEL_FPR) -> EmpiricalThreshold:
    """The pixel threshold: :func:`empirical_threshold` (the one threshold rule) over every cell of the anomaly maps
    of held-out normal images, so that a share of at most ``target_fpr`` of normal map cells (hence, up to the
    bilinear upsampling, of normal ROI pixels) lies at or above it.

    Args:
        maps: raw (uncalibrated) anomaly maps of normal images, float (N, h, w) (any shape; all cells are pooled).
        target_fpr: per-pixel false-positive rate in (0, 1), e.g. :data:`DEFAULT_PIXEL_FPR`.

    Returns:
        The :class:`EmpiricalThreshold` in raw map units; clipped to the maximum (``resolved=False``) when the
        cells are too few for the rate.

    Raises:
        ValueError: no cells, NaN/inf values, ``target_fpr`` outside (0, 1).
    """
    return empirical_threshold(np.asarray(maps, dtype=np.float32).ravel(), target_fpr, clip=True)
