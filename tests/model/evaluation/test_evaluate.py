"""Paired AUROC comparison of two heads (algan.model.evaluation.image_eval.paired_auroc_difference) and the bench's
use of it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from algan.model.evaluation.image_eval import paired_auroc_difference


def _data(seed: int = 0, n: int = 300):
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % 2).astype(int)
    strong = y * 1.5 + rng.normal(size=n)  # AUROC ~0.86
    weak = y * 0.3 + rng.normal(size=n)  # AUROC ~0.58
    return y, strong, weak


def test_difference_is_the_auroc_difference_and_a_real_gap_is_resolved():
    y, strong, weak = _data()
    d, lo, hi = paired_auroc_difference(y, strong, weak, n_boot=500)
    assert d == pytest.approx(roc_auc_score(y, strong) - roc_auc_score(y, weak), abs=1e-12)
    assert d > 0.15 and 0.0 < lo < d < hi  # the interval excludes 0 for a gap this large
    d2, lo2, hi2 = paired_auroc_difference(y, weak, strong, n_boot=500)
    assert d2 == pytest.approx(-d) and lo2 == pytest.approx(-hi) and hi2 == pytest.approx(-lo)  # antisymmetric


def test_pairing_makes_a_tiny_systematic_gap_visible_and_a_tie_is_a_tie():
    y, strong, _ = _data(1)
    # the same scores with a small monotone distortion: identical ranking -> exactly 0, interval [0, 0]
    assert paired_auroc_difference(y, strong, np.exp(strong), n_boot=200) == (0.0, 0.0, 0.0)
    # two heads differing by independent noise: the interval contains 0
    rng = np.random.default_rng(2)
    a, b = strong + 0.05 * rng.normal(size=len(y)), strong + 0.05 * rng.normal(size=len(y))
    _, lo, hi = paired_auroc_difference(y, a, b, n_boot=500)
    assert lo <= 0.0 <= hi and hi - lo < 0.05


def test_errors_are_clear():
    y, a, b = _data()
    with pytest.raises(ValueError, match="differ in length"):
        paired_auroc_difference(y, a[:-1], b)
    with pytest.raises(ValueError, match="n_boot >= 100"):
        paired_auroc_difference(y, a, b, n_boot=10)
    with pytest.raises(ValueError, match="only one class"):
        paired_auroc_difference(np.zeros(len(y), int), a, b)


def test_bench_prints_each_head_against_the_best(capsys):
    from algan.cli.bench import print_comparisons

    y, strong, weak = _data()
    rows = [{"head": "algan[default]", "auroc": roc_auc_score(y, weak)},
            {"head": "mahalanobis", "auroc": roc_auc_score(y, strong)},
            {"head": "knn", "auroc": roc_auc_score(y, strong)}]
    print_comparisons(rows, [weak, strong, strong.copy()], y)
    out = capsys.readouterr().out
    assert "best head (mahalanobis)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert set(lines) == {"algan[default]", "knn"}
    assert "significant" in lines["algan[default]"] and "not resolved" in lines["knn"]
    assert "+0.0000  [+0.0000, +0.0000]" in lines["knn"]


def test_per_class_auroc_against_hand_counted_pairs():
    from algan.model.evaluation.image_eval import per_class_auroc

    y = np.array([0, 0, 0, 1, 1, 1, 1])
    classes = np.array(["good", "good", "good", "crack", "crack", "spot", "spot"])
    scores = np.array([0.1, 0.5, 0.9, 0.6, 1.0, 0.05, 0.2])
    out = per_class_auroc(y, classes, scores)
    assert list(out) == ["crack", "spot"]  # sorted, normal class left out
    # crack (0.6, 1.0) vs normals (0.1, 0.5, 0.9): 0.6 beats 2 of 3, 1.0 beats 3 of 3 -> 5 / 6
    assert out["crack"] == pytest.approx(5 / 6)
    # spot (0.05, 0.2) vs normals: 0.05 beats none, 0.2 beats 0.1 -> 1 / 6
    assert out["spot"] == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="both normal and anomalous"):
        per_class_auroc(np.ones(3), np.array(["a", "a", "b"]), np.arange(3.0))
