"""The daemon against a mosquitto that goes away: alarms raised during a broker outage, or left in the outbox by a
SIGKILLed daemon, arrive afterwards, in order, each exactly once. Snapshots of the peak frames are written."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from edgekit import BRIGHT, DARK, edge_config, make_video, write_config
from mqttkit import Collector, persistence_conf

pytestmark = [pytest.mark.broker, pytest.mark.slow]

#: Bright episodes (alarms) at frames 20-29, 80-89, 120-129 and 200-209 of a 240-frame video.
EPISODES = [(20, 30), (80, 90), (120, 130), (200, 210)]
DEAD_CAMERA = {"name": "net", "source": "rtsp://127.0.0.1:1/none", "reconnect_interval_s": 0.5}


def levels(n: int = 240) -> list[int]:
    out = [DARK] * n
    for a, b in EPISODES:
        out[a:b] = [BRIGHT] * (b - a)
    return out


def start_edge(cfg_path: Path, err: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "algan.cli.edge", "run", "--config", str(cfg_path)],
                            stdout=subprocess.DEVNULL, stderr=err.open("w"))


def wait_log(err: Path, text: str, count: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while err.read_text().count(text) < count:
        assert proc.poll() is None or err.read_text().count(text) >= count, err.read_text()[-3000:]
        assert time.monotonic() < end, f"timed out waiting for {count}x {text!r}:\n{err.read_text()[-3000:]}"
        time.sleep(0.05)


def wait_outbox_empty(path: Path, timeout: float = 10.0) -> None:
    """Wait until the daemon got the broker's acknowledgement of every outbox row (so a broker stop now cannot
    cause a legitimate QoS1 re-send, which the broker could deliver twice)."""
    end = time.monotonic() + timeout
    while True:
        with sqlite3.connect(path) as db:
            if db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0:
                return
        assert time.monotonic() < end, "outbox not drained"
        time.sleep(0.05)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def exactly_once_in_order(events: list[dict]) -> list[tuple[str, str]]:
    keys = [(e["id"], e["state"]) for e in events]
    assert len(set(keys)) == len(keys), f"duplicated events: {keys}"
    return keys


def test_broker_outage_mid_run(tmp_path, tiny_model, mosquitto_factory):
    video = make_video(tmp_path / "episodes.mp4", levels())
    broker = mosquitto_factory(persistence_conf(tmp_path))
    col = Collector(broker.host, broker.port, "algan/line1/cam1/#", client_id="outage-col", persistent=True)
    cfg = edge_config(tiny_model, (broker.host, broker.port),
                      [{"name": "cam1", "source": str(video), "replay_fps": 40}],
                      mqtt={"reconnect_max_s": 1, "outbox": {"path": str(tmp_path / "outbox.sqlite")}},
                      alarm={"snapshots": {"dir": str(tmp_path / "snaps"), "max_count": 10}})
    err = tmp_path / "edge.err"
    proc = start_edge(write_config(tmp_path / "edge.yaml", cfg), err)
    try:
        assert col.wait_for(lambda ms: [m.payload for m in ms if m.topic.endswith("/state")][-1:] == ["normal"]
                            and len([m for m in ms if m.topic.endswith("/alarm")]) == 2, timeout=30), \
            err.read_text()[-3000:]
        wait_outbox_empty(tmp_path / "outbox.sqlite")  # every PUBACK is in: nothing is in flight
        time.sleep(0.5)  # and the collector's PUBACKs of what it received (else the broker re-sends it, QoS 1)
        broker.stop()  # during a dark stretch
        wait_log(err, "alarm cleared", 3, proc)  # episodes 2 and 3 happen while the broker is down
        assert err.read_text().count("lost MQTT broker") == 1
        broker.start()  # same port; the collector's session survives in the broker's database
        assert proc.wait(60) == 0, err.read_text()[-3000:]
    finally:
        stop(proc)
    assert col.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/alarm")]) >= 8, timeout=15)
    time.sleep(0.5)  # a duplicate would arrive now
    events = col.events()
    col.stop()
    keys = exactly_once_in_order(events)
    assert [s for _, s in keys] == ["raised", "cleared"] * 4
    assert [e["first_frame"] for e in events] == [a for a, _ in EPISODES for _ in range(2)]
    assert all(keys[i][0] == keys[i + 1][0] for i in range(0, 8, 2)) and len({k for k, _ in keys}) == 4
    # live state changes (retain flag cleared by the broker); the collector's re-subscription after the restart
    # also gets the retained state again (retain flag set), which is not a second publication
    # A state the broker re-sends (DUP flag) because the collector's PUBACK was lost with the broker is not a daemon
    # publication either: the daemon never publishes the same state twice in a row, so only such a repeat is dropped
    states: list[str] = []
    for m in col.on("/state"):
        if not m.retain and not (m.dup and states and states[-1] == m.payload):
            states.append(m.payload)
    assert states == ["normal"] + ["alarm", "normal"] * 4 + ["offline"]  # offline: the clean stop at the end
    assert "Traceback" not in err.read_text()

    # snapshots: one JPEG per alarm, the path in both events, a bright (peak) frame
    for e in events:
        # the event names the file relative to alarm.snapshots.dir
        assert e["snapshot"] is not None and Path(e["snapshot"]).name == e["snapshot"]
        assert cv2.imread(str(tmp_path / "snaps" / e["snapshot"])).mean() > BRIGHT - 10 and a_peak_frame(e)
    assert all(events[i]["snapshot"] == events[i + 1]["snapshot"] for i in range(0, 8, 2)), "one file per alarm"
    assert len(list((tmp_path / "snaps").iterdir())) == 4


def a_peak_frame(event: dict) -> bool:
    return any(a <= event["peak_frame"] < b for a, b in EPISODES)


def test_sigkill_with_alarms_in_outbox(tmp_path, tiny_model, step_video, mosquitto_factory):
    broker = mosquitto_factory()
    broker.stop()  # the port stays ours: nothing listens there until broker.start()
    outbox = tmp_path / "outbox.sqlite"
    cams = [{"name": "cam1", "source": str(step_video)}, DEAD_CAMERA]
    cfg = edge_config(tiny_model, (broker.host, broker.port), cams,
                      mqtt={"connect_timeout_s": 0, "reconnect_max_s": 1, "outbox": {"path": str(outbox)}})
    cfg_path = write_config(tmp_path / "edge.yaml", cfg)
    err = tmp_path / "edge1.err"
    proc = start_edge(cfg_path, err)
    try:
        wait_log(err, "alarm cleared", 1, proc)
    finally:
        assert stop(proc, signal.SIGKILL) == -signal.SIGKILL
    with sqlite3.connect(outbox) as db:
        rows = db.execute("SELECT topic, payload FROM outbox ORDER BY seq").fetchall()
    old = [p for t, p in rows if t.endswith("/cam1/alarm")]
    assert len(old) == 2, rows

    broker.start()
    col = Collector(broker.host, broker.port, "algan/line1/+/alarm")
    err2 = tmp_path / "edge2.err"
    proc = start_edge(cfg_path, err2)  # the same video again: 2 new alarms after the 2 old ones
    try:
        assert col.wait_for(lambda ms: len(ms) >= 4, timeout=30), err2.read_text()[-3000:]
        time.sleep(0.5)
    finally:
        assert stop(proc) == 0, err2.read_text()[-3000:]
    col.stop()
    events = col.events()
    keys = exactly_once_in_order(events)
    assert [e["state"] for e in events] == ["raised", "cleared", "raised", "cleared"]
    assert [json.loads(p)["id"] for p in old] == [k for k, _ in keys[:2]], "the killed run's alarms come first"
    assert keys[2][0] != keys[0][0]
    assert f"holds {len(rows)} undelivered messages" in err2.read_text()  # the 2 alarms + camera states
    with sqlite3.connect(outbox) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    assert os.path.exists(outbox)
