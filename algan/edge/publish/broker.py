"""Embedded MQTT broker (amqtt) for machines without one, e.g. a demo laptop.

Started by the daemon only when ``mqtt.embedded_broker: auto``, the host is a loopback address, no credentials and
no TLS are configured, and nothing listens on host:port (:func:`wants_embedded_broker`). It runs in a background
thread with its own asyncio loop, allows anonymous clients, keeps retained messages in memory, and stops with the
daemon. Production devices should run mosquitto (see ``deploy/``, whose edge.yaml sets ``embedded_broker: never``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading

from algan.edge.config import MqttConfig
from algan.edge.errors import BrokerError
from algan.edge.publish.mqtt import probe_tcp

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def embedded_broker_refusal(cfg: MqttConfig) -> str | None:
    """Why ``embedded_broker: auto`` must not start the anonymous embedded broker for this config, or ``None``.

    Never for a config with credentials or TLS (the broker it expects authenticates its clients: an anonymous
    stand-in would acknowledge alarms that the real broker's subscribers never get) or a non-loopback host.
    """
    if cfg.username is not None or cfg.password is not None or cfg.password_file is not None:
        return "mqtt.username/password are set"
    if cfg.tls is not None:
        return "mqtt.tls is set"
    if not is_loopback(cfg.host):
        return f"mqtt.host {cfg.host} is not a loopback address"
    return None


def wants_embedded_broker(cfg: MqttConfig) -> bool:
    """Whether the daemon should start its own broker: ``embedded_broker: auto``, no credentials, no TLS, a loopback
    host (:func:`embedded_broker_refusal`) and nothing listening on host:port (probed with a TCP connect)."""
    return (cfg.embedded_broker == "auto" and embedded_broker_refusal(cfg) is None
            and probe_tcp(cfg.host, cfg.port, 0.5) is not None)


class EmbeddedBroker:
    """An amqtt broker listening on ``host:port`` in a daemon thread.

    Args:
        host: bind address (loopback).
        port: TCP port.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="embedded-broker", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it listens.

        Raises:
            BrokerError: amqtt is missing, or the broker did not start within ``timeout`` seconds.
        """
        try:
            import amqtt.broker  # noqa: F401
        except ImportError:
            msg = "mqtt.embedded_broker needs the amqtt package (pip install amqtt); or run mosquitto"
            raise BrokerError(msg) from None
        # amqtt logs ERROR for every TCP probe that closes without an MQTT packet (our own "is a broker there?"
        # check does exactly that); its messages only help when debugging
        quiet = logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.CRITICAL
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(quiet)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            reason = self._error or f"not listening after {timeout:g} s"
            raise BrokerError(f"cannot start the embedded MQTT broker on {self.host}:{self.port}: {reason}")
        log.info("started embedded MQTT broker (amqtt) on %s:%d", self.host, self.port)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # reported to start() or logged at stop
            self._error = e
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._stopped = asyncio.Event()
        broker = Broker(config)
        await broker.start()
        self._ready.set()
        await self._stopped.wait()
        await broker.shutdown()

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the broker down (idempotent)."""
        if self._loop is not None and self._stopped is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout)
            log.info("stopped embedded MQTT broker")
