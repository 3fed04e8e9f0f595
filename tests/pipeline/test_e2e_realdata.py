"""End to end on real data: MTD normals -> algan-train -> algan-export -> video of MTD test images ->
algan-edge (ONNX Runtime) -> a real broker -> every message collected. Skipped when ../shared/data is absent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from algan.data.datasets import load_dataset
from algan.data.preprocess import prepare_frame, read_image
from algan.data.video import write_video
from algan.model.evaluate import auroc

pytestmark = [pytest.mark.realdata, pytest.mark.broker, pytest.mark.slow]
SIZE = (224, 224)
N_TRAIN = 240  # subset of the 619 MTD training normals, for test speed


def _mtd(data_dir: Path) -> Path:
    root = data_dir / "mtd"
    if not (root / "MT_Free").is_dir():
        pytest.skip(f"MTD data not found at {root} (set ALGAN_DATA_DIR to the folder holding mtd/)")
    return root


@pytest.fixture(scope="module")
def mtd_model(data_dir, tmp_path_factory) -> Path:
    root = _mtd(data_dir)
    out = tmp_path_factory.mktemp("mtd") / "model"
    for cmd in (["algan.cli.train", "--data", str(root), "--out", str(out), "--max-train", str(N_TRAIN), "--quiet"],
                ["algan.cli.export", str(out)]):
        r = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr[-2000:]
    return out


def _run_edge(tmp_path: Path, model: Path, broker, source: Path, camera: str) -> subprocess.CompletedProcess:
    cfg = {
        "device_id": "e2e",
        "model": str(model),
        "runner": {"backend": "onnxruntime", "threads": 0},
        "batch": {"max_size": 8, "max_wait_ms": 20},
        "mqtt": {"host": broker[0], "port": broker[1], "embedded_broker": "never"},
        "stats_interval_s": 60,
        "cameras": [{"name": camera, "source": str(source)}],
    }
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([sys.executable, "-m", "algan.cli.edge", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=600)


def _sequence(data_dir: Path) -> tuple[list[Path], np.ndarray]:
    """Known order: runs of 10 normal then 6 defect test images, 8 times (128 frames, 48 defects)."""
    ds = load_dataset(_mtd(data_dir))
    normal = [s.path for s in ds.test if s.label == 0]
    defect = [s.path for s in ds.test if s.label == 1]
    rng = np.random.default_rng(7)
    normal = [normal[i] for i in rng.permutation(len(normal))]
    defect = [defect[i] for i in rng.permutation(len(defect))]
    paths, labels = [], []
    for k in range(8):
        paths += normal[10 * k : 10 * k + 10] + defect[6 * k : 6 * k + 6]
        labels += [0] * 10 + [1] * 6
    return paths, np.array(labels)


def test_mtd_video_through_daemon_and_broker(mtd_model, data_dir, tmp_path, mqtt_broker, mqtt_collector, capsys):
    paths, labels = _sequence(data_dir)
    # frames are prepared exactly as training prepares images, and FFV1 is lossless, so the daemon sees the
    # pixels the model was trained on (compression effects are a calibration matter, see algan-calibrate)
    video = tmp_path / "mtd.mkv"
    assert write_video((prepare_frame(read_image(p), SIZE) for p in paths), video, fps=10) == len(paths)
    col = mqtt_collector()
    r = _run_edge(tmp_path, mtd_model, mqtt_broker, video, "tiles")
    assert r.returncode == 0, r.stderr[-2000:]
    assert col.wait_for(lambda ms: any(m.topic == "algan/e2e/status" and m.payload == "offline" for m in ms))
    scores = [json.loads(m.payload) for m in col.on("tiles/score")]
    assert [s["frame"] for s in scores] == list(range(len(paths)))  # exactly one score message per frame
    manifest = json.loads((mtd_model / "algan.json").read_text())
    assert {s["model_id"] for s in scores} == {manifest["model_id"]}
    per_frame = np.array([s["score"] for s in scores])
    frame_auroc = auroc(labels, per_frame)
    alarms = [json.loads(m.payload) for m in col.on("tiles/alarm")]
    with capsys.disabled():
        print(f"\nMTD video via daemon + {mqtt_broker.kind}: {len(paths)} frames ({labels.sum()} defect), per-frame "
              f"AUROC {frame_auroc:.3f}, {sum(a['state'] == 'raised' for a in alarms)} alarms raised")
    assert frame_auroc > 0.8


def test_bottle_video_with_the_real_model(mtd_model, data_dir, tmp_path, mqtt_broker, mqtt_collector, capsys):
    video = data_dir / "video" / "bottle-detection.mp4"
    if not video.is_file():
        pytest.skip(f"{video} not found (set ALGAN_DATA_DIR)")
    col = mqtt_collector()
    r = _run_edge(tmp_path, mtd_model, mqtt_broker, video, "bottles")
    assert r.returncode == 0, r.stderr[-2000:]
    assert col.wait_for(lambda ms: any(m.topic == "algan/e2e/status" and m.payload == "offline" for m in ms))
    frames = [json.loads(m.payload)["frame"] for m in col.on("bottles/score")]
    assert frames == list(range(1189))
    status = [m.payload for m in col.on("e2e/status")]
    assert status[-1] == "offline"
    (stats,) = [json.loads(m.payload) for m in col.on("e2e/stats")][-1:]
    with capsys.disabled():
        print(f"\nbottle video, EfficientNet-Lite0 model, ONNX Runtime CPU: {stats['fps_avg']:.1f} frames/s "
              f"end to end, latency p50 {stats['latency_ms_p50']} ms p99 {stats['latency_ms_p99']} ms")
