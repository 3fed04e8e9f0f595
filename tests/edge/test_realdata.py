"""The daemon on the real bottle video (1189 frames) with a tiny 224x224 model; skipped when the data is absent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from edgekit import edge_config, make_model, run_edge, write_config

pytestmark = [pytest.mark.broker, pytest.mark.realdata, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
VIDEO = Path(os.environ.get("ALGAN_DATA_DIR", REPO.parent / "shared" / "data")) / "video" / "bottle-detection.mp4"
FRAMES = 1189


@pytest.mark.skipif(not VIDEO.is_file(), reason=f"real video {VIDEO} not found (set ALGAN_DATA_DIR)")
def test_bottle_video_every_frame_scored(tmp_path, mqtt_broker, mqtt_collector, capsys):
    model = make_model(tmp_path / "tiny224.onnx", size=(224, 224), model_id="tiny-224")
    col = mqtt_collector()
    cfg = edge_config(model, mqtt_broker, [{"name": "bottle", "source": str(VIDEO)}], batch={"max_size": 8},
                      runner={"threads": 0})
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg), timeout=120)
    assert res.returncode == 0, res.stderr
    assert col.wait_for(lambda ms: ms and ms[-1].topic.endswith("/status") and ms[-1].payload == "offline")
    frames = [json.loads(m.payload)["frame"] for m in col.on("bottle/score")]
    assert len(frames) == FRAMES and frames == list(range(FRAMES))
    (stats,) = [json.loads(m.payload) for m in col.on("line1/stats")]
    assert stats["frames"] == FRAMES and stats["dropped"] == 0 and stats["corrupt"] == 0
    with capsys.disabled():
        print(f"\nbottle video: {FRAMES} frames 640x360 -> 224x224, daemon end-to-end {stats['fps_avg']:.1f} frames/s "
              f"(latency p50 {stats['latency_ms_p50']} ms, p99 {stats['latency_ms_p99']} ms)")
