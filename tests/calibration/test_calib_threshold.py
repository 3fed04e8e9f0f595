"""Threshold estimators on synthetic scores with known quantiles, and on hand-made labelled scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from algan.model.evaluation.threshold import (
    F1Threshold,
    GPDTailThreshold,
    QuantileThreshold,
    TargetFprThreshold,
    YoudenThreshold,
    expected_alarms_interval,
    images_needed,
    recall_at,
    sample_size_warning,
)


def test_quantile_matches_known_normal_quantile():
    x = np.random.default_rng(0).normal(size=20000)
    est = QuantileThreshold(0.01).fit(x)
    assert est.threshold_ == pytest.approx(norm.isf(0.01), abs=0.05)
    assert est.center_ == pytest.approx(0.0, abs=0.03)
    assert est.n_samples_seen_ == 20000
    assert est.expected_fpr_ <= 0.01
    assert np.mean(x >= est.threshold_) == pytest.approx(0.01, abs=1e-3)


def test_quantile_order_statistic_is_conservative_in_expectation():
    # rank k = ceil((n+1)(1-a)): n=99, a=0.05 -> k=95, expected out-of-sample FPR 1 - 95/100 = 0.05
    est = QuantileThreshold(0.05).fit(np.arange(99, dtype=float))
    assert est.rank_ == 95 and est.threshold_ == 94.0 and est.expected_fpr_ == pytest.approx(0.05)


def test_quantile_refuses_unresolvable_rate():
    with pytest.raises(ValueError, match="cannot resolve"):
        QuantileThreshold(1e-3).fit(np.random.default_rng(1).normal(size=200))


def test_gpd_estimates_exponential_tail_beyond_the_sample():
    # Exp(1) is a GPD with shape 0 above any level; true 1e-4 quantile = ln(1e4) = 9.21, beyond the 5000 samples'
    # resolution (1/n = 2e-4)
    x = np.random.default_rng(0).exponential(1.0, 5000)
    est = GPDTailThreshold(1e-4).fit(x)
    true = math.log(1e4)
    assert est.threshold_ == pytest.approx(true, rel=0.15)
    assert abs(est.shape_) < 0.15
    assert est.scale_ == pytest.approx(1.0, rel=0.2)
    assert est.n_exceedances_ == 500
    # the fitted tail probability at the threshold is the target
    assert est.tail_probability(np.array([est.threshold_]))[0] == pytest.approx(1e-4, rel=1e-6)


def test_gpd_on_normal_scores_is_close_to_truth():
    x = np.random.default_rng(3).normal(size=3000)
    est = GPDTailThreshold(1e-3).fit(x)
    assert est.threshold_ == pytest.approx(norm.isf(1e-3), rel=0.1)
    assert est.shape_ < 0.1  # light (Gumbel-domain) tail


def test_auto_method_switches_at_one_over_n():
    x = np.random.default_rng(2).normal(size=500)
    assert TargetFprThreshold(0.01).fit(x).method_ == "quantile"
    est = TargetFprThreshold(0.001).fit(x)
    assert est.method_ == "gpd" and isinstance(est.estimator_, GPDTailThreshold)
    assert est.threshold_ > TargetFprThreshold(0.01).fit(x).threshold_


def test_too_few_images_warning_says_how_many_are_needed():
    assert images_needed(0.001) == 10000 and images_needed(0.05) == 200
    assert sample_size_warning(10000, 0.001) is None
    msg = sample_size_warning(166, 0.05)
    assert msg is not None and ">= 200 images" in msg
    est = TargetFprThreshold(0.05).fit(np.random.default_rng(0).normal(size=100))
    assert est.warning_ is not None and "200" in est.warning_


def test_bad_scores_are_refused():
    with pytest.raises(ValueError, match="all 50 normal scores are equal"):
        QuantileThreshold(0.05).fit(np.full(50, 3.0))
    with pytest.raises(ValueError, match="at least 20"):
        QuantileThreshold(0.1).fit(np.arange(10.0))
    with pytest.raises(ValueError, match="NaN"):
        QuantileThreshold(0.1).fit(np.r_[np.arange(30.0), np.nan])
    with pytest.raises(ValueError, match="target_fpr"):
        QuantileThreshold(0.7).fit(np.arange(30.0))
    with pytest.raises(ValueError, match="unknown threshold method"):
        TargetFprThreshold(0.1, method="magic").fit(np.arange(30.0))


def test_estimator_contract():
    est = TargetFprThreshold(target_fpr=0.02, method="gpd")
    assert clone(est).get_params() == {"target_fpr": 0.02, "method": "gpd"}
    assert vars(est) == {"target_fpr": 0.02, "method": "gpd"}  # __init__ stores parameters only
    for unfitted in (est, QuantileThreshold(), GPDTailThreshold(), F1Threshold(), YoudenThreshold()):
        with pytest.raises(NotFittedError, match="not fitted"):
            unfitted.predict(np.zeros(3))
    fitted = QuantileThreshold(0.1).fit(np.arange(100.0))
    assert fitted.predict(np.array([fitted.threshold_ - 1, fitted.threshold_])).tolist() == [0, 1]


def test_f1_and_youden_on_hand_made_scores():
    # normals 1..8, anomalies 6.5, 9, 10.
    #   thr 9:   TP 2, FP 0 -> precision 1, recall 2/3, F1 0.8; TPR 2/3, FPR 0 -> J 0.667
    #   thr 6.5: TP 3, FP 2 -> precision 0.6, recall 1, F1 0.75; TPR 1, FPR 2/8 -> J 0.75
    scores = np.array([1, 2, 3, 4, 5, 6, 7, 8, 6.5, 9, 10], dtype=float)
    labels = np.array([0] * 8 + [1] * 3)
    f1 = F1Threshold().fit(scores, labels)
    assert f1.threshold_ == 9.0 and f1.f1_ == pytest.approx(0.8)
    assert f1.recall_ == pytest.approx(2 / 3) and f1.fpr_ == 0.0 and f1.precision_ == 1.0
    yj = YoudenThreshold().fit(scores, labels)
    assert yj.threshold_ == 6.5 and yj.j_ == pytest.approx(0.75)
    assert yj.recall_ == 1.0 and yj.fpr_ == pytest.approx(0.25)
    assert recall_at(scores, labels, 8.5) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="both 0"):
        F1Threshold().fit(scores[:8], labels[:8])


def test_expected_alarms_interval_matches_resampling():
    # threshold = order statistic of n_calib normals; count on n_new new normals is beta-binomial
    rng = np.random.default_rng(0)
    n_cal, n_new, a = 166, 167, 0.05
    rank = QuantileThreshold(a).fit(np.arange(n_cal, dtype=float)).rank_
    lo, hi = expected_alarms_interval(n_cal, rank, n_new, a)
    counts = []
    for _ in range(2000):
        x = rng.normal(size=n_cal + n_new)
        thr = np.sort(x[:n_cal])[rank - 1]
        counts.append(int((x[n_cal:] >= thr).sum()))
    inside = np.mean([lo <= c <= hi for c in counts])
    assert 0.93 <= inside <= 0.99
    blo, bhi = expected_alarms_interval(n_cal, None, n_new, a)  # plain binomial: narrower
    assert bhi - blo < hi - lo


def test_recall_at_fpr_is_recall_at_the_calibrate_threshold():
    from algan.model.evaluation.threshold import TargetFprThreshold, recall_above, recall_at_fpr

    normals = np.arange(1.0, 201.0)  # 200 scores: the 1 % threshold is the order statistic of rank 199
    thr = TargetFprThreshold(0.01).fit(normals).threshold_
    assert thr == 199.0
    anomalies = np.array([198.5, 199.0, 250.0, 10.0])
    assert recall_at_fpr(normals, anomalies, 0.01) == recall_above(anomalies, thr) == 0.5
    assert recall_at_fpr(normals, np.array([]), 0.01) is None
    with pytest.raises(ValueError, match="at least 20"):
        recall_at_fpr(normals[:10], anomalies, 0.01)
