"""mosquitto with TLS (CA, server and client certificates made by openssl) and a password file: the daemon
connects; with a wrong password it says so in one line and keeps retrying, and delivers once the broker accepts it.
Home Assistant discovery configs are published retained."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from edgekit import edge_config, run_edge, write_config
from mqttkit import Collector, make_certs, password_file, run_as_me

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture
def secure_broker(tmp_path, mosquitto_factory):
    """A TLS-only mosquitto requiring a client certificate and a password (users edge/s3cret, watcher/w4tch)."""
    certs = make_certs(tmp_path)
    pw = password_file(tmp_path / "passwd", {"edge": "s3cret", "watcher": "w4tch"})
    conf = (f"cafile {certs['ca.crt']}\ncertfile {certs['server.crt']}\nkeyfile {certs['server.key']}\n"
            f"require_certificate true\nallow_anonymous false\npassword_file {pw}\n{run_as_me()}")
    broker = mosquitto_factory(conf)
    return broker, certs, pw


def collector(broker, certs) -> Collector:
    tls = {"ca_certs": str(certs["ca.crt"]), "certfile": str(certs["client.crt"]), "keyfile": str(certs["client.key"])}
    return Collector(broker.host, broker.port, "#", tls=tls, username="watcher", password="w4tch")


def tls_mqtt(broker, tmp_path, certs, password_file_name: str, **over) -> dict:
    return {"username": "edge", "password_file": password_file_name, "reconnect_max_s": 1,
            "tls": {"ca_file": str(certs["ca.crt"]), "cert_file": str(certs["client.crt"]),
                    "key_file": str(certs["client.key"])}, **over}


def test_tls_and_password_connects(tmp_path, tiny_model, step_video, secure_broker):
    broker, certs, _ = secure_broker
    col = collector(broker, certs)
    (tmp_path / "mqtt.pass").write_text("s3cret\n")
    cfg = edge_config(tiny_model, (broker.host, broker.port), [{"name": "cam1", "source": str(step_video)}],
                      mqtt=tls_mqtt(broker, tmp_path, certs, "mqtt.pass", homeassistant={"enabled": True}))
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg))
    assert res.returncode == 0, res.stderr
    assert f"connected to MQTT broker 127.0.0.1:{broker.port} (TLS)" in res.stderr
    assert col.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("cam1/alarm")]) == 2)
    assert [json.loads(m.payload)["state"] for m in col.on("cam1/alarm")] == ["raised", "cleared"]
    ha = {m.topic: json.loads(m.payload) for m in col.messages if m.topic.startswith("homeassistant/")}
    alarm = ha["homeassistant/binary_sensor/algan_line1/cam1_alarm/config"]
    assert alarm["state_topic"] == "algan/line1/cam1/state" and alarm["payload_on"] == "alarm"
    assert alarm["device_class"] == "problem" and alarm["availability_mode"] == "all"
    assert alarm["device"]["model"] == "tiny-1"  # the loaded model's id (it was always empty before)
    assert [a["topic"] for a in alarm["availability"]] == ["algan/line1/status", "algan/line1/cam1/state"]
    score = ha["homeassistant/sensor/algan_line1/cam1_score/config"]
    assert score["state_topic"] == "algan/line1/cam1/score" and score["value_template"] == "{{ value_json.score }}"
    col.stop()
    late = collector(broker, certs)  # discovery configs are retained
    assert late.wait_for(lambda ms: len([m for m in ms if m.topic.startswith("homeassistant/") and m.retain]) == 2)
    late.stop()


def test_wrong_password_one_line_then_retries_until_accepted(tmp_path, tiny_model, step_video, secure_broker):
    broker, certs, pw = secure_broker
    (tmp_path / "mqtt.pass").write_text("wrong\n")
    cams = [{"name": "cam1", "source": str(step_video)},
            {"name": "net", "source": "rtsp://127.0.0.1:1/none", "reconnect_interval_s": 0.5}]
    cfg = edge_config(tiny_model, (broker.host, broker.port), cams,
                      mqtt=tls_mqtt(broker, tmp_path, certs, "mqtt.pass", connect_timeout_s=2))
    err = tmp_path / "edge.err"
    proc = subprocess.Popen([sys.executable, "-m", "algan.cli.edge", "run", "--config",
                             str(write_config(tmp_path / "edge.yaml", cfg))], stderr=err.open("w"))
    try:
        end = time.monotonic() + 30
        while "alarm cleared" not in err.read_text():  # the run goes on without the broker
            assert proc.poll() is None and time.monotonic() < end, err.read_text()
            time.sleep(0.1)
        time.sleep(2.5)  # more refused attempts (reconnect_max_s 1)
        text = err.read_text()
        refused = [line for line in text.splitlines() if "refused the connection" in line]
        assert len(refused) == 1, text
        assert "Not authorized" in refused[0] and "mqtt.username" in refused[0] and "retrying" in refused[0]
        log = (tmp_path / f"mosquitto-{broker.port}.log").read_text()
        assert log.count("not authorised") >= 2, "it keeps retrying"

        col = collector(broker, certs)
        subprocess.run(["mosquitto_passwd", "-b", str(pw), "edge", "wrong"], check=True, capture_output=True)
        broker.proc.send_signal(signal.SIGHUP)  # mosquitto re-reads its password file: now 'wrong' is right
        assert col.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("cam1/alarm")]) == 2, timeout=20), \
            err.read_text()[-2000:]
        assert [json.loads(m.payload)["state"] for m in col.on("cam1/alarm")] == ["raised", "cleared"]
        col.stop()
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode == 0, err.read_text()[-2000:]
    assert "Traceback" not in err.read_text()
