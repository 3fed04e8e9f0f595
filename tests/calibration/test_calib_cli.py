"""algan-calibrate end to end on a synthetic data set: written bundle, round trip, drift check, exit codes, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from calibkit import SMALL, snapshot

from algan.bundle import load_bundle, update_calibration
from algan.calibration import store
from algan.calibration.int8 import load_int8_set
from algan.cli.calibrate import main
from algan.contract import CALIBRATION_SCORES_FILE, INT8_SET_FILE, load_manifest

pytestmark = pytest.mark.slow


def run(capsys, *args: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("algan-calibrate: error: ")
    return lines[0]


def copy_images(src: list[Path], dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for p in src:
        shutil.copy(p, dst / p.name)
    return dst


def test_calibrate_writes_bundle_and_check_passes(bundle_copy, calib_data, capsys):
    report = bundle_copy / "report.png"
    rc, out, err = run(capsys, bundle_copy, "--data", calib_data, "--target-fpr", "0.05", "--fps", "25",
                       "--report", report, "--int8-size", "16")
    assert rc == 0, err
    assert "empirical quantile" in out and "per camera-hour at 25 fps" in out
    assert "no re-export needed" in out and "cameras[].threshold" in out
    files = sorted(f.name for f in bundle_copy.glob("model*.onnx"))
    assert f"the existing exports ({', '.join(files)})" in out if files else "exports made later" in out
    assert ">= 200 images" in err  # 30 calibration normals are too few for a stable 5 % estimate
    cal = load_manifest(bundle_copy).calibration.to_json()
    assert cal["target_fpr"] == 0.05 and cal["n_images"] == 30 and cal["fps"] == 25.0
    assert cal["method"] == "empirical quantile" and cal["data"]["n_valid"] == 30 and cal["data"]["layout"] == "mvtec"
    assert "test normals" in cal["source"] and cal["date"].endswith("Z")
    assert cal["false_alarms_per_camera_hour"] == pytest.approx(0.05 * 25 * 3600)
    assert report.stat().st_size > 10_000 and report.read_bytes()[:4] == b"\x89PNG"
    # INT8 set: contract shared with algan-export
    int8 = load_int8_set(bundle_copy)
    assert int8.dtype == np.uint8 and int8.shape == (16, *SMALL, 3)
    # the detector now outputs (raw - center) / (threshold - center): the threshold maps to exactly 1.0
    det, _ = load_bundle(bundle_copy)
    thr = torch.tensor([cal["threshold"], cal["center"]], dtype=torch.float32)
    assert det.calibration(thr).tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    with torch.no_grad():
        x = torch.from_numpy(int8[:4])
        raw = det.raw_scores(x).numpy()
        assert det(x).numpy() == pytest.approx((raw - cal["center"]) / (cal["threshold"] - cal["center"]), abs=1e-5)
    # drift check on the validation half of the same split: no drift, exit 0
    rc, out, err = run(capsys, bundle_copy, "--check", "--data", calib_data, "--json")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["drifted"] is False and rep["n_recent"] == 30 and rep["n_reference"] == 30


def test_check_detects_drift_exit_3(bundle_copy, calib_data, tmp_path, capsys):
    rc, _, err = run(capsys, bundle_copy, "--data", calib_data, "--target-fpr", "0.05")
    assert rc == 0, err
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    for p in sorted((calib_data / "test" / "good").glob("*.png"))[:30]:
        img = cv2.imread(str(p))
        cv2.imwrite(str(shifted / p.name), cv2.GaussianBlur(cv2.convertScaleAbs(img, alpha=1.4, beta=30), (5, 5), 0))
    before = snapshot(bundle_copy)
    rc, out, err = run(capsys, bundle_copy, "--check", "--data", shifted)
    assert rc == 3, err
    assert "DRIFT (exit 3)" in out and "KS test" in out
    assert snapshot(bundle_copy) == before  # --check writes nothing


def test_roi_is_recorded_and_sets_the_threshold_on_the_crop(bundle_copy, calib_data, capsys):
    from algan.calibration.pipeline import select_data
    from algan.model.evaluation.threshold import TargetFprThreshold
    from algan.runtime.preprocess import prepare_frame, read_image

    det, m0 = load_bundle(bundle_copy)
    assert m0.roi is None  # trained on whole frames (80 x 80)
    roi = (8, 4, 64, 64)
    rc, out, err = run(capsys, bundle_copy, "--data", calib_data, "--target-fpr", "0.05", "--roi", "8,4,64,64",
                       "--json")
    assert rc == 0, err
    assert "differs from the ROI the model was trained with" in err and "the bundle records the new one" in err
    m1 = load_manifest(bundle_copy)
    assert m1.roi == [8, 4, 64, 64]
    # the stored threshold is the one of the cropped calibration normals (not of the whole frames)
    split = select_data(calib_data, "auto", m0, None, 0)
    frames = np.stack([prepare_frame(read_image(p), SMALL, roi) for p in split.calib])
    with torch.no_grad():
        raw = det.raw_scores(torch.from_numpy(frames)).double().numpy()
    est = TargetFprThreshold(0.05).fit(raw)
    assert m1.calibration.threshold == pytest.approx(est.threshold_, rel=1e-6)
    assert m1.calibration.center == pytest.approx(est.center_, rel=1e-6)
    assert json.loads(out)["threshold"] == pytest.approx(m1.calibration.threshold)
    # --check takes the recorded ROI by default: the validation half of the same split does not drift
    rc, out, err = run(capsys, bundle_copy, "--check", "--data", calib_data, "--json")
    assert rc == 0, err
    assert json.loads(out)["drifted"] is False
    # --roi full records the whole frame again
    rc, _, err = run(capsys, bundle_copy, "--data", calib_data, "--target-fpr", "0.05", "--roi", "full")
    assert rc == 0, err
    assert load_manifest(bundle_copy).roi is None


def test_update_calibration_round_trip(bundle_copy):
    det0, m0 = load_bundle(bundle_copy)
    imgs = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, *SMALL, 3), dtype=np.uint8))
    with torch.no_grad():
        raw = det0.raw_scores(imgs).numpy()
    new_thr = float(raw[0])
    center = float(raw[0]) - 5.0
    update_calibration(bundle_copy, center, new_thr, {"target_fpr": 0.01, "method": "test"})
    det1, m1 = load_bundle(bundle_copy)
    with torch.no_grad():
        cal = det1(imgs).numpy()
    assert cal[0] == pytest.approx(1.0, abs=1e-5)  # the image scoring exactly at the new threshold -> 1.0
    assert cal == pytest.approx((raw - center) / 5.0, abs=1e-4)
    assert m1.calibration.method == "test" and m1.model_id == m0.model_id


def test_nothing_written_when_the_commit_fails(bundle_copy, calib_data, capsys, monkeypatch):
    before = snapshot(bundle_copy)

    def boom(*a, **k):
        raise PermissionError("disk says no")

    monkeypatch.setattr(store, "update_calibration", boom)
    rc, _, err = run(capsys, bundle_copy, "--data", calib_data, "--target-fpr", "0.05")
    assert rc == 2 and "disk says no" in one_error_line(err)
    assert snapshot(bundle_copy) == before
    assert not [p for p in bundle_copy.iterdir() if p.name.endswith(".tmp")]


def test_too_few_images_is_an_error(bundle_copy, calib_data, tmp_path, capsys):
    few = copy_images(sorted((calib_data / "test" / "good").glob("*.png"))[:10], tmp_path / "few")
    before = snapshot(bundle_copy)
    rc, _, err = run(capsys, bundle_copy, "--data", few, "--target-fpr", "0.01")
    line = one_error_line(err)
    assert rc == 2 and "only 10 readable calibration normals" in line and ">= 1000" in line
    assert snapshot(bundle_copy) == before


def test_constant_scores_and_corrupt_images(bundle_copy, calib_data, tmp_path, capsys, caplog):
    one = sorted((calib_data / "test" / "good").glob("*.png"))[0]
    same = tmp_path / "same"
    same.mkdir()
    for i in range(24):
        shutil.copy(one, same / f"{i:03d}.png")
    before = snapshot(bundle_copy)
    rc, _, err = run(capsys, bundle_copy, "--data", same)
    assert rc == 2 and "are equal" in one_error_line(err)
    # 3 corrupt files among 25: too many (> 1 %, the default --max-bad-fraction): each named once, then the list
    bad = copy_images(sorted((calib_data / "test" / "good").glob("*.png"))[:22], tmp_path / "bad")
    for i in range(3):
        (bad / f"zz{i}.png").write_bytes(b"not a png")
    rc, _, err = run(capsys, bundle_copy, "--data", bad)
    line = one_error_line(err)
    assert sum("skipped: cannot read image" in r.getMessage() for r in caplog.records) == 3
    assert rc == 2 and "3 of 25 calibration images cannot be read" in line and all(f"zz{i}.png" in line
                                                                                  for i in range(3))
    assert snapshot(bundle_copy) == before
    # 1 corrupt file in 41 under --max-bad-fraction 0.05: skipped and counted (dry run: nothing written)
    (bad / "zz1.png").unlink()
    (bad / "zz2.png").unlink()
    for p in sorted((calib_data / "test" / "good").glob("*.png"))[22:40]:
        shutil.copy(p, bad / p.name)
    rc, out, err = run(capsys, bundle_copy, "--data", bad, "--target-fpr", "0.05", "--dry-run",
                       "--max-bad-fraction", "0.05")
    assert rc == 0, err
    assert "1 unreadable skipped" in out and "skipped 1 unreadable" in err and "nothing written" in out
    assert snapshot(bundle_copy) == before


@pytest.mark.parametrize("case", ["no-bundle", "bad-manifest", "layout", "training-images", "no-reference",
                                  "stale-reference", "missing-data"])
def test_bad_input_gives_one_line_exit_2(case, bundle_copy, calib_data, tmp_path, capsys):
    args = [bundle_copy, "--data", calib_data]
    expect = ""
    if case == "no-bundle":
        args[0], expect = tmp_path / "nope", "does not exist"
    elif case == "bad-manifest":
        (bundle_copy / "algan.json").write_text("{not json")
        expect = "cannot read"
    elif case == "layout":
        args += ["--layout", "coco"]
        expect = "unknown layout 'coco'"
    elif case == "training-images":
        args[2], expect = calib_data / "train" / "good", "trained on"
    elif case == "no-reference":
        args += ["--check"]
        expect = "not calibrated with algan-calibrate"
    elif case == "stale-reference":
        (bundle_copy / CALIBRATION_SCORES_FILE).write_bytes(store.reference_bytes(np.arange(30.0), 0.0, 123.0, 30, "x"))
        args += ["--check"]
        expect = "belongs to another calibration"
    elif case == "missing-data":
        args[2], expect = tmp_path / "nothing-here", "does not exist"
    before = snapshot(bundle_copy) if bundle_copy.is_dir() else {}
    rc, out, err = run(capsys, *args)
    assert rc == 2
    assert expect in one_error_line(err)
    assert out == ""
    if bundle_copy.is_dir():
        assert snapshot(bundle_copy) == before
        assert not (bundle_copy / INT8_SET_FILE).exists()
