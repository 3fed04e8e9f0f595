"""MQTT publisher of the edge daemon (paho-mqtt 2.x, callback API v2), with a persistent outbox for alarms.

* ``connect_async`` + ``loop_start``: paho's network thread reconnects by itself after an outage, waiting
  ``mqtt.reconnect_min_s`` doubling up to ``mqtt.reconnect_max_s`` between attempts.
* Last Will: retained QoS1 ``offline`` on ``<prefix>/<device>/status``; ``online`` (retained, QoS1) is published on
  every successful (re)connect (plus the Home Assistant discovery configs, when enabled), ``offline`` explicitly at a
  clean shutdown.
* ``on_connect`` checks the CONNACK reason code: a refusal (bad credentials, banned client id...) is logged as ONE
  line per refusal streak and retried with the same backoff; it is never treated as connected.
* Durable messages (``publish(..., durable=True)``: alarm events and camera states) are first committed to the
  :class:`~algan.edge.publish.outbox.Outbox`, then handed to paho, in sequence order, by one sender thread while the
  broker is connected; the row is deleted when paho reports the PUBACK (``on_publish`` with the message's ``mid``).
  Each row is handed to paho once per process: paho itself re-sends its unacknowledged QoS1 messages after a
  reconnect, and the sender waits for those before handing newer rows, so the order holds and the daemon sends
  nothing twice.
  Rows left at exit (broker down, SIGKILL) are delivered by the next run.
* Poison messages: a row whose topic no broker accepts (control characters, wildcards, not UTF-8; see
  :func:`topic_problem`) or that the client refuses is moved to the outbox's dead-letter table at once; a row that
  was the oldest unacknowledged one each time the broker closed the connection, ``mqtt.outbox.max_tries`` times in a
  row (counted on disk, across restarts), is moved there too and taken out of paho's re-send queue. One ERROR line
  names its topic and the reason; delivery goes on with the next row (``algan-edge outbox list|retry|drop``).
* Other QoS1 messages published while disconnected stay in paho's memory queue (bounded by
  ``mqtt.max_queued_messages``); QoS0 messages published while disconnected are dropped and counted in ``lost``.
* Every accepted message is tracked until paho reports it written (QoS0) or acknowledged (QoS1), so
  :meth:`MqttPublisher.flush` can tell what is still undelivered at exit.
"""

from __future__ import annotations

import functools
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import paho.mqtt.client as mqtt

from algan.edge.config import MqttConfig, MqttTlsConfig
from algan.edge.errors import BrokerError
from algan.edge.logs import RepeatedErrors
from algan.edge.publish.delivery import RESYNC_TIMEOUT_S, SEND_WINDOW, DeliveryLedger
from algan.edge.publish.messages import STATUS_OFFLINE, STATUS_ONLINE
from algan.edge.publish.outbox import Outbox, OutboxError

log = logging.getLogger(__name__)

__all__ = ["RESYNC_TIMEOUT_S", "SEND_WINDOW", "Message", "MqttPublisher", "Publisher", "probe_tcp", "probe_tls",
           "tls_context", "tls_hint", "topic_problem"]

Message = tuple[str, str, int, bool]  # topic, payload, qos, retain

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def topic_problem(topic: str) -> str | None:
    """Why a broker would refuse to take a PUBLISH on ``topic`` (MQTT 3.1.1 section 4.7; mosquitto closes the
    connection on a control character), else ``None``."""
    if not topic:
        return "the topic is empty"
    m = _CONTROL.search(topic)
    if m is not None:
        return f"the topic holds a control character (U+{ord(m.group()):04X})"
    if "+" in topic or "#" in topic:
        return "the topic holds a wildcard ('+' or '#')"
    try:
        n = len(topic.encode("utf-8"))
    except UnicodeEncodeError:
        return "the topic is not valid UTF-8"
    if n > 65535:
        return f"the topic is {n} bytes long (at most 65535)"
    return None


class Publisher(Protocol):
    """What the daemon needs from a message transport.

    Attributes:
        lost: messages dropped so far (never delivered), for the stats message.
        outbox: the durable queue of undelivered alarm events and states, or ``None`` (its depth and drops go into
            the stats message).
    """

    lost: int
    outbox: Outbox | None

    def publish(self, topic: str, payload: str, qos: int = 0, retain: bool = False, durable: bool = False) -> None: ...

    def flush(self, timeout: float) -> int: ...

    def close(self, timeout: float) -> int: ...


