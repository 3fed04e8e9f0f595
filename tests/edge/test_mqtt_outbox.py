"""MqttPublisher + Outbox against a real mosquitto: durable messages are delivered exactly once, in order, through
a broker restart and across publisher restarts; a refusing broker is logged once and retried."""

from __future__ import annotations

import logging
import time

import pytest
from mqttkit import Collector, persistence_conf, run_as_me

from algan.edge.config import MqttConfig
from algan.edge.publish.mqtt import MqttPublisher
from algan.edge.publish.outbox import Outbox

pytestmark = pytest.mark.broker


def publisher(host: str, port: int, outbox: Outbox | None, **kw) -> MqttPublisher:
    cfg = MqttConfig(host=host, port=port, embedded_broker="never", reconnect_max_s=1, **kw)
    return MqttPublisher(cfg, "test-edge", "algan/d/status", outbox)


def payloads(col: Collector, suffix: str = "/alarm") -> list[str]:
    return [m.payload for m in col.on(suffix)]


def test_durable_exactly_once_through_broker_restart(tmp_path, mosquitto_factory):
    broker = mosquitto_factory(persistence_conf(tmp_path))
    col = Collector(broker.host, broker.port, "algan/d/c/#", client_id="col-1", persistent=True)
    ob = Outbox(tmp_path / "o.sqlite")
    pub = publisher(broker.host, broker.port, ob)
    pub.connect(5)
    try:
        for i in range(5):
            pub.publish("algan/d/c/alarm", f"a{i}", qos=1, durable=True)
        assert pub.flush(10) == 0 and len(ob) == 0, "acknowledged rows leave the outbox"
        # let the collector receive and PUBACK a0..a4 before the broker stops: a delivery still in flight on the
        # broker->subscriber leg would be re-sent by the broker after its restart (QoS 1), which is not the daemon
        assert col.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/alarm")]) >= 5, timeout=10)
        time.sleep(0.5)
        broker.stop()
        time.sleep(0.3)
        for i in range(5, 10):
            pub.publish("algan/d/c/alarm", f"a{i}", qos=1, durable=True)
        pub.publish("algan/d/c/state", "alarm", qos=1, retain=True, durable=True)
        time.sleep(0.5)
        assert len(ob) == 6 and pub.pending() == 6, "kept on disk while the broker is down"
        broker.start()  # same port; the collector's session and subscription survive in the broker's database
        assert pub.flush(15) == 0 and len(ob) == 0
        want = [f"a{i}" for i in range(10)]
        assert col.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/alarm")]) >= 10, timeout=10)
        time.sleep(0.5)  # anything duplicated would arrive now
        assert payloads(col) == want, "every event once, in order"
        # the collector re-subscribes when it reconnects, and the broker then also hands it the retained state
        # (retain flag set): that is a copy of the retained message, not a second publication by the daemon
        states = col.on("/state")
        assert {m.payload for m in states} == {"alarm"}
        assert len([m for m in states if not m.retain]) <= 1
    finally:
        pub.close(5)
        col.stop()


def test_outbox_replayed_by_the_next_publisher(tmp_path, mosquitto_factory, unused_port):
    path = tmp_path / "o.sqlite"
    first = publisher("127.0.0.1", unused_port, Outbox(path))
    first.connect(0)  # no broker: do not wait, keep retrying in the background
    for i in range(3):
        first.publish("algan/d/c/alarm", f"old{i}", qos=1, durable=True)
    assert first.close(1) >= 3 and first.kept == 3

    broker = mosquitto_factory()
    col = Collector(broker.host, broker.port, "algan/d/c/#")
    second = publisher(broker.host, broker.port, Outbox(path))
    second.connect(5)
    second.publish("algan/d/c/alarm", "new", qos=1, durable=True)
    assert second.flush(10) == 0
    assert col.wait_for(lambda ms: len(ms) >= 4)
    time.sleep(0.3)
    assert payloads(col) == ["old0", "old1", "old2", "new"]
    assert second.close(5) == 0 and second.kept == 0 and len(Outbox(path)) == 0
    col.stop()


def test_refused_is_logged_once_and_retried(tmp_path, mosquitto_factory, caplog):
    from mqttkit import password_file

    pw = password_file(tmp_path / "passwd", {"edge": "right"})
    broker = mosquitto_factory(f"allow_anonymous false\npassword_file {pw}\n{run_as_me()}")
    ob = Outbox(tmp_path / "o.sqlite")
    pub = publisher(broker.host, broker.port, ob, username="edge", password="wrong")
    caplog.set_level(logging.INFO, logger="algan.edge.publish.mqtt")
    pub.connect(5)  # refused: returns (retrying in the background) instead of raising
    pub.publish("algan/d/c/alarm", "queued", qos=1, durable=True)
    time.sleep(3.5)  # reconnect_max_s 1: several refused attempts
    refused = [r for r in caplog.records if "refused the connection" in r.getMessage()]
    assert len(refused) == 1 and "Not authorized" in refused[0].getMessage()
    assert not pub.connected and len(ob) == 1
    attempts = (tmp_path / f"mosquitto-{broker.port}.log").read_text().count("not authorised")
    assert attempts >= 2, "it kept retrying"
    pub.close(1)
