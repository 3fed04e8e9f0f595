"""Message formats: timestamps, topics and payloads."""

from __future__ import annotations

import json
import re

import pytest

from algan.contract import utc_iso
from algan.edge.alarm import AlarmEvent
from algan.edge.publish.messages import Topics, alarm_payload, score_payload


def test_utc_iso_milliseconds_z():
    assert utc_iso(0.0) == "1970-01-01T00:00:00.000Z"
    assert utc_iso(1796000523.456) == "2026-11-30T01:02:03.456Z"
    assert utc_iso(59.9996) == "1970-01-01T00:01:00.000Z"  # rounding carries into the seconds
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc_iso(1.5e9 + 0.0004))
    assert utc_iso(1796000523.456, basic=True) == "20261130T010203.456Z"  # file names (snapshots)


def test_topics():
    t = Topics("plant/algan", "line1")
    assert (t.status, t.stats) == ("plant/algan/line1/status", "plant/algan/line1/stats")
    assert (t.score("c"), t.alarm("c"), t.state("c")) == (
        "plant/algan/line1/c/score", "plant/algan/line1/c/alarm", "plant/algan/line1/c/state")


def test_score_payload_nan_is_null():
    p = json.loads(score_payload(0.0, 3, float("nan"), 1.0, 12.345, "m1"))
    assert p == {"ts": "1970-01-01T00:00:00.000Z", "frame": 3, "score": None, "threshold": 1.0,
                 "latency_ms": 12.35, "model_id": "m1"}


def test_alarm_payload_fields():
    e = AlarmEvent("id1", "cam1", "raised", 0.001, 1.84, 2.31, 120, 126, 7)
    assert json.loads(alarm_payload(e)) == {
        "id": "id1", "camera": "cam1", "state": "raised", "ts": "1970-01-01T00:00:00.001Z", "score": 1.84,
        "peak": 2.31, "peak_frame": -1, "first_frame": 120, "last_frame": 126, "frames": 7, "duration_s": 0.0,
        "snapshot": None, "region": None, "file": None}
    c = AlarmEvent("id1", "cam1", "cleared", 0.001, 0.1, 2.31, 120, 130, 11, file="p7.jpg", reason="source_ended")
    got = json.loads(alarm_payload(c))
    assert (got["state"], got["reason"], got["file"]) == ("cleared", "source_ended", "p7.jpg")
    assert json.loads(alarm_payload(AlarmEvent("i", "c", "cleared", 0.0, 0.1, 2.0, 1, 2, 2)))["reason"] == "normal"


def test_home_assistant_discovery_maps_camera_offline_to_unavailable():
    """A dead camera (state ``offline``) makes its entities unavailable; the daemon's status does the same."""
    import json

    from algan.edge.publish.discovery import ALARM_STATE_TEMPLATE, CAMERA_AVAILABILITY_TEMPLATE, discovery_messages
    from algan.edge.publish.messages import Topics

    msgs = discovery_messages(Topics("algan", "line1"), ["cam.1"], model_id="m1")
    assert [(t, q, r) for t, _, q, r in msgs] == [
        ("homeassistant/binary_sensor/algan_line1/cam_1_alarm/config", 1, True),
        ("homeassistant/sensor/algan_line1/cam_1_score/config", 1, True),
    ]
    alarm, score = (json.loads(p) for _, p, _, _ in msgs)
    for entity in (alarm, score):
        assert entity["availability_mode"] == "all" and "availability_topic" not in entity
        daemon, camera = entity["availability"]
        assert daemon == {"topic": "algan/line1/status", "payload_available": "online",
                          "payload_not_available": "offline"}
        assert camera["topic"] == "algan/line1/cam.1/state" and camera["value_template"] == CAMERA_AVAILABILITY_TEMPLATE
        assert entity["device"]["model"] == "m1"
    assert alarm["value_template"] == ALARM_STATE_TEMPLATE
    # what Home Assistant does with the templates: render them (Jinja2, as HA does) for every state payload
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment()

    def render(template: str, value: str) -> str:
        return env.from_string(template).render(value=value)

    states = ("normal", "alarm", "offline")
    assert [render(CAMERA_AVAILABILITY_TEMPLATE, v) for v in states] == ["online", "online", "offline"]
    assert [render(ALARM_STATE_TEMPLATE, v) for v in states] == ["normal", "alarm", "None"]  # None = unknown in HA
    assert (alarm["payload_on"], alarm["payload_off"], alarm["state_topic"]) == ("alarm", "normal",
                                                                                   "algan/line1/cam.1/state")
