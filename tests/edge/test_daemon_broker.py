"""End-to-end: ``algan-edge run`` as a subprocess against a real broker, every message collected and checked."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edgekit import DARK, edge_config, make_folder, run_edge, write_config

pytestmark = pytest.mark.broker

ISO_MS_Z = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"


def _payloads(msgs) -> list[dict]:
    return [json.loads(m.payload) for m in msgs]


def test_video_run_publishes_exact_messages(tmp_path, tiny_model, step_video, mqtt_broker, mqtt_collector):
    col = mqtt_collector()
    cfg = edge_config(tiny_model, mqtt_broker, [{"name": "cam1", "source": str(step_video)}])
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert col.wait_for(lambda ms: any(m.topic.endswith("/status") and m.payload == "offline" for m in ms))

    scores = _payloads(col.on("line1/cam1/score"))
    assert [s["frame"] for s in scores] == list(range(60))
    assert not any(m.retain for m in col.on("/score"))
    if mqtt_broker.kind == "mosquitto":  # amqtt delivers at the subscription QoS, whatever was published
        assert all(m.qos == 0 for m in col.on("/score"))
        assert [m.qos for m in col.on("line1/cam1/alarm")] == [1, 1]
    first = scores[0]
    assert set(first) == {"ts", "frame", "score", "threshold", "latency_ms", "model_id"}
    assert first["model_id"] == "tiny-1" and first["threshold"] == 1.0 and first["latency_ms"] >= 0
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2026-11-30T01:02:03.456Z")
    high = [s["frame"] for s in scores if s["score"] >= 1.0]
    assert high == list(range(20, 35)), "the tiny model scores bright frames >= 1 and dark ones < 0.9"

    alarms = col.on("line1/cam1/alarm")
    raised, cleared = _payloads(alarms)
    assert raised["state"] == "raised" and cleared["state"] == "cleared"
    assert (raised["first_frame"], raised["last_frame"], raised["frames"]) == (20, 22, 3)
    assert (cleared["first_frame"], cleared["last_frame"], cleared["frames"]) == (20, 39, 20)
    assert raised["id"] == cleared["id"] and raised["camera"] == "cam1" and raised["snapshot"] is None
    assert raised["peak"] >= raised["score"] > 1.0 and cleared["score"] < 0.9

    # a clean stop (the video ended) leaves the camera offline, not "normal" for ever
    assert [m.payload for m in col.on("line1/cam1/state")] == ["normal", "alarm", "normal", "offline"]
    status = col.on("line1/status")
    assert [m.payload for m in status] == ["online", "offline"]
    assert col.messages[0].topic == "algan/line1/status", "online comes before anything else"
    assert col.messages[-1].topic == "algan/line1/status", "offline comes after everything else"

    (stats,) = _payloads(col.on("line1/stats"))  # stats_interval_s 60: only the final one
    assert stats["frames"] == 60 and stats["corrupt"] == 0 and stats["dropped"] == 0
    assert stats["backend"] == "onnxruntime" and stats["cameras"]["cam1"]["status"] == "finished"
    assert stats["latency_ms_p50"] is not None and stats["latency_ms_p99"] >= stats["latency_ms_p50"]
    # at most the 2 alarm events and 4 state changes can still wait for their acks; nothing was dropped
    assert 0 <= stats["outbox_depth"] <= 6 and stats["outbox_dropped"] == 0

    late = mqtt_collector()  # a client arriving after the run sees the retained status and state
    assert late.wait_for(lambda ms: len(ms) >= 2, timeout=5)
    retained = {m.topic: m.payload for m in late.messages if m.retain}
    assert retained == {"algan/line1/status": "offline", "algan/line1/cam1/state": "offline"}


def test_corrupt_image_and_dead_camera_do_not_stop_the_run(tmp_path, tiny_model, mqtt_broker, mqtt_collector):
    folder = make_folder(tmp_path / "imgs", [DARK] * 8, corrupt=[3])
    col = mqtt_collector()
    ghost = tmp_path / "broken.mp4"  # exists (check-config passes it) but is no video: fails at open, in the run
    ghost.write_bytes(b"not a video at all" * 10)
    cams = [{"name": "good", "source": str(folder)}, {"name": "ghost", "source": str(ghost)}]
    res = run_edge(write_config(tmp_path / "edge.yaml", edge_config(tiny_model, mqtt_broker, cams)))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "camera ghost: cannot open file source" in res.stderr
    assert "frame 3 skipped" in res.stderr
    assert col.wait_for(lambda ms: any(m.payload == "offline" and m.topic.endswith("/status") for m in ms))

    assert [s["frame"] for s in _payloads(col.on("good/score"))] == [0, 1, 2, 4, 5, 6, 7]
    assert col.on("ghost/score") == []
    assert [m.payload for m in col.on("ghost/state")] == ["normal", "offline"]
    (stats,) = _payloads(col.on("line1/stats"))
    assert stats["corrupt"] == 1 and stats["frames"] == 7
    assert stats["cameras"]["good"] | {} == {**stats["cameras"]["good"], "status": "finished", "corrupt": 1, "read": 8}
    assert stats["cameras"]["ghost"]["status"] == "failed"


def test_all_cameras_failing_exits_1(tmp_path, tiny_model, mqtt_broker):
    ghost = tmp_path / "broken.mp4"
    ghost.write_bytes(b"not a video at all" * 10)
    cams = [{"name": "ghost", "source": str(ghost)}]
    res = run_edge(write_config(tmp_path / "edge.yaml", edge_config(tiny_model, mqtt_broker, cams)))
    assert res.returncode == 1
    assert "no camera could be read" in res.stderr and "Traceback" not in res.stderr


def test_alarms_subscriber_prints_and_execs(tmp_path, tiny_model, step_video, mqtt_broker):
    host, port = mqtt_broker
    out = tmp_path / "exec.json"
    err = (tmp_path / "alarms.err").open("w+")
    sub = subprocess.Popen(
        [sys.executable, "-m", "algan.cli.alarms", "--broker", f"{host}:{port}", "--count", "2", "--timeout", "60",
         "--exec", f"cat >> {out}; echo >> {out}"],
        stdout=subprocess.PIPE, stderr=err, text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while "subscribed to" not in (tmp_path / "alarms.err").read_text():
            assert sub.poll() is None and time.monotonic() < deadline, (tmp_path / "alarms.err").read_text()
            time.sleep(0.05)
        cfg = edge_config(tiny_model, mqtt_broker, [{"name": "cam1", "source": str(step_video)}])
        res = run_edge(write_config(tmp_path / "edge.yaml", cfg))
        assert res.returncode == 0, res.stderr
        stdout, _ = sub.communicate(timeout=30)
    finally:
        if sub.poll() is None:
            sub.kill()
        err.close()
    assert sub.returncode == 0, (tmp_path / "alarms.err").read_text()
    lines = stdout.splitlines()
    assert len(lines) == 2
    assert "line1/cam1  RAISED" in lines[0] and "frames 20-22" in lines[0]
    assert "line1/cam1  CLEARED" in lines[1] and "frames 20-39" in lines[1]
    execd = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    assert len(execd) == 1 and execd[0]["state"] == "raised" and execd[0]["first_frame"] == 20


def test_alarms_unreachable_broker_one_line(unused_port):
    res = subprocess.run([sys.executable, "-m", "algan.cli.alarms", "--broker", f"127.0.0.1:{unused_port}",
                          "--count", "1"], capture_output=True, text=True, timeout=30, check=False)
    assert res.returncode == 1
    assert res.stderr.strip().count("\n") == 0 and "cannot reach MQTT broker" in res.stderr


def test_unreachable_broker_one_line(tmp_path, tiny_model, step_video, unused_port):
    cfg = edge_config(tiny_model, ("127.0.0.1", unused_port), [{"name": "cam1", "source": str(step_video)}],
                      mqtt={"connect_timeout_s": 1})
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg))
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("algan-edge: cannot reach MQTT broker 127.0.0.1:") and "Traceback" not in res.stderr


def test_refused_connection_one_line(tmp_path, tiny_model, step_video, mosquitto_factory):
    """A refusing broker (credentials) is reported in one line and retried; the run goes on, alarms stay in the
    outbox for the next start, and the exit status says something was not delivered."""
    broker = mosquitto_factory("allow_anonymous false\n")  # every client is refused: not authorised
    cfg = edge_config(tiny_model, (broker.host, broker.port), [{"name": "cam1", "source": str(step_video)}],
                      mqtt={"reconnect_max_s": 1})
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    refused = [line for line in res.stderr.splitlines() if "refused the connection" in line]
    assert len(refused) == 1 and "Not authorized" in refused[0] and "mqtt.username" in refused[0]
    assert "stay in the MQTT outbox" in res.stderr


def test_embedded_broker_when_nothing_listens(tmp_path, tiny_model, unused_port):
    folder = make_folder(tmp_path / "imgs", [DARK] * 3)
    cfg = edge_config(tiny_model, ("127.0.0.1", unused_port), [{"name": "cam1", "source": str(folder)}],
                      mqtt={"embedded_broker": "auto"})
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg))
    assert res.returncode == 0, res.stderr
    assert "started embedded MQTT broker" in res.stderr and "Traceback" not in res.stderr


def test_sigterm_stops_live_style_run(tmp_path, tiny_model, mqtt_broker, mqtt_collector):
    """A live-kind source (a stream URL that cannot be opened) keeps the daemon running until SIGTERM."""
    col = mqtt_collector()
    cams = [{"name": "net", "source": "rtsp://127.0.0.1:1/none", "reconnect_interval_s": 0.5}]
    cfg = write_config(tmp_path / "edge.yaml", edge_config(tiny_model, mqtt_broker, cams))
    proc = subprocess.Popen([sys.executable, "-m", "algan.cli.edge", "run", "--config", str(cfg)],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert col.wait_for(lambda ms: any(m.topic.endswith("net/state") and m.payload == "offline" for m in ms),
                            timeout=20)
        assert proc.poll() is None
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err and "Traceback" not in err
    assert col.wait_for(lambda ms: ms[-1].topic.endswith("/status") and ms[-1].payload == "offline")


def test_example_config_is_valid():
    example = Path(__file__).resolve().parents[2] / "configs" / "edge.example.yaml"
    from algan.edge.config import load_config

    cfg = load_config(example)
    assert cfg.cameras and cfg.device_id
