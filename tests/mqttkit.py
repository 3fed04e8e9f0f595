"""MQTT test helpers (a plain module beside the top conftest, imported as ``mqttkit``): the message collector of
every broker test (also behind the ``mqtt_collector`` fixture; it can keep a persistent session and speak TLS with a
password), mosquitto configs with persistence, password files and TLS certificates (openssl)."""

from __future__ import annotations

import getpass
import json
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: str
    qos: int
    retain: bool
    dup: bool
    raw: bytes = b""  # the payload as sent (binary payloads such as JPEG snapshots)


class Collector:
    """Subscribes to ``topic`` (QoS 2) and records every message in order.

    Args:
        client_id: with ``persistent=True`` the broker keeps the session (subscription + queued QoS>0 messages)
            while this client is away or the broker restarts (with ``persistence true``).
        tls: ``dict(ca_certs=..., certfile=..., keyfile=...)`` for ``tls_set``.
        username, password: broker credentials.
    """

    def __init__(self, host: str, port: int, topic: str = "#", client_id: str = "", persistent: bool = False,
                 tls: dict | None = None, username: str | None = None, password: str | None = None) -> None:
        self.messages: list[Msg] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent,
                        protocol=mqtt.MQTTv311)
        if tls is not None:
            c.tls_set(**tls)
        if username is not None:
            c.username_pw_set(username, password)
        c.reconnect_delay_set(1, 1)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=2) if not rc.is_failure else None
        c.on_subscribe = lambda cl, u, mid, rcs, p: self._subscribed.set()
        c.on_message = self._on_message
        c.connect(host, port, keepalive=30)
        c.loop_start()
        if not self._subscribed.wait(10):
            c.loop_stop()
            raise RuntimeError(f"collector could not subscribe on {host}:{port}")
        self._client = c

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        with self._cond:
            self.messages.append(Msg(msg.topic, msg.payload.decode("utf-8", "replace"), msg.qos, bool(msg.retain),
                                     bool(msg.dup), bytes(msg.payload)))
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Msg]], bool], timeout: float = 10.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self.messages), timeout=timeout)

    def on(self, suffix: str) -> list[Msg]:
        with self._cond:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def events(self, suffix: str = "/alarm") -> list[dict]:
        """Alarm events (JSON) received on topics ending with ``suffix``, in order."""
        return [json.loads(m.payload) for m in self.on(suffix)]

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def persistence_conf(workdir: Path) -> str:
    """Extra mosquitto config lines: anonymous access and a persistent database (sessions survive a restart)."""
    store = workdir / "mosquitto-db"
    store.mkdir(exist_ok=True)
    return f"allow_anonymous true\npersistence true\npersistence_location {store}/\n{run_as_me()}"


def run_as_me() -> str:
    """mosquitto started as root drops to user 'mosquitto', which cannot enter pytest's private tmp dirs: stay."""
    return f"user {getpass.getuser()}\n"


def password_file(path: Path, users: dict[str, str]) -> Path:
    """A mosquitto password file (hashed with mosquitto_passwd)."""
    path.write_text("")
    for user, password in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(path), user, password], check=True, capture_output=True)
    return path


def make_certs(workdir: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """A CA, a server certificate for ``host`` (IP SAN and CN) and a client certificate, made with openssl."""
    d = workdir / "certs"
    d.mkdir(exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=algan-test-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    for name, cn in (("server", host), ("client", "algan-edge")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr")
        ext = d / f"{name}.ext"
        ext.write_text(f"subjectAltName=IP:{host}\n" if name == "server" else "extendedKeyUsage=clientAuth\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days",
            "2", "-extfile", str(ext), "-out", f"{name}.crt")
    names = ("ca.crt", "server.crt", "server.key", "client.crt", "client.key")
    return {n: d / n for n in names}
