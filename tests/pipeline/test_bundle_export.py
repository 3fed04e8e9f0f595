import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from algan.bundle import BundleError, load_bundle, load_samples
from algan.contract import load_manifest
from algan.data.datasets import load_dataset
from algan.export.onnx_export import export_onnx, ort_scores, torch_scores
from algan.model.evaluation.image_eval import evaluate

HEADS = ("algan", "mahalanobis", "knn")
SMALL = (64, 64)  # input size the bundles fixture trains at


@pytest.mark.parametrize("head", HEADS)
def test_bundle_round_trip_gives_identical_scores(bundles, synth_root, head, tmp_path):
    det, manifest = load_bundle(bundles[head])
    assert manifest.head.kind == head
    assert det.input_size == SMALL
    samples = load_samples(bundles[head])
    assert samples.dtype == np.uint8 and samples.shape[1:] == (*SMALL, 3)
    again, _ = load_bundle(bundles[head])
    np.testing.assert_array_equal(torch_scores(det, samples), torch_scores(again, samples))


@pytest.mark.parametrize("head", HEADS)
def test_calibration_puts_threshold_at_one(bundles, head):
    det, manifest = load_bundle(bundles[head])
    cal = manifest.calibration
    assert cal.threshold > cal.center
    raw = torch.tensor([cal.center, cal.threshold])
    np.testing.assert_allclose(det.calibration(raw).numpy(), [0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("head", HEADS)
def test_onnx_matches_torch_for_any_batch(bundles, head, tmp_path):
    det, manifest = load_bundle(bundles[head])
    path = export_onnx(det, manifest, tmp_path / "m.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["algan.model_id"] == manifest.model_id
    assert meta["algan.threshold"] == "1.0"
    inp = model.graph.input[0]
    assert inp.name == "images" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    rng = np.random.default_rng(0)
    imgs = np.concatenate([load_samples(bundles[head]), rng.integers(0, 256, (5, *SMALL, 3), dtype=np.uint8)])
    for n in (1, 5, len(imgs)):
        t = torch_scores(det, imgs[:n])
        o = ort_scores(path, imgs[:n], batch_size=n)
        assert o.shape == (n,) and o.dtype == np.float32
        assert np.max(np.abs(t - o)) <= 1e-4


def test_heads_separate_synthetic_defects(bundles, synth_root):
    ds = load_dataset(synth_root)
    res = evaluate(load_bundle(bundles["mahalanobis"])[0], ds, progress=False)
    assert res["n_normal"] == 10 and res["n_anomalous"] == 18
    assert res["auroc"] > 0.75, res


def test_bundle_errors_are_clear(bundles, tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_manifest(tmp_path / "missing")
    with pytest.raises(BundleError, match="not a model bundle"):
        load_manifest(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    m = json.loads((bundles["knn"] / "algan.json").read_text())
    m["format_version"] = 99
    (bad / "algan.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="format version 99"):
        load_manifest(bad)
    m["format_version"] = 1
    (bad / "algan.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="weights.safetensors is missing"):
        load_bundle(bad)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=300)


def test_cli_errors_are_one_line(tmp_path):
    r = _cli("algan.cli.train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "m"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr
    r = _cli("algan.cli.eval", str(tmp_path / "none"), "--data", str(tmp_path))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_cli_eval_json_and_export(bundles, synth_root):
    r = _cli("algan.cli.eval", str(bundles["knn"]), "--data", str(synth_root), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"auroc", "n_normal", "n_anomalous"} <= set(out) and out["n_anomalous"] == 18
    # at the bundle's own threshold (calibrated score 1.0): the shares of test normals and defects flagged
    ds = load_dataset(synth_root)
    scores = np.asarray(evaluate(load_bundle(bundles["knn"])[0], ds, progress=False)["scores"])
    y = np.array([s.label for s in ds.test])
    assert out["fpr_at_threshold"] == pytest.approx(float((scores[y == 0] >= 1.0).mean()), abs=1e-6)
    assert out["recall_at_threshold"] == pytest.approx(float((scores[y == 1] >= 1.0).mean()), abs=1e-6)
    assert out["threshold_target_fpr"] == 0.01 and 0.5 < out["recall_at_threshold"] <= 1.0
    r = _cli("algan.cli.export", str(bundles["knn"]), "--int8")  # no engine here; FP16 parity: tests/export
    assert r.returncode == 0, r.stderr
    assert "parity (onnx-fp32)" in r.stdout and "OK" in r.stdout
    assert "no TensorRT engine was built" in r.stdout or "engine" in r.stdout
    assert (bundles["knn"] / "model.onnx").is_file()
    assert load_manifest(bundles["knn"]).exports.onnx.parity_max_abs_diff <= 1e-4


@pytest.mark.parametrize("head", HEADS)
def test_saved_bundle_scores_like_the_trained_detector(synth_root, head, tmp_path):
    from algan.bundle import save_bundle
    from algan.features.backbone import BackboneSpec
    from algan.model.fit import FitSettings, fit_detector
    from algan.model.gan.feature import AlganConfig

    # the default ALGAN head (ensemble of 3 Ds behind the whitening), few steps
    algan = AlganConfig.preset(epochs=2, min_steps=0)
    settings = FitSettings(head=head, backbone=BackboneSpec(input_size=SMALL), algan=algan)
    fitted = fit_detector(load_dataset(synth_root), settings, progress=False)
    save_bundle(tmp_path / "b", fitted.detector, fitted.manifest, fitted.extra_tensors, fitted.samples)
    loaded, _ = load_bundle(tmp_path / "b")
    np.testing.assert_allclose(torch_scores(loaded, fitted.samples), torch_scores(fitted.detector, fitted.samples),
                               rtol=0, atol=1e-5)


def test_cli_ensemble_option(synth_root, tmp_path, capsys):
    from algan.cli.train import main

    base = ["--data", str(synth_root), "--epochs", "1", "--input-size", str(SMALL[0]), str(SMALL[1]), "--quiet"]
    assert main([*base, "--out", str(tmp_path / "one"), "--ensemble", "1"]) == 0
    settings = load_manifest(tmp_path / "one").head.settings
    assert settings["ensemble"] == 1 and settings["epochs"] == 1
    det, _ = load_bundle(tmp_path / "one")
    assert len(det.head.discriminators) == 1
    assert load_manifest(tmp_path / "one").backbone.pooling == "avgstd"  # the default features
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "zero"), "--ensemble", "0"]) == 2
    assert "--ensemble must be >= 1, got 0" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "knn"), "--head", "knn", "--ensemble", "2"]) == 2
    assert "--ensemble applies to the ALGAN-feature and ALGAN-patch heads" in capsys.readouterr().err
    assert not (tmp_path / "zero").exists() and not (tmp_path / "knn").exists()


def test_knn_metric_in_manifest_and_old_manifests_load_as_euclidean(bundles, synth_root, tmp_path):
    from algan.cli.train import main

    assert load_manifest(bundles["knn"]).head.settings["metric"] == "whitened"  # the default
    out = tmp_path / "euclid"
    assert main(["--data", str(synth_root), "--out", str(out), "--head", "knn", "--knn-metric", "euclidean",
                 "--input-size", str(SMALL[0]), str(SMALL[1]), "--quiet"]) == 0
    det, manifest = load_bundle(out)
    assert manifest.head.settings["metric"] == "euclidean" and det.head.whitening is None
    samples = load_samples(out)
    want = torch_scores(det, samples)
    m = json.loads((out / "algan.json").read_text())
    del m["head"]["settings"]["metric"]  # as written before the option existed
    (out / "algan.json").write_text(json.dumps(m))
    np.testing.assert_array_equal(torch_scores(load_bundle(out)[0], samples), want)


@pytest.mark.parametrize(("flags", "message"), [
    (["--knn-metric", "euclidean"], "--knn-metric applies to --head knn only (this run trains --head algan)"),
    (["--head", "mahalanobis", "--knn-metric", "whitened"], "--knn-metric applies to --head knn only"),
    (["--ensemble", "0"], "--ensemble must be >= 1, got 0"),
    (["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (["--variant", "image", "--ensemble", "2"], "--ensemble applies to the ALGAN-feature and ALGAN-patch heads"),
    (["--head", "knn", "--checkpoint", "ck"], "--checkpoint works with the ALGAN head only"),
])
def test_train_flag_errors_come_before_any_data_is_read(tmp_path, capsys, flags, message):
    """A bad command line is one clear line and exit 2, even when --data does not exist (checked before reading)."""
    from algan.cli.train import main

    missing = tmp_path / "no-such-data"
    assert main(["--data", str(missing), "--out", str(tmp_path / "out"), "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "no-such-data" not in err
    assert not (tmp_path / "out").exists()
