"""Drift check: KS test on shifted vs unchanged scores, Clopper-Pearson intervals, the compact reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.exceptions import NotFittedError

from algan.calibration.drift import MAX_REFERENCE_SCORES, DriftCheck, clopper_pearson, reference_scores


def test_clopper_pearson_known_values():
    lo, hi = clopper_pearson(0, 100)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 100), rel=1e-9)  # closed form for k = 0
    lo, hi = clopper_pearson(100, 100)
    assert hi == 1.0 and lo == pytest.approx(0.025 ** (1 / 100), rel=1e-9)
    ci = binomtest(7, 160).proportion_ci(0.95, method="exact")  # scipy's own exact interval
    assert clopper_pearson(7, 160) == pytest.approx((ci.low, ci.high), rel=1e-9)
    with pytest.raises(ValueError):
        clopper_pearson(5, 3)


def test_no_drift_on_the_same_distribution():
    rng = np.random.default_rng(0)
    ref = rng.normal(10, 2, 800)
    thr = float(np.quantile(ref, 0.95))
    rep = DriftCheck(alpha=0.01).fit(ref).check(rng.normal(10, 2, 300), thr, 0.05)
    assert not rep.drifted and rep.reasons == []
    assert rep.ks_pvalue > 0.01
    assert rep.fpr_low <= 0.05 <= rep.fpr_high
    assert rep.n_reference == 800 and rep.n_recent == 300


def test_drift_on_shifted_scores():
    rng = np.random.default_rng(1)
    ref = rng.normal(10, 2, 800)
    thr = float(np.quantile(ref, 0.95))
    rep = DriftCheck().fit(ref).check(rng.normal(11.5, 2, 300), thr, 0.05)
    assert rep.drifted
    assert rep.ks_pvalue < 1e-6 and rep.median_shift == pytest.approx(1.5, abs=0.4)
    assert any("moved" in r for r in rep.reasons) and any("more than the" in r for r in rep.reasons)
    assert rep.fpr > 0.15 and rep.fpr_low > 0.05 and rep.n_alarms > rep.max_expected_alarms


def test_false_alarm_rate_alone_can_flag_drift():
    # same distribution, but a threshold far below the one calibrated for 1 %: KS quiet, FPR far above target
    rng = np.random.default_rng(2)
    ref = rng.normal(size=500)
    rep = DriftCheck().fit(ref).check(rng.normal(size=400), float(np.quantile(ref, 0.8)), 0.01)
    assert rep.ks_pvalue > 0.01 and rep.drifted and len(rep.reasons) == 1


def test_alarm_count_limit_includes_threshold_uncertainty():
    # a threshold at order statistic 159 of 166 (5 %) has its own sampling error: on 167 new frames the beta-binomial
    # 99 % limit (19 alarms) is wider than the plain binomial one of Bin(167, 0.05) (15 alarms)
    rng = np.random.default_rng(4)
    ref = rng.normal(size=1000)
    recent = np.r_[np.full(22, 5.0), rng.normal(size=145) - 0.5]
    plain = DriftCheck().fit(ref).check(recent, 4.0, 0.05)
    beta = DriftCheck().fit(ref).check(recent, 4.0, 0.05, n_calib=166, rank=159)
    assert beta.max_expected_alarms > plain.max_expected_alarms
    assert plain.max_expected_alarms == 15


def test_reference_is_compact_and_sorted():
    x = np.random.default_rng(3).exponential(size=5000)
    ref = reference_scores(x)
    assert ref.dtype == np.float32 and len(ref) == MAX_REFERENCE_SCORES and np.all(np.diff(ref) >= 0)
    assert float(np.median(ref)) == pytest.approx(float(np.median(x)), rel=0.01)
    assert len(reference_scores(x[:300])) == 300


def test_drift_check_contract():
    with pytest.raises(NotFittedError):
        DriftCheck().check(np.arange(30.0), 1.0, 0.01)
    with pytest.raises(ValueError, match="equal"):
        DriftCheck().fit(np.ones(40))
