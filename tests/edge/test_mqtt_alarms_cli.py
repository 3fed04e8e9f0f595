"""algan-alarms: the new event fields, and --client-id: alarms published while the subscriber was away arrive when
it comes back; one received but not handled before exit (--count) is delivered again."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from algan.cli.alarms import format_event
from algan.edge.alarm import AlarmEvent
from algan.edge.publish.messages import alarm_payload

pytestmark = pytest.mark.broker


def event(i: int, state: str = "raised") -> str:
    return alarm_payload(AlarmEvent(f"id{i}", "cam1", state, 1796000523.456, 1.5, 2.25, 10 * i, 10 * i + 3, 4,
                                    peak_frame=10 * i + 2, snapshot=f"/snaps/{i}.jpg"))


def test_format_event_new_fields():
    line = format_event("algan/line1/cam1/alarm", json.loads(event(1)))
    assert line == ("2026-11-30T01:02:03.456Z  line1/cam1  RAISED   score 1.50 (peak 2.25 @ 12) frames 10-13  id id1"
                    "  /snaps/1.jpg")
    old = {"ts": "t", "state": "cleared", "score": 1.0, "peak": 2.0, "first_frame": 1, "last_frame": 2, "id": "x"}
    assert format_event("a/d/c/alarm", old) == "t  d/c  CLEARED  score 1.00 (peak 2.00) frames 1-2  id x"


def alarms(host: str, port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "algan.cli.alarms", "--broker", f"{host}:{port}", "--json", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def publish(host: str, port: int, payloads: list[str]) -> None:
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.connect(host, port)
    c.loop_start()
    infos = [c.publish("algan/line1/cam1/alarm", p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(10)
    c.disconnect()
    c.loop_stop()


def test_client_id_gets_alarms_raised_while_away(mqtt_broker):
    host, port = mqtt_broker
    if mqtt_broker.kind != "mosquitto":
        pytest.skip("persistent sessions are checked on mosquitto")
    first = alarms(host, port, "--client-id", "ops-1", "--timeout", "0.5")  # registers the session, then leaves
    assert first.returncode == 0, first.stderr
    publish(host, port, [event(1), event(1, "cleared"), event(2)])
    res = alarms(host, port, "--client-id", "ops-1", "--count", "2", "--timeout", "20")
    assert res.returncode == 0, res.stderr
    got = [json.loads(line) for line in res.stdout.splitlines()]
    assert [(e["id"], e["state"]) for e in got] == [("id1", "raised"), ("id1", "cleared")]
    assert got[0]["snapshot"] == "/snaps/1.jpg" and got[0]["peak_frame"] == 12
    time.sleep(0.2)
    rest = alarms(host, port, "--client-id", "ops-1", "--count", "1", "--timeout", "20")
    assert rest.returncode == 0, rest.stderr
    assert [json.loads(line)["id"] for line in rest.stdout.splitlines()] == ["id2"], "the unhandled one comes again"


def test_bad_tls_options_one_line(mqtt_broker, tmp_path):
    res = alarms(*mqtt_broker, "--cert", str(tmp_path / "c.pem"))
    assert res.returncode == 2
    assert res.stderr.strip() == "algan-alarms: --cert and --key go together; give both or neither"
