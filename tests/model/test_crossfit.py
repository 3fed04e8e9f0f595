"""Cross-fitted calibration (:func:`algan.model.fit.crossfit_scores`, :func:`algan.model.fit.calibration_mode`): the
shipped head is fitted on every training normal and its threshold still keeps the stated false-alarm rate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from algan.model.fit import CROSSFIT_FOLDS, FitSettings, calibration_mode, crossfit_scores, quantile_threshold
from algan.runtime.tiling import TileSpec


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    from algan.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synth") / "metal"
    generate_dataset(root, texture="metal", n_train=40, n_test_good=10, n_test_defect=6, size=96, seed=3)
    return root


def _head_scores(settings: FitSettings, train: np.ndarray, test: np.ndarray) -> np.ndarray:
    from algan.model.fit import fit_feature_head

    transform, head = fit_feature_head(settings, train)
    with torch.no_grad():
        return head(transform(torch.from_numpy(test))).numpy().astype(np.float64)


@pytest.mark.parametrize("head", ["mahalanobis", "knn"])
def test_crossfit_threshold_keeps_the_stated_false_alarm_rate_on_new_normals(head):
    # Gaussian normals, 40-d: a head fitted on all 400 scores its own images lower than new ones (it saw them);
    # the out-of-fold scores stand in for new images, so their 1 % threshold holds on 20,000 fresh normals
    rng = np.random.default_rng(0)
    cov = np.diag(np.linspace(0.2, 3.0, 40))
    train = rng.multivariate_normal(np.zeros(40), cov, 400).astype(np.float32)
    fresh = rng.multivariate_normal(np.zeros(40), cov, 20000).astype(np.float32)
    s = FitSettings(head=head, variant="feature", target_fpr=0.01, seed=1)
    oof = crossfit_scores(s, train, CROSSFIT_FOLDS)
    in_sample = _head_scores(s, train, train)
    new = _head_scores(s, train, fresh)
    _, thr = quantile_threshold(oof, 0.01)
    _, thr_in = quantile_threshold(in_sample, 0.01)
    fpr = float((new >= thr).mean())
    assert 0.003 <= fpr <= 0.02, fpr
    # the in-sample scores run lower than new normals' (kNN k=1 scores its own images 0: its in-sample threshold
    # would flag almost every new normal; the shrunk Mahalanobis gap is small at 400 images in 40-d)
    assert float((new >= thr_in).mean()) > (0.5 if head == "knn" else fpr)
    assert np.all(oof > 0) and np.median(oof) > np.median(in_sample)


def test_crossfit_scores_are_deterministic_and_refuse_too_few_images():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    s = FitSettings(head="knn", variant="feature", seed=3)
    np.testing.assert_array_equal(crossfit_scores(s, x, 10), crossfit_scores(s, x, 10))
    assert not np.array_equal(crossfit_scores(s, x, 10), crossfit_scores(FitSettings(head="knn", seed=4), x, 10))
    with pytest.raises(ValueError, match="too few for 10-fold"):
        crossfit_scores(s, x[:19], 10)


def test_calibration_mode_auto_cross_fits_the_cheap_feature_heads_only():
    n = 2 * CROSSFIT_FOLDS
    assert calibration_mode(FitSettings(head="mahalanobis"), trains=False, n_images=n) == "crossfit"
    assert calibration_mode(FitSettings(head="knn"), trains=False, n_images=n) == "crossfit"
    assert calibration_mode(FitSettings(head="algan"), trains=True, n_images=n) == "holdout"
    assert calibration_mode(FitSettings(head="padim", variant="patch"), trains=False, n_images=n) == "holdout"
    assert calibration_mode(FitSettings(head="knn", tiling=TileSpec(2, 2)), trains=False, n_images=n) == "holdout"
    # no hold-out: cross-fitting is the calibration that does not score the head's own training images
    assert calibration_mode(FitSettings(head="knn", holdout=0.0), trains=False, n_images=n) == "crossfit"
    assert calibration_mode(FitSettings(head="knn"), trains=False, n_images=n - 1) == "holdout"
    assert calibration_mode(FitSettings(head="knn", calibration="holdout"), trains=False, n_images=n) == "holdout"
    assert calibration_mode(FitSettings(head="algan", calibration="crossfit"), trains=True, n_images=n) == "crossfit"
    with pytest.raises(ValueError, match="feature variant on whole images"):
        calibration_mode(FitSettings(head="padim", variant="patch", calibration="crossfit"), False, n)
    with pytest.raises(ValueError, match="needs at least 20"):
        calibration_mode(FitSettings(head="knn", calibration="crossfit"), False, n - 1)
    with pytest.raises(ValueError, match="must be one of"):
        calibration_mode(FitSettings(head="knn", calibration="kfold"), False, n)


def test_algan_train_fits_the_cheap_head_on_every_normal_and_records_the_crossfit(synth_root, tmp_path: Path):
    from algan.cli.train import main

    common = ["--data", str(synth_root), "--head", "knn", "--input-size", "64", "64", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "cf")]) == 0
    assert main([*common, "--out", str(tmp_path / "ho"), "--calibration", "holdout"]) == 0
    cf = json.loads((tmp_path / "cf" / "algan.json").read_text())
    ho = json.loads((tmp_path / "ho" / "algan.json").read_text())
    assert (cf["training"]["n_train"], cf["training"]["n_holdout"], cf["training"]["crossfit_folds"]) == (40, 0, 10)
    assert cf["calibration"]["n_images"] == 40 and "10-fold cross-fit" in cf["calibration"]["source"]
    assert (ho["training"]["n_train"], ho["training"]["n_holdout"]) == (32, 8)
    assert "crossfit_folds" not in ho["training"] and ho["calibration"]["source"] == "held-out training normals"
    # kNN scores its own training images ~0: the export's parity frames are unseen ones, and the graph's distances
    # of near-duplicates carry no cancellation error (FP32 parity 1e-4, as for any bundle)
    from algan.contract import load_manifest
    from algan.export.pipeline import ExportOptions, export_bundle

    export_bundle(ExportOptions(tmp_path / "cf", simplify=False), say=lambda line: None)
    assert load_manifest(tmp_path / "cf").exports.onnx.parity_max_abs_diff <= 1e-4


def test_algan_train_refuses_crossfit_where_it_does_not_apply(tmp_path: Path, capsys):
    from algan.cli.train import main

    (tmp_path / "data").mkdir()
    rc = main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "m"), "--variant", "patch", "--head",
               "padim", "--calibration", "crossfit"])
    assert rc != 0
    assert "--calibration crossfit works with --variant feature" in capsys.readouterr().err


def test_crossfit_trains_an_algan_head_per_fold_when_asked(synth_root, tmp_path: Path):
    from algan.cli.train import main

    rc = main(["--data", str(synth_root), "--out", str(tmp_path / "a"), "--head", "algan", "--epochs", "1",
               "--ensemble", "1", "--calibration", "crossfit", "--input-size", "64", "64", "--quiet"])
    assert rc == 0
    m = json.loads((tmp_path / "a" / "algan.json").read_text())
    assert (m["training"]["n_train"], m["training"]["crossfit_folds"], m["calibration"]["n_images"]) == (40, 10, 40)


def test_crossfit_without_a_holdout_and_its_folds_do_not_depend_on_the_split(synth_root, tmp_path: Path):
    from algan.cli.train import main

    common = ["--data", str(synth_root), "--head", "mahalanobis", "--input-size", "64", "64", "--quiet"]
    for name, extra in (("h0", ["--holdout", "0"]), ("h2", []), ("h5", ["--holdout", "0.5"])):
        assert main([*common, "--out", str(tmp_path / name), *extra]) == 0
    cal = {n: json.loads((tmp_path / n / "algan.json").read_text())["calibration"] for n in ("h0", "h2", "h5")}
    assert cal["h0"]["n_images"] == 40 and "cross-fit" in cal["h0"]["source"]
    # the same 40 normals in the same folds, whatever --holdout drew: the same threshold
    assert cal["h0"]["threshold"] == pytest.approx(cal["h2"]["threshold"], rel=1e-6)
    assert cal["h5"]["threshold"] == pytest.approx(cal["h2"]["threshold"], rel=1e-6)


def test_crossfit_names_the_fold_size_for_a_large_knn_k():
    x = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    with pytest.raises(ValueError, match=r"--knn-k 37 is more than the 36 images each cross-fitted head holds"):
        crossfit_scores(FitSettings(head="knn", knn_k=37), x, 10)
