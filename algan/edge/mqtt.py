"""MQTT publisher of the edge daemon (paho-mqtt 2.x, callback API v2).

* ``connect_async`` + ``loop_start``: paho's network thread reconnects by itself after an outage.
* Last Will: retained QoS1 ``offline`` on ``<prefix>/<device>/status``; ``online`` (retained, QoS1) is published on
  every successful (re)connect, ``offline`` explicitly at a clean shutdown.
* ``on_connect`` checks the CONNACK reason code: a refusal (bad credentials, banned client id...) is logged as one
  line and never treated as connected.
* QoS1 messages published while disconnected stay in paho's queue (bounded by ``mqtt.max_queued_messages``) and
  are sent after reconnecting; QoS0 messages published while disconnected are dropped and counted in ``lost``.
* Every accepted message is tracked until paho reports it written (QoS0) or acknowledged (QoS1), so
  :meth:`MqttPublisher.flush` can guarantee nothing is lost at exit.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Protocol

import paho.mqtt.client as mqtt

from algan.edge.config import MqttConfig
from algan.edge.errors import BrokerError
from algan.edge.messages import STATUS_OFFLINE, STATUS_ONLINE

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """What the daemon needs from a message transport."""

    def publish(self, topic: str, payload: str, qos: int = 0, retain: bool = False) -> None: ...

    def flush(self, timeout: float) -> int: ...

    def close(self, timeout: float) -> int: ...


def probe_tcp(host: str, port: int, timeout: float = 1.0) -> str | None:
    """Try a TCP connection: ``None`` when something accepts it, else the OS reason (e.g. 'Connection refused')."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__


class MqttPublisher:
    """Publishes the daemon's messages to one broker.

    Args:
        cfg: MQTT section of the config.
        client_id: MQTT client id.
        status_topic: ``<prefix>/<device>/status`` (Will and online/offline).

    Attributes:
        published: messages handed to the broker connection and confirmed written/acked.
        lost: messages dropped (QoS0 while disconnected, or the QoS1 queue was full).
    """

    def __init__(self, cfg: MqttConfig, client_id: str, status_topic: str) -> None:
        self.cfg = cfg
        self.status_topic = status_topic
        self.published = 0
        self.lost = 0
        self._lock = threading.Condition()
        self._pending: set[int] = set()
        self._early: set[int] = set()  # mids acked before publish() returned
        self._connected = threading.Event()
        self._refused: str | None = None
        self._closing = False
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        c.will_set(status_topic, STATUS_OFFLINE, qos=1, retain=True)
        if cfg.username is not None:
            c.username_pw_set(cfg.username, cfg.password)
        c.max_queued_messages_set(cfg.max_queued_messages)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        self._client = c

    @property
    def where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}"

    # -- paho callbacks (network thread) -------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            first = self._refused is None
            self._refused = str(reason_code)
            if first:
                log.error("MQTT broker %s refused the connection: %s; check mqtt.username/password/client_id",
                          self.where, reason_code)
            return
        self._refused = None
        log.info("connected to MQTT broker %s", self.where)
        self.publish(self.status_topic, STATUS_ONLINE, qos=1, retain=True)  # before connect() returns: first message
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._closing:
            log.warning("lost MQTT broker %s (%s); reconnecting, alarms are queued meanwhile", self.where, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
                self.published += 1
                self._lock.notify_all()
            else:
                self._early.add(mid)

    # -- API -----------------------------------------------------------------------------------------------
    def connect(self, timeout: float) -> None:
        """Start the network thread and wait for the first accepted connection.

        Raises:
            BrokerError: the broker refused the connection or was not reachable within ``timeout`` seconds.
        """
        try:
            self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except (OSError, ValueError) as e:
            raise BrokerError(f"cannot connect to MQTT broker {self.where}: {e}; check mqtt.host/port") from None
        self._client.loop_start()
        step = 0.05
        waited = 0.0
        while waited < timeout:
            if self._connected.wait(step):
                return
            waited += step
            if self._refused is not None:
                self._stop_loop()
                msg = (
                    f"MQTT broker {self.where} refused the connection ({self._refused}); "
                    "check mqtt.username, mqtt.password and mqtt.client_id"
                )
                raise BrokerError(msg)
        self._stop_loop()
        reason = probe_tcp(self.cfg.host, self.cfg.port) or "no MQTT answer"
        msg = (
            f"cannot reach MQTT broker {self.where} within {timeout:g} s ({reason}); start the broker "
            "(e.g. mosquitto), fix mqtt.host/port, or use mqtt.embedded_broker: auto on a loopback host"
        )
        raise BrokerError(msg)

    def _stop_loop(self) -> None:
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: str, qos: int = 0, retain: bool = False) -> None:
        """Queue a message; never blocks, never raises for a broker outage (the loss is counted instead)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        rc = info.rc
        if rc == mqtt.MQTT_ERR_QUEUE_SIZE or (rc == mqtt.MQTT_ERR_NO_CONN and qos == 0) or (
            rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)
        ):
            with self._lock:
                self.lost += 1
                lost = self.lost
            if rc == mqtt.MQTT_ERR_QUEUE_SIZE and (lost == 1 or lost % 1000 == 0):
                log.warning("MQTT queue full (%d messages): %d messages lost so far", self.cfg.max_queued_messages,
                            lost)
            return
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                self.published += 1
            else:
                self._pending.add(info.mid)

    def pending(self) -> int:
        """Messages accepted but not yet confirmed written/acked."""
        with self._lock:
            return len(self._pending)

    def flush(self, timeout: float) -> int:
        """Wait until every accepted message is written (QoS0) or acknowledged (QoS1).

        Returns:
            The number of messages still unconfirmed after ``timeout`` seconds (0 = all delivered).
        """
        with self._lock:
            self._lock.wait_for(lambda: not self._pending, timeout=timeout)
            return len(self._pending)

    def close(self, timeout: float) -> int:
        """Publish retained ``offline`` status, flush, disconnect and stop the network thread.

        Returns:
            Messages not confirmed within ``timeout`` seconds (they are lost).
        """
        self.publish(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        left = self.flush(timeout)
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()
        return left
