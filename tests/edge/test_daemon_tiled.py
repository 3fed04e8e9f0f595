"""A tiled bundle end to end: algan-train --tiles (trained on tiles, calibrated on stitched frames), the manifest,
algan-export, then the same frame scored by torch, the Inferencer (algan-predict) and the daemon against a real
broker: the same score within a tolerance."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from edgekit import edge_config, run_cli, run_edge, write_config

SIZE = 64
TILES = "2x2"


@pytest.fixture(scope="module")
def tiled(tmp_path_factory) -> tuple[Path, Path]:
    """(exported tiled PaDiM bundle at 64 px, the synthetic data: 160 px frames, 2x2 tiles)."""
    from algan.cli.export import main as export_main
    from algan.cli.train import main as train_main
    from algan.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("tiled")
    data = root / "data"
    generate_dataset(data, texture="metal", n_train=20, n_test_good=20, n_test_defect=2, size=160, seed=3)
    out = root / "bundle"
    rc = train_main(["--data", str(data), "--out", str(out), "--variant", "patch", "--head", "padim",
                     "--input-size", str(SIZE), str(SIZE), "--tiles", TILES, "--tile-overlap", "0.25", "--quiet"])
    assert rc == 0
    assert export_main([str(out), "--no-simplify"]) == 0
    return out, Path(data)


def _test_images(data: Path) -> list[Path]:
    return sorted(p for p in (data / "test").rglob("*.png"))


def test_tiled_bundle_manifest_calibration_on_stitched_frames_and_torch_vs_onnx(tiled):
    from algan.bundle import load_bundle
    from algan.contract import load_manifest
    from algan.data.datasets import load_dataset
    from algan.model.fit import frame_raw_scores, split_holdout
    from algan.runtime.inference import Inferencer
    from algan.runtime.preprocess import prepare_roi, read_image
    from algan.runtime.tiling import TileSpec

    bundle, data = tiled
    m = load_manifest(bundle)
    assert m.tiling is not None and m.tiling.grid == [2, 2] and m.tiling.overlap == 0.25
    assert "2x2 tiles, stitched" in m.calibration.source
    det, _ = load_bundle(bundle)
    assert det.tiling == TileSpec(2, 2, 0.25)
    # the calibration centre is the median of the held-out normals' STITCHED frame scores (not of single tiles)
    _, hold = split_holdout(list(load_dataset(data).train), 0.2, 0)
    assert m.calibration.center == pytest.approx(float(np.median(frame_raw_scores(det, hold))), rel=1e-5, abs=1e-6)
    # the pixel threshold of the defect mask: the empirical rule over every cell of the held-out normals' stitched maps
    from algan.contract import pixel_threshold
    from algan.model.fit import frame_outputs_of

    hold_scores, cells = frame_outputs_of(det, hold)
    np.testing.assert_allclose(hold_scores, frame_raw_scores(det, hold), rtol=1e-6)
    assert cells.size == len(hold) * 28 * 28  # 160 px frames, 2x2 tiles of 16x16 cells stitched into 28x28
    assert m.calibration.pixel_threshold == pytest.approx(pixel_threshold(cells).threshold, rel=1e-5)
    assert (cells >= m.calibration.pixel_threshold).mean() <= 0.001 + 1.0 / cells.size
    assert Inferencer(bundle).pixel_threshold == pytest.approx(m.calibration.pixel_level, rel=1e-5)
    # the stored samples are tiles: what the per-tile graph sees
    paths = _test_images(data)
    frames = [read_image(p) for p in paths]
    ref = det.frame_scores([prepare_roi(f) for f in frames])
    inf = Inferencer(bundle)
    assert inf.tiling == TileSpec(2, 2, 0.25) and inf.has_maps
    preds = inf.predict(frames)
    np.testing.assert_allclose([p.score for p in preds], ref, rtol=1e-4, atol=1e-4)
    # the stitched map covers the whole 160 px frame: 2x2 tiles of 92 px, 16x16 cells each -> 28x28 cells
    assert preds[0].map_cells.shape == (28, 28) and preds[0].anomaly_map.shape == (160, 160)
    # the frame score is the head's reduction of the stitched map (PatchSpec default topk_mean 1 %)
    cells = preds[0].map_cells.ravel()
    k = int(np.ceil(0.01 * cells.size))
    assert preds[0].score == pytest.approx(float(np.sort(cells)[-k:].mean()), rel=1e-5)
    # defects score above normals on the whole (synthetic defects are large): the tiled path ranks them
    labels = np.array([0 if "good" in p.parts else 1 for p in paths])
    assert ref[labels == 1].mean() > ref[labels == 0].mean()


@pytest.mark.broker
def test_daemon_and_algan_predict_give_the_same_score_for_a_tiled_bundle(tiled, tmp_path, mqtt_broker,
                                                                          mqtt_collector):
    import shutil

    bundle, data = tiled
    folder = tmp_path / "inbox"
    folder.mkdir()
    for i, p in enumerate(_test_images(data)):
        shutil.copy(p, folder / f"f{i:03d}.png")
    col = mqtt_collector()
    cfg = edge_config(bundle, mqtt_broker, [{"name": "cam1", "source": str(folder)}])
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg), timeout=90)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "tiles every frame's roi into 2x2" in res.stderr
    assert col.wait_for(lambda ms: ms and ms[-1].topic.endswith("/status") and ms[-1].payload == "offline")
    daemon = {json.loads(m.payload)["file"]: json.loads(m.payload)["score"] for m in col.on("cam1/score")}
    run = run_cli("algan.cli.predict", str(bundle), str(folder), "--out", str(tmp_path / "pred"), timeout=90)
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "pred" / "predictions.csv", newline="") as f:
        offline = {r["file"]: float(r["score"]) for r in csv.DictReader(f)}
    assert set(daemon) == set(offline) and len(offline) == 26
    for name, score in offline.items():
        assert daemon[name] == pytest.approx(score, rel=1e-4, abs=1e-4), name


def test_algan_calibrate_sets_the_threshold_of_a_tiled_bundle_on_stitched_frame_scores(tiled, tmp_path):
    import shutil

    from algan.bundle import load_bundle
    from algan.calibration.int8 import load_int8_set
    from algan.cli.calibrate import main as calibrate_main
    from algan.contract import load_manifest
    from algan.data.datasets import load_dataset
    from algan.runtime.preprocess import prepare_roi, read_image

    src, data = tiled
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    assert calibrate_main([str(bundle), "--data", str(data), "--target-fpr", "0.1", "--method", "quantile",
                           "--calib-fraction", "1.0", "--json"]) == 0
    m = load_manifest(bundle)
    det, _ = load_bundle(bundle)
    # the new centre is the median of the stitched frame scores of the normals it was calibrated on
    ds = load_dataset(data)
    normals = [s.path for s in ds.test if s.label == 0]
    raw = det.frame_raw_scores([prepare_roi(read_image(p)) for p in normals])
    assert m.calibration.center == pytest.approx(float(np.median(raw)), rel=1e-5, abs=1e-6)
    # the INT8 set holds tiles at the model input (what the per-tile graph sees)
    int8 = load_int8_set(bundle)
    assert int8 is not None and int8.shape[1:] == (SIZE, SIZE, 3)


def test_calibrating_a_tiled_bundle_fits_the_pixel_threshold_on_stitched_maps(tiled, tmp_path):
    """algan-calibrate on a tiled patch bundle: the pixel threshold is the one rule over every cell of the stitched
    frame maps of the calibration normals, and algan-predict's Prediction carries its level and a mask of the ROI's
    size."""
    import shutil

    from algan.bundle import load_bundle
    from algan.calibration.scoring import score_images
    from algan.cli.calibrate import main as calibrate_main
    from algan.contract import load_manifest
    from algan.runtime.inference import Inferencer
    from algan.runtime.preprocess import read_image

    src, data = tiled
    bundle = tmp_path / "bundle"
    shutil.copytree(src, bundle)
    normals = tmp_path / "normals"  # 40 normal frames (a folder of images): 20 calibrate, 20 validate
    normals.mkdir()
    for i, p in enumerate(sorted((data / "train").rglob("*.png")) + sorted((data / "test" / "good").glob("*.png"))):
        shutil.copy(p, normals / f"{i:03d}.png")
    assert calibrate_main([str(bundle), "--data", str(normals), "--target-fpr", "0.1", "--pixel-fpr", "0.01"]) == 0
    cal = load_manifest(bundle).calibration
    info = cal.to_json()
    assert cal.pixel_threshold is not None and info["pixel_target_fpr"] == 0.01
    # cells of the stitched maps: 160 px frames in 2x2 tiles of 64 px input -> more cells per frame than one tile's map
    det, _ = load_bundle(bundle)
    cells = score_images(det, sorted(normals.glob("*.png")), with_maps=True).maps
    per_frame = cells.size // 40
    assert cells.ndim == 1 and cells.size == 40 * per_frame and per_frame > int(np.prod(det.map_size))
    assert info["n_pixels"] == info["n_images"] * per_frame
    assert info["n_images"] == 40  # a folder of normals: all calibrate, in-sample
    assert 0 < (cells >= cal.pixel_threshold).mean() <= 0.01  # at most the asked share of their cells reaches it
    inf = Inferencer(str(bundle))
    assert inf.pixel_threshold == pytest.approx(cal.pixel_level, rel=1e-5)
    frame = read_image(sorted((data / "test").rglob("*.png"))[0])
    p = inf.predict(frame)
    assert p.mask is None or p.mask.shape == frame.shape[:2]


def test_algan_eval_gives_the_localisation_figures_of_a_tiled_bundle_from_its_stitched_maps(tiled, capsys):
    from algan.bundle import load_bundle
    from algan.calibration.localisation import localisation_metrics
    from algan.cli.eval import main as eval_main
    from algan.data.datasets import load_dataset
    from algan.runtime.preprocess import prepare_roi, read_image

    bundle, data = tiled
    assert eval_main([str(bundle), "--data", str(data), "--json", "-q"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["pixel_auroc"] is not None and out["mask_f1"] is not None
    assert out["pixel_threshold_source"] == "bundle"  # the trained tiled bundle carries its own pixel threshold
    # the same figures from the stitched, calibrated frame maps (160 px frames -> 28x28 cells)
    det, _ = load_bundle(bundle)
    test = list(load_dataset(data).test)
    frames = det.frame_outputs([prepare_roi(read_image(s.path)) for s in test])
    center, scale = float(det.calibration.center), float(det.calibration.scale)
    maps = np.stack([(m - center) / scale for m in frames.maps]).astype(np.float32)
    assert maps.shape == (len(test), 28, 28)
    labels = np.array([s.label for s in test])
    ref = localisation_metrics(maps, labels, None, (frames.scores - center) / scale >= 1.0,
                               np.array([read_image(s.path).shape[:2] for s in test]))
    assert out["border_peak_fraction"] == pytest.approx(ref["border_peak_fraction"])
    assert out["peak_hit_rate"] is not None and 0.0 <= out["peak_hit_rate"] <= 1.0
