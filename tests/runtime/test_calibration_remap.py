"""Run-time re-calibration of exported scores (algan.runtime.runners.calibration) and its use by the ONNX Runtime
runner."""

from __future__ import annotations

import json
import logging

import numpy as np
import onnx
import pytest
from edgekit import make_model

from algan.contract import KEY_CAL_CENTER as CENTER_KEY
from algan.contract import KEY_CAL_SCALE as SCALE_KEY
from algan.runtime.runners.calibration import Remap, recalibrate, remap_for
from algan.runtime.runners.onnx import OnnxRuntimeRunner


def test_recalibrate_is_the_affine_map_between_calibrations():
    raw = np.array([0.5, 2.0, 6.0, 10.0])
    old_c, old_s, new_c, new_s = 2.0, 4.0, 1.0, 8.0
    old = ((raw - old_c) / old_s).astype(np.float32)
    got = recalibrate(old, old_c, old_s, new_c, new_s)
    np.testing.assert_allclose(got, (raw - new_c) / new_s, rtol=1e-6)
    assert got.dtype == np.float32
    assert recalibrate(1.0, 2.0, 4.0, 2.0, 4.0) == 1.0, "same calibration: identity"
    assert recalibrate(1.0, 0.0, 1.0, 0.0, 2.0) == 0.5, "threshold doubled: the old alarm level is now 0.5"
    with pytest.raises(ValueError, match="new_scale must be a positive finite number"):
        recalibrate(1.0, 0.0, 1.0, 0.0, 0.0)


def _bundle(tmp_path, meta: dict | None, center: float, threshold: float):
    bundle = tmp_path / "bundle"
    path = make_model(bundle / "model.onnx")
    if meta is not None:
        m = onnx.load(str(path))
        for k, v in meta.items():
            m.metadata_props.add(key=k, value=v)
        onnx.save(m, str(path))
    (bundle / "algan.json").write_text(json.dumps({"format_version": 1, "model_id": "tiny-1",
                                                         "calibration": {"center": center, "threshold": threshold}}))
    return bundle


def test_runner_remaps_when_the_bundle_was_recalibrated(tmp_path, caplog):
    bundle = _bundle(tmp_path, {CENTER_KEY: "0.0", SCALE_KEY: "1.0"}, center=0.0, threshold=2.0)
    with caplog.at_level(logging.INFO):
        runner = OnnxRuntimeRunner(bundle, threads=1)
    assert "re-calibrated after export" in caplog.text
    scores = runner(np.stack([np.full((64, 64, 3), v, np.uint8) for v in (128, 255)]))
    np.testing.assert_allclose(scores, [0.5, 255 / 256], rtol=1e-5)  # graph gives 1.0 and 1.99; new scale 2


@pytest.mark.parametrize(
    ("meta", "center", "threshold"),
    [(None, 0.0, 2.0), ({CENTER_KEY: "0.0", SCALE_KEY: "1.0"}, 0.0, 1.0), ({CENTER_KEY: "x", SCALE_KEY: "1"}, 0, 3)],
    ids=["no-metadata", "unchanged", "bad-metadata"],
)
def test_no_remap_without_metadata_or_change(tmp_path, meta, center, threshold):
    bundle = _bundle(tmp_path, meta, center, threshold)
    runner = OnnxRuntimeRunner(bundle, threads=1)
    assert runner._remap is None
    np.testing.assert_allclose(runner(np.full((1, 64, 64, 3), 128, np.uint8)), [1.0])


def test_remap_for_reads_the_manifest_next_to_an_exported_file(tmp_path):
    bundle = _bundle(tmp_path, None, center=1.0, threshold=5.0)
    r = remap_for(bundle / "model.onnx", {CENTER_KEY: "1.0", SCALE_KEY: "2.0"})
    assert r == Remap(1.0, 2.0, 1.0, 4.0)
    (bundle / "algan.json").write_text("{not json")
    assert remap_for(bundle, {CENTER_KEY: "1.0", SCALE_KEY: "2.0"}) is None
