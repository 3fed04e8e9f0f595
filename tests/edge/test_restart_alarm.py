"""An alarm left open by a crash is closed at the next start (issue 15 item 6): the real daemon, a real mosquitto,
SIGKILL while the alarm is raised, then a restart on the same state directory."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from edgekit import BRIGHT, edge_config, make_folder, write_config

pytestmark = pytest.mark.broker


def _events(col) -> list[dict]:
    """cam1's alarm events, once per (id, state): QoS 1 is at-least-once, and a SIGKILL between the broker's delivery
    and its PUBACK replays the raised event from the outbox at the next start."""
    seen: dict[tuple[str, str], dict] = {}
    for m in col.on("cam1/alarm"):
        e = json.loads(m.payload)
        seen.setdefault((e["id"], e["state"]), e)
    return list(seen.values())


def _daemon(config) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "algan.cli.edge", "run", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_alarm_open_at_sigkill_is_cleared_with_reason_restart(tmp_path, tiny_model, mqtt_broker, mqtt_collector):
    inbox = make_folder(tmp_path / "inbox", [BRIGHT] * 4)  # 3 anomalous frames raise; nothing clears it
    col = mqtt_collector()
    cams = [{"name": "cam1", "source": str(inbox), "watch": True, "settle_s": 0.1}]
    cfg = edge_config(tiny_model, mqtt_broker, cams, mqtt={"outbox": {"path": str(tmp_path / "state" / "ob.sqlite")}})
    path = write_config(tmp_path / "edge.yaml", cfg)

    def alarms():
        return _events(col)

    first = _daemon(path)
    try:
        assert col.wait_for(lambda ms: len(alarms()) == 1 and len(col.on("cam1/score")) == 4, timeout=30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    (raised,) = alarms()
    assert raised["state"] == "raised"

    second = _daemon(path)
    try:
        assert col.wait_for(lambda ms: len(alarms()) == 2, timeout=30)
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    cleared = alarms()[1]
    assert second.returncode == 0, err
    assert cleared["state"] == "cleared" and cleared["reason"] == "restart" and cleared["id"] == raised["id"]
    assert cleared["camera"] == "cam1" and cleared["peak"] == raised["peak"] and cleared["ts"] > raised["ts"]
    assert f"alarm {raised['id']} was still open when the daemon last stopped" in err
    assert len(col.on("cam1/score")) == 4, "the journal: no file scored again after the restart"

    third = _daemon(path)  # nothing is open any more: no second 'cleared'
    try:
        assert col.wait_for(lambda ms: [m.payload for m in col.on("line1/status")][-1:] == ["online"]
                            and len(col.on("line1/status")) >= 5, timeout=30)
    finally:
        third.send_signal(signal.SIGTERM)
        third.communicate(timeout=30)
    assert len(alarms()) == 2


def test_alarm_of_a_camera_removed_from_the_config_is_cleared_with_reason_camera_removed(tmp_path, tiny_model,
                                                                                          mqtt_broker, mqtt_collector):
    inbox = make_folder(tmp_path / "inbox", [BRIGHT] * 4)
    col = mqtt_collector()
    outbox = {"outbox": {"path": str(tmp_path / "state" / "ob.sqlite")}}
    cams = [{"name": "cam1", "source": str(inbox), "watch": True, "settle_s": 0.1}]
    first = _daemon(write_config(tmp_path / "a.yaml", edge_config(tiny_model, mqtt_broker, cams, mqtt=outbox)))
    try:
        assert col.wait_for(lambda ms: len(col.on("cam1/alarm")) == 1, timeout=30)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    other = make_folder(tmp_path / "other", [0] * 2)
    cams = [{"name": "cam2", "source": str(other)}]  # cam1 is gone from the config
    second = _daemon(write_config(tmp_path / "b.yaml", edge_config(tiny_model, mqtt_broker, cams, mqtt=outbox)))
    _, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert col.wait_for(lambda ms: len(_events(col)) == 2, timeout=10)
    cleared = _events(col)[1]
    assert cleared["state"] == "cleared" and cleared["reason"] == "camera_removed"
