"""The pixel threshold end to end with a real patch head: set by algan-train's initial calibration and by
algan-calibrate, recorded in algan.json and in the exported graph's metadata, read back by the runtime (Inferencer),
and the mask F1 of algan-eval / algan-bench at the calibrated thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from algan.contract import DEFAULT_PIXEL_FPR, KEY_PIXEL_THRESHOLD, load_manifest
from algan.model.evaluation.pixel_metrics import MaskF1

SIZE = 64


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from algan.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("pixthr") / "metal"
    generate_dataset(root, texture="metal", n_train=30, n_test_good=100, n_test_defect=8, size=96, seed=5)
    return root


@pytest.fixture(scope="module")
def exported(synth, tmp_path_factory):
    """A PaDiM patch bundle at 64 px, exported (model.onnx) before any re-calibration."""
    from algan.cli.export import main as export_main
    from algan.cli.train import main as train_main

    out = tmp_path_factory.mktemp("pixthr-model") / "padim"
    assert train_main(["--data", str(synth), "--out", str(out), "--variant", "patch", "--head", "padim",
                       "--input-size", str(SIZE), str(SIZE), "--quiet"]) == 0
    assert export_main([str(out)]) == 0
    return out


def test_mask_f1_counts_pooled_pixels_and_only_flagged_images():
    maps = np.zeros((3, 4, 4), np.float32)
    masks = np.zeros((3, 4, 4), bool)
    maps[0, :2, :2] = 2.0  # image 0 (flagged): predicts 4 pixels, 2 of them on its 3-pixel defect
    masks[0, 0, :2] = masks[0, 3, 3] = True
    maps[1, :, :] = 2.0  # image 1: below the image threshold, its mask is empty: its 1 defect pixel is missed
    masks[1, 1, 1] = True
    f1 = MaskF1(level=1.0, image_threshold=1.0)
    f1.add(maps[:2], masks[:2], np.array([1.5, 0.5]))
    f1.add(maps[2:], masks[2:], np.array([0.0]))  # a normal image, nothing predicted
    assert (f1.tp, f1.fp, f1.fn) == (2, 2, 2)
    assert f1.f1() == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))
    assert MaskF1(1.0, 1.0).f1() is None  # nothing to count: undefined
    with pytest.raises(ValueError, match="scores"):
        f1.add(maps, masks, np.array([1.0]))


@pytest.mark.slow
def test_the_pixel_threshold_round_trips_through_manifest_graph_and_runtime(exported, synth, tmp_path):
    import algan
    from algan.cli.calibrate import main as calibrate_main
    from algan.runtime.runners.calibration import pixel_level, read_graph_metadata

    cal = load_manifest(exported).calibration
    # algan-train's initial calibration: the default rate over the held-out normals' map cells
    assert cal.pixel_target_fpr == DEFAULT_PIXEL_FPR and cal.pixel_threshold is not None and cal.n_pixels > 0
    assert cal.n_pixels == cal.n_images * 16 * 16  # 64 px input, maps of 16 x 16 cells
    meta = read_graph_metadata(exported / "model.onnx")
    assert float(meta[KEY_PIXEL_THRESHOLD]) == pytest.approx(cal.pixel_level, rel=1e-6)
    inf = algan.Inferencer(exported)
    assert inf.pixel_threshold == pytest.approx(cal.pixel_level, rel=1e-6)
    inf.close()

    # algan-calibrate on the test split's normals (half of them), another rate: a new pixel threshold in algan.json;
    # the graph keeps its export-time value and the runtime follows the bundle
    assert calibrate_main([str(exported), "--data", str(synth), "--target-fpr", "0.05", "--pixel-fpr", "0.02",
                           "--json"]) == 0
    new = load_manifest(exported).calibration
    assert new.pixel_target_fpr == 0.02 and new.pixel_threshold != cal.pixel_threshold
    assert new.n_pixels == 50 * 16 * 16  # 100 test normals, half of them calibrate
    # the achieved rate on the other half is recorded; it is of the stated order only: the cells of one image are
    # correlated, and a few odd normal images of this synthetic set (maps above the image threshold everywhere) hold
    # 1 % of the cells each, so 50 images measure it coarsely (measured 0.076 for 0.02; the rule's rate on
    # exchangeable maps: tests/edge/test_masks.py; on MTD: benchmarks/RESULTS.md)
    pv = json.loads((exported / "algan.json").read_text())["calibration"]["pixel_validation"]
    assert pv["n_pixels"] == 50 * 16 * 16 and 0.002 <= pv["fpr"] <= 0.1, pv
    assert float(read_graph_metadata(exported / "model.onnx")[KEY_PIXEL_THRESHOLD]) == pytest.approx(cal.pixel_level,
                                                                                                rel=1e-6)
    level, source = pixel_level(exported)
    assert level == pytest.approx(new.pixel_level, rel=1e-6) and "algan.json" in source
    inf = algan.Inferencer(exported)
    assert inf.pixel_threshold == pytest.approx(new.pixel_level, rel=1e-6)
    # the runtime's mask is the graph's map (re-mapped to the new calibration) at that level, on flagged frames
    import cv2

    from algan.data.datasets import load_dataset

    ds = load_dataset(synth)
    frames = [cv2.imread(str(s.path)) for s in ds.test]
    preds = inf.predict(frames)
    inf.close()
    for p in preds:
        assert (p.mask is not None) == p.is_anomalous == (p.region is not None)
        if p.mask is not None:
            assert p.mask.shape == (96, 96) and p.mask.dtype == np.uint8
            assert np.array_equal(p.mask > 0, p.anomaly_map >= inf.pixel_threshold)
            assert p.region.area == np.count_nonzero(p.mask)
    assert any(p.mask is not None for p in preds)

    # an old bundle (no pixel threshold in algan.json): the graph's value, re-mapped; without it either: 1.0
    data = json.loads((exported / "algan.json").read_text())
    for k in ("pixel_threshold", "pixel_target_fpr", "n_pixels", "pixel_validation"):
        data["calibration"].pop(k)
    (exported / "algan.json").write_text(json.dumps(data))
    level, source = pixel_level(exported)
    raw = cal.pixel_level * (cal.threshold - cal.center) + cal.center  # the graph's value in raw map units
    assert level == pytest.approx((raw - new.center) / (new.threshold - new.center), rel=1e-5)
    assert "graph" in source


@pytest.mark.slow
def test_eval_reports_mask_f1_at_the_calibrated_thresholds_and_says_when_it_falls_back(exported, synth, capsys):
    from algan.cli.eval import main as eval_main

    assert eval_main([str(exported), "--data", str(synth), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    level = load_manifest(exported).calibration.pixel_level
    if out["pixel_threshold_source"] == "bundle":
        assert out["pixel_threshold"] == pytest.approx(level, abs=1e-6)
    else:  # the round-trip test above removed the bundle's pixel threshold: the fallback is stated
        assert out["pixel_threshold"] == 1.0 and out["pixel_threshold_source"].startswith("fallback")
    assert out["mask_f1"] is not None and 0.0 < out["mask_f1"] <= 1.0
    assert out["pixel_auroc"] is not None


def test_bench_mask_f1_is_null_without_masks_and_calibrated_on_half_the_normals():
    import torch

    from algan.model.evaluation.patch_eval import calibrated_mask_f1

    rng = np.random.default_rng(0)
    n_normal, n_defect = 40, 10
    maps = rng.normal(0, 0.1, (n_normal + n_defect, 8, 8)).astype(np.float32)
    masks = np.zeros((n_normal + n_defect, 32, 32), bool)
    maps[n_normal:, 2:4, 2:4] = 5.0  # a clear defect on cells (2..3, 2..3) = pixels 8..15
    masks[n_normal:, 8:16, 8:16] = True
    scores = maps.reshape(len(maps), -1).max(1)
    labels = np.r_[np.zeros(n_normal, int), np.ones(n_defect, int)]
    assert calibrated_mask_f1(torch.from_numpy(maps), scores, None, labels) is None
    f1 = calibrated_mask_f1(torch.from_numpy(maps), scores, masks, labels, seed=3, pixel_fpr=0.01)
    # by hand: the thresholds from the seeded first half of the normals, F1 on everything else
    from algan.contract import empirical_threshold, pixel_threshold
    from algan.model.evaluation.pixel_metrics import upsample_maps

    calib = np.sort(np.random.default_rng(3).permutation(np.arange(n_normal))[: n_normal // 2])
    rest = np.setdiff1d(np.arange(len(maps)), calib)
    ref = MaskF1(pixel_threshold(maps[calib], 0.01).threshold, empirical_threshold(scores[calib], 0.01,
                                                                                    clip=True).threshold)
    ref.add(upsample_maps(maps[rest], (32, 32)), masks[rest], scores[rest])
    assert (ref.tp, ref.fn) == (n_defect * 64, 0) and ref.fp > 0  # every defect flagged, the bilinear fringe: FP
    assert f1 == pytest.approx(round(ref.f1(), 4)) and 0.5 < f1 < 1.0


def test_graph_metadata_records_the_pixel_threshold_for_graphs_with_maps_only():
    from algan.contract import graph_metadata, parse_manifest

    manifest = parse_manifest({"format_version": 1, "model_id": "m",
                               "calibration": {"center": 2.0, "threshold": 6.0, "pixel_threshold": 4.0}})
    assert KEY_PIXEL_THRESHOLD not in graph_metadata(manifest, (64, 64), 2.0, 4.0, 17, pixel_threshold=4.0,
                                                     version="0.1.0")
    meta = graph_metadata(manifest, (64, 64), 2.0, 4.0, 17, map_size=(16, 16), pixel_threshold=4.0, version="0.1.0")
    assert float(meta[KEY_PIXEL_THRESHOLD]) == 0.5 == manifest.calibration.pixel_level
    assert KEY_PIXEL_THRESHOLD not in graph_metadata(manifest, (64, 64), 2.0, 4.0, 17, map_size=(16, 16),
                                                     version="0.1.0")