def probe_tcp(host: str, port: int, timeout: float = 1.0) -> str | None:
    """Try a TCP connection: ``None`` when something accepts it, else the OS reason (e.g. 'Connection refused')."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__


def tls_context(tls: MqttTlsConfig) -> ssl.SSLContext:
    """SSL context for the broker connection (certificate chain always verified; host name unless ``insecure``).

    Raises:
        BrokerError: a CA, certificate or key file cannot be loaded (one line naming the setting).
    """
    try:
        ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    except (OSError, ssl.SSLError) as e:
        raise BrokerError(f"mqtt.tls.ca_file: cannot load {tls.ca_file} ({e}); give a PEM CA certificate") from None
    if tls.cert_file is not None:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as e:
            msg = (f"mqtt.tls.cert_file/key_file: cannot load {tls.cert_file} with {tls.key_file} ({e}); give a PEM "
                   "certificate and its unencrypted key")
            raise BrokerError(msg) from None
    if tls.insecure:
        ctx.check_hostname = False
    return ctx


def tls_hint(reason: str) -> str:
    """How to fix a failed TLS check: a host name mismatch is a certificate without this host name (mqtt.host, or
    for a test setup mqtt.tls.insecure); anything else (an unknown issuer, expired certificate...) is fixed by the
    right CA in mqtt.tls.ca_file: insecure only skips the host name check and would not help."""
    low = reason.lower()
    if "mismatch" in low or "hostname" in low or "host name" in low:
        return ("the broker certificate does not name mqtt.host: connect by a name in its subjectAltName, re-issue "
                "the certificate with this host, or (test setups only) set mqtt.tls.insecure: true")
    return ("set mqtt.tls.ca_file to the CA certificate that signed the broker's certificate (PEM), or renew an "
            "expired certificate")


def probe_tls(host: str, port: int, ctx: ssl.SSLContext, timeout: float = 2.0) -> str | None:
    """Try a TLS handshake: ``None`` when it succeeds, else the reason (e.g. a certificate verification failure)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(
            raw, server_hostname=host
        ):
            return None
    except ssl.SSLCertVerificationError as e:
        return f"TLS certificate check failed: {e.verify_message}"
    except ssl.SSLError as e:
        return f"TLS handshake failed: {e.reason or e}"
    except OSError as e:
        return e.strerror or str(e) or type(e).__name__


def guarded(callback: Callable[..., None]) -> Callable[..., None]:
    """``callback`` for paho that logs its exception (with the traceback) instead of raising it.

    paho ends its network thread on the first exception a callback raises (``suppress_exceptions`` is off), after
    which the daemon would neither publish nor reconnect again; a guarded callback leaves the connection running."""

    @functools.wraps(callback)
    def run(*args: object) -> None:
        try:
            callback(*args)
        except Exception:
            log.exception("MQTT callback %s failed; the connection goes on", callback.__name__)

    return run


