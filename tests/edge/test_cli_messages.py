"""Messages that said the wrong cause (issue 24, finding 8): each now names the true cause and the fix, in one line,
exit 2, before anything slow is loaded."""

from __future__ import annotations

import shutil
import time

import cv2
import numpy as np
from mapkit import grey_frame, make_map_bundle


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err.splitlines()[-1]


def test_train_data_that_is_a_file(tmp_path, capsys):
    from algan.cli.train import main

    one = tmp_path / "one.jpg"
    cv2.imwrite(str(one), grey_frame((64, 64)))
    assert main(["--data", str(one), "--out", str(tmp_path / "m")]) == 2
    line = _err(capsys)
    assert "is a file; pass the directory that holds the images" in line and "does not exist" not in line


def test_predict_names_the_true_cause(tmp_path, capsys):
    from algan.cli.predict import main

    img = tmp_path / "one.jpg"
    cv2.imwrite(str(img), grey_frame((64, 64)))
    bundle = make_map_bundle(tmp_path / "model")
    # a folder that is no bundle: not "export it first"
    (tmp_path / "notbundle").mkdir()
    assert main([str(tmp_path / "notbundle"), str(img)]) == 2
    line = _err(capsys)
    assert "is not a model bundle (no algan.json)" in line and "export" not in line
    # swapped arguments: not an ONNX Runtime INVALID_PROTOBUF
    assert main([str(img), str(bundle), "--out", str(tmp_path / "p1")]) == 2
    line = _err(capsys)
    assert "the model comes first" in line and f"algan-predict {bundle} {img}" in line
    assert "PROTOBUF" not in line.upper()
    # a bundle not exported yet: "export it first", with the command
    raw = tmp_path / "raw"
    shutil.copytree(bundle, raw)
    (raw / "model.onnx").unlink()
    assert main([str(raw), str(img), "--out", str(tmp_path / "p2")]) == 2
    assert f"export it first: algan-export {raw}" in _err(capsys)
    # --roi outside the image: names --roi, not the camera's roi setting
    assert main([str(bundle), str(img), "--roi", "50,50,100,100", "--out", str(tmp_path / "p3")]) == 2
    line = _err(capsys)
    assert "does not fit in a 64x64 frame" in line and "--roi" in line and "camera" not in line


def test_calibrate_refuses_a_bad_target_fpr_before_loading(tmp_path, capsys):
    from algan.cli.calibrate import main

    t0 = time.perf_counter()
    assert main([str(tmp_path / "no-such-model"), "--data", str(tmp_path), "--target-fpr", "2"]) == 2
    assert time.perf_counter() - t0 < 5.0
    line = _err(capsys)
    assert "--target-fpr is a per-frame false-alarm rate in (0, 1)" in line


def test_predict_skipped_masks_are_said_once(tmp_path, capsys):
    from algan.cli.predict import main

    bundle = make_map_bundle(tmp_path / "model")
    d = tmp_path / "Imgs"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"p{i}.jpg"), grey_frame((64, 64)))
        cv2.imwrite(str(d / f"p{i}.png"), np.zeros((64, 64), np.uint8))
    assert main([str(bundle), str(d), "--out", str(tmp_path / "pred")]) == 0
    err = capsys.readouterr().err
    assert err.count("skipped 3 files that are not images of the set: 3 masks") == 1
