"""MqttPublisher against real brokers: QoS1 alarms survive a broker restart, QoS0 losses are counted, flush."""

from __future__ import annotations

import socket
import time

import pytest

from algan.edge.config import MqttConfig
from algan.edge.errors import BrokerError
from algan.edge.publish.mqtt import MqttPublisher
from algan.edge.sdnotify import SystemdNotifier


def publisher(host: str, port: int, **kw) -> MqttPublisher:
    cfg = MqttConfig(host=host, port=port, embedded_broker="never", **kw)
    return MqttPublisher(cfg, "test-edge", "algan/d/status")


@pytest.mark.broker
def test_publish_flush_close(mqtt_broker, mqtt_collector):
    col = mqtt_collector()
    pub = publisher(*mqtt_broker)
    pub.connect(5)
    for i in range(200):
        pub.publish("algan/d/c/score", str(i), qos=0)
    pub.publish("algan/d/c/alarm", "a", qos=1)
    assert pub.close(10) == 0 and pub.lost == 0
    assert pub.published == 203  # online + 200 + alarm + offline
    assert col.wait_for(lambda ms: len(ms) == 203)
    assert [m.payload for m in col.messages if m.topic.endswith("/score")] == [str(i) for i in range(200)]


@pytest.mark.broker
def test_qos1_queued_through_broker_restart(mosquitto_factory, mqtt_collector):
    broker = mosquitto_factory()
    pub = publisher(broker.host, broker.port)
    pub.connect(5)
    # the retained QoS 1 "online" status is acknowledged before the broker goes (on a loaded machine its PUBACK
    # could still be in flight, and it would be counted as a sixth pending message)
    assert pub.flush(5) == 0
    broker.stop()
    time.sleep(0.3)  # paho notices the dead connection
    for i in range(5):
        pub.publish("algan/d/c/alarm", f"alarm{i}", qos=1)  # queued by paho while disconnected
    pub.publish("algan/d/c/score", "lost", qos=0)
    assert pub.lost == 1 and pub.pending() == 5
    broker.start()  # same port; subscribe before paho's reconnect (>= 1 s later) delivers the queue
    col = mqtt_collector(address=(broker.host, broker.port))
    assert pub.flush(15) == 0
    alarms = [f"alarm{i}" for i in range(5)]
    assert col.wait_for(lambda ms: [m.payload for m in ms if m.topic.endswith("/alarm")] == alarms, timeout=5)
    assert pub.close(5) == 0


def test_connect_unreachable_raises_one_line(unused_port):
    pub = publisher("127.0.0.1", unused_port)
    with pytest.raises(BrokerError) as info:
        pub.connect(0.5)
    assert "cannot reach MQTT broker 127.0.0.1:" in str(info.value) and "\n" not in str(info.value)


def test_sdnotify(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as srv:
        srv.bind(str(path))
        srv.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        monkeypatch.setenv("WATCHDOG_USEC", "2000000")
        n = SystemdNotifier()
        n.notify("READY=1")
        n.watchdog()
        n.watchdog()  # rate-limited: no second ping within 1 s
        assert srv.recv(64) == b"READY=1" and srv.recv(64) == b"WATCHDOG=1"
        srv.settimeout(0.1)
        with pytest.raises(TimeoutError):
            srv.recv(64)