class MqttPublisher:
    """Publishes the daemon's messages to one broker.

    Args:
        cfg: MQTT section of the config (password already read from ``password_file``).
        client_id: MQTT client id.
        status_topic: ``<prefix>/<device>/status`` (Will and online/offline).
        outbox: persistent queue of durable messages; ``None`` keeps them in memory only.
        birth: messages published after ``online`` on every (re)connect (e.g. Home Assistant discovery).

    Attributes:
        published: messages handed to the broker connection and confirmed written/acked.
        lost: messages dropped (QoS0 while disconnected, or the in-memory QoS1 queue was full).
        kept: durable messages still in the outbox after :meth:`close` (delivered by the next run).
    """

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        status_topic: str,
        outbox: Outbox | None = None,
        birth: Sequence[Message] = (),
    ) -> None:
        self.cfg = cfg
        self.status_topic = status_topic
        self.outbox = outbox
        self.birth = list(birth)
        self.kept = 0
        self._lock = threading.Condition()  # guards the ledger and the flags below, wakes the sender / flush
        self._ledger = DeliveryLedger(SEND_WINDOW, RESYNC_TIMEOUT_S)  # what is in flight, confirmed, next to hand
        self._connected = threading.Event()
        self._refused: str | None = None
        self._closing = False
        self._kick = False  # something changed that may let the sender hand more rows
        self._forget_mids: set[int] = set()  # dead letters' mids: out of paho's re-send queue at the next connect
        self._flushing = 0  # threads waiting in flush(): every confirmation wakes them
        self._errors = RepeatedErrors(log)
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
        c.will_set(status_topic, STATUS_OFFLINE, qos=1, retain=True)
        if cfg.username is not None:
            c.username_pw_set(cfg.username, cfg.password)
        self._tls_ctx: ssl.SSLContext | None = None
        if cfg.tls is not None:
            self._tls_ctx = tls_context(cfg.tls)
            c.tls_set_context(self._tls_ctx)
            if cfg.tls.insecure:
                c.tls_insecure_set(True)
        c.max_queued_messages_set(cfg.max_queued_messages)
        c.reconnect_delay_set(min_delay=cfg.reconnect_min_s, max_delay=cfg.reconnect_max_s)
        c.on_connect = guarded(self._on_connect)
        c.on_disconnect = guarded(self._on_disconnect)
        c.on_publish = guarded(self._on_publish)
        self._client = c
        self._sender = threading.Thread(target=self._send_loop, name="mqtt-outbox", daemon=True)

    @property
    def published(self) -> int:
        """Messages handed to the broker connection and confirmed written/acked."""
        return self._ledger.published

    @property
    def lost(self) -> int:
        """Messages dropped (QoS0 while disconnected, or the in-memory QoS1 queue was full)."""
        return self._ledger.lost

    @property
    def where(self) -> str:
        return f"{self.cfg.host}:{self.cfg.port}" + (" (TLS)" if self.cfg.tls is not None else "")

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the connection."""
        return self._connected.is_set()

    # -- paho callbacks (network thread) -------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            if self._refused is None:
                log.error("MQTT broker %s refused the connection: %s; check mqtt.username, mqtt.password(_file) and "
                          "mqtt.client_id; retrying every %d-%d s, alarms wait in the outbox", self.where,
                          reason_code, self.cfg.reconnect_min_s, self.cfg.reconnect_max_s)
            self._refused = str(reason_code)
            return
        self._refused = None
        self._forget_in_client()
        log.info("connected to MQTT broker %s", self.where)
        self.publish(self.status_topic, STATUS_ONLINE, qos=1, retain=True)  # before connect() returns: first message
        for topic, payload, qos, retain in self.birth:
            self.publish(topic, payload, qos=qos, retain=retain)
        with self._lock:
            # paho re-sends its unacknowledged messages right after this callback; newer rows wait for them
            self._ledger.connected(time.monotonic())
            self._connected.set()
            self._kick = True
            self._lock.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        was = self._connected.is_set()
        self._connected.clear()
        with self._lock:  # QoS0 packets not yet written are discarded by paho: they will never be confirmed
            self._ledger.disconnected()
            oldest = self._ledger.oldest_unacked() if was else None
        if was and not self._closing:
            log.warning("lost MQTT broker %s (%s); reconnecting, alarms are queued meanwhile", self.where, reason_code)
        if oldest is not None and self.outbox is not None and not self._closing:
            self._count_try(oldest, str(reason_code))

    def _count_try(self, seq: int, reason: str) -> None:
        """The connection closed while row ``seq`` was the oldest unacknowledged one: one more try on disk; at
        ``max_tries`` it becomes a dead letter and leaves paho's re-send queue."""
        assert self.outbox is not None
        tries = self.outbox.tried(seq)
        limit = self.cfg.outbox.max_tries
        if tries < limit:
            return
        with self._lock:
            mid = self._ledger.forget(seq)
            if mid is not None:
                self._forget_mids.add(mid)
        self._dead_letter(seq, f"the broker closed the connection each time it was sent ({tries} tries, last: "
                               f"{reason})")

    def _forget_in_client(self) -> None:
        """Take the dead-lettered messages out of paho's queue of messages to re-send after a reconnect.

        Runs in :meth:`_on_connect`, which paho calls before it walks that queue to re-send it. Not in
        :meth:`_on_disconnect`: paho also calls that from inside its re-send walk (a write fails mid-walk), where
        removing an entry would end paho's network thread with "OrderedDict mutated during iteration"."""
        with self._lock:
            mids, self._forget_mids = self._forget_mids, set()
        if not mids:
            return
        lock = getattr(self._client, "_out_message_mutex", None)
        queued = getattr(self._client, "_out_messages", None)
        if lock is None or queued is None:
            log.warning("cannot take %d dead-lettered message(s) out of the MQTT client's queue (paho changed); they "
                        "may be sent once more", len(mids))
            return
        with lock:
            for mid in mids:
                queued.pop(mid, None)

    def _dead_letter(self, seq: int, reason: str) -> None:
        """Move outbox row ``seq`` to the dead letters with one ERROR line naming its topic and ``reason``."""
        assert self.outbox is not None
        try:
            topic = self.outbox.dead_letter(seq, reason)
        except OutboxError as e:
            self._errors.error("outbox", str(e))
            return
        if topic is not None:
            log.error("MQTT message %d on topic %r moved to the dead letters of %s: %s; delivery goes on with the next "
                      "(see: algan-edge outbox list)", seq, topic, self.outbox.path, reason)

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        with self._lock:
            done = self._ledger.confirmed(mid)
            if done.known and done.seq is None:  # a non-durable message (a score): only a flush() waits for it
                if self._flushing:
                    self._lock.notify_all()
                return
        if not done.known:
            return
        if done.seq is not None and self.outbox is not None:
            self.outbox.ack(done.seq)
        with self._lock:  # an acknowledged outbox row frees room in the send window
            self._kick = True
            self._lock.notify_all()

    # -- outbox sender thread ------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        assert self.outbox is not None
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._kick, 0.5)  # also polls: the resync wait ends by the clock
                self._kick = False
                if self._closing and not self._connected.is_set():
                    return
                room = self._ledger.room()
                ready = self._connected.is_set() and self._ledger.may_hand(time.monotonic())
                after = self._ledger.last_handed
            if not ready:
                continue
            try:
                self._hand(self.outbox.after(after, room))
            except Exception:  # never let the sender die silently: the outbox would stop draining
                log.exception("MQTT outbox sender failed; retrying")
                time.sleep(1.0)

    def _hand(self, rows: list) -> None:
        for row in rows:
            problem = topic_problem(row.topic)
            if problem is None:
                try:
                    info = self._client.publish(row.topic, row.payload, qos=row.qos, retain=row.retain)
                except ValueError as e:  # paho refuses it outright (e.g. payload too large)
                    problem = f"the MQTT client refuses it ({e})"
                else:
                    if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                        return  # paho's queue is full: retry this row later
                    if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: queued, re-sent
                        problem = f"the MQTT client refuses it ({mqtt.error_string(info.rc)})"
            if problem is not None:
                with self._lock:
                    self._ledger.dropped(row.seq)
                self._dead_letter(row.seq, problem)
                continue
            with self._lock:
                acked_early = self._ledger.handed(row.seq, info.mid)
            if acked_early:
                self.outbox.ack(row.seq)  # type: ignore[union-attr]

    # -- API -----------------------------------------------------------------------------------------------
    def connect(self, timeout: float) -> None:
        """Start the network thread and wait up to ``timeout`` seconds for the first accepted connection.

        A broker that answers but refuses the connection (credentials) is logged in one line and retried in the
        background; ``timeout`` 0 does not wait at all. Either way the daemon runs on and alarms wait in the outbox.

        Raises:
            BrokerError: the broker was not reachable within ``timeout`` seconds (one line with the reason).
        """
        try:
            self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except (OSError, ValueError) as e:
            raise BrokerError(f"cannot connect to MQTT broker {self.where}: {e}; check mqtt.host/port") from None
        self._client.loop_start()
        if self.outbox is not None:
            self._sender.start()
        if timeout <= 0:
            log.info("not waiting for MQTT broker %s (mqtt.connect_timeout_s: 0); connecting in the background",
                     self.where)
            return
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._connected.wait(0.05):
                return
            if self._refused is not None:
                log.warning("running without the MQTT broker for now; alarms are kept in the outbox until it "
                            "accepts the connection")
                return
        self._stop_loop()
        reason = probe_tcp(self.cfg.host, self.cfg.port)
        if reason is None and self._tls_ctx is not None:
            reason = probe_tls(self.cfg.host, self.cfg.port, self._tls_ctx)
        hint = tls_hint(reason) if (reason and reason.startswith("TLS")) else (
            "start the broker (e.g. mosquitto), fix mqtt.host/port, or use mqtt.embedded_broker: auto on a loopback "
            "host")
        msg = f"cannot reach MQTT broker {self.where} within {timeout:g} s ({reason or 'no MQTT answer'}); {hint}"
        raise BrokerError(msg)

    def _stop_loop(self) -> None:
        with self._lock:
            self._closing = True
            self._kick = True
            self._lock.notify_all()
        self._client.disconnect()
        self._client.loop_stop()
        if self._sender.is_alive():
            self._sender.join(2.0)

    def publish(self, topic: str, payload: str, qos: int = 0, retain: bool = False, durable: bool = False) -> None:
        """Queue a message; never blocks on the network, never raises for a broker outage.

        Args:
            topic, payload, qos, retain: the MQTT message.
            durable: keep it in the outbox on disk until the broker acknowledged it (alarm events, camera
                states; needs qos >= 1). Without an outbox it goes to paho's memory queue like any QoS1 message.
        """
        problem = topic_problem(topic)
        if durable and qos >= 1 and self.outbox is not None:
            try:
                self.outbox.add(topic, payload, qos, retain)  # a bad topic becomes a dead letter in the sender
            except OutboxError as e:
                self._errors.error("outbox", f"{e}; sending messages without the outbox meanwhile")
            else:
                self._errors.ok("outbox")
                with self._lock:
                    self._kick = True
                    self._lock.notify_all()
                return
        if problem is not None:  # never handed to paho: the broker would close the connection on it, again and again
            with self._lock:
                self._ledger.refused()
            self._errors.error(f"topic:{topic}", f"MQTT message on topic {topic!r} not sent: {problem}")
            return
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        rc = info.rc
        if rc == mqtt.MQTT_ERR_QUEUE_SIZE or (rc == mqtt.MQTT_ERR_NO_CONN and qos == 0) or (
            rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)
        ):
            with self._lock:
                lost = self._ledger.refused()
            if rc == mqtt.MQTT_ERR_QUEUE_SIZE and (lost == 1 or lost % 1000 == 0):
                log.warning("MQTT queue full (%d messages): %d messages lost so far", self.cfg.max_queued_messages,
                            lost)
            return
        with self._lock:
            self._ledger.accepted(info.mid, qos)

    def pending(self) -> int:
        """Messages accepted but not yet confirmed written/acked (including durable ones in the outbox)."""
        with self._lock:
            n = self._ledger.in_flight()
        return n + (len(self.outbox) if self.outbox is not None else 0)

    def flush(self, timeout: float) -> int:
        """Wait until every accepted message is written (QoS0) or acknowledged (QoS1), outbox included.

        Returns:
            The number of messages still unconfirmed after ``timeout`` seconds (0 = all delivered).
        """
        end = time.monotonic() + timeout
        with self._lock:
            self._flushing += 1
        try:
            while True:
                left = self.pending()
                if left == 0 or time.monotonic() >= end:
                    return left
                with self._lock:
                    self._lock.wait(min(0.1, max(0.0, end - time.monotonic())))
        finally:
            with self._lock:
                self._flushing -= 1

    def close(self, timeout: float) -> int:
        """Flush the queued messages, publish the retained ``offline`` status (the last message of the run), flush,
        disconnect and stop the network and sender threads.

        When the broker is not connected at that moment the flush waits at most 1 s: durable messages are safe in
        the outbox (:attr:`kept`) and are delivered by the next run.

        Returns:
            Messages not delivered within ``timeout`` seconds (lost, or kept in the outbox for the next run).
        """
        end = time.monotonic() + (timeout if self._connected.is_set() else min(timeout, 1.0))
        # the queued alarm/state messages first, so that the device's retained "offline" is the last one out
        self.flush(max(0.0, end - time.monotonic()))
        self.publish(self.status_topic, STATUS_OFFLINE, qos=1, retain=True)
        left = self.flush(max(0.0, end - time.monotonic()))
        self._stop_loop()
        if self.outbox is not None:
            self.kept = len(self.outbox)
            if self.kept:
                log.warning("%d alarm/state messages stay in the MQTT outbox %s; they are delivered at the next start",
                            self.kept, self.outbox.path)
            self.outbox.close()
        return left
