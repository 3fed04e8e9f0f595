"""Shared fixtures: a real MQTT broker on a free loopback port, and message collectors.

``mqtt_broker`` starts mosquitto (from PATH or /usr/sbin) when installed, else the embedded amqtt broker, and
yields ``(host, port)`` (``ALGAN_TEST_BROKER=amqtt`` forces amqtt). ``mqtt_collector`` is a factory: each call
connects a client that subscribes to ``#`` (QoS 2, so on mosquitto the delivered QoS equals the published QoS) and
records every message in arrival order. ``mosquitto_factory`` starts extra brokers with custom config lines.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mqttkit import Collector

# one copy of the port/broker helpers, shared with the benchmarks (which must not import tests/)
from benchmarks._kit import free_port, mosquitto_path, wait_port


@dataclass
class MosquittoBroker:
    """A mosquitto process on a free port; ``extra_conf`` lines go into its config file."""

    workdir: Path
    extra_conf: str = "allow_anonymous true\n"
    host: str = "127.0.0.1"
    port: int = 0

    def __post_init__(self) -> None:
        self.port = free_port()
        self.start()

    def start(self) -> None:
        """(Re)start mosquitto on ``self.port`` and wait until it listens."""
        conf = self.workdir / f"mosquitto-{self.port}.conf"
        persistence = "" if "persistence " in self.extra_conf else "persistence false\n"  # extra_conf may enable it
        conf.write_text(f"listener {self.port} {self.host}\n{persistence}{self.extra_conf}")
        binary = mosquitto_path()
        assert binary is not None
        self.log = (self.workdir / f"mosquitto-{self.port}.log").open("a")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_port(self.host, self.port):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port}")

    def stop(self) -> None:
        """Stop the process (idempotent)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class BrokerAddress(tuple):
    """``(host, port)`` plus ``kind`` ('mosquitto' or 'amqtt'): amqtt delivers at the subscription's QoS instead of
    min(publish QoS, subscription QoS), so QoS assertions only hold on mosquitto."""

    kind: str

    def __new__(cls, host: str, port: int, kind: str) -> BrokerAddress:
        self = super().__new__(cls, (host, port))
        self.kind = kind
        return self


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[BrokerAddress]:
    """(host, port) of a fresh broker: mosquitto when installed, else the embedded amqtt broker."""
    if mosquitto_path() is not None and os.environ.get("ALGAN_TEST_BROKER", "mosquitto") != "amqtt":
        broker = MosquittoBroker(tmp_path)
        try:
            yield BrokerAddress(broker.host, broker.port, "mosquitto")
        finally:
            broker.stop()
        return
    from algan.edge.publish.broker import EmbeddedBroker

    port = free_port()
    emb = EmbeddedBroker("127.0.0.1", port)
    emb.start()
    try:
        yield BrokerAddress("127.0.0.1", port, "amqtt")
    finally:
        emb.stop()


@pytest.fixture
def mqtt_collector(mqtt_broker: tuple[str, int]) -> Iterator[Callable[..., Collector]]:
    """Factory ``mqtt_collector(topic="#", address=None) -> mqttkit.Collector`` on the test's broker (or on ``address``,
    a ``(host, port)``); all are stopped at teardown."""
    made: list[Collector] = []

    def make(topic: str = "#", address: tuple[str, int] | None = None) -> Collector:
        host, port = address or mqtt_broker
        col = Collector(host, port, topic=topic)
        made.append(col)
        return col

    yield make
    for col in made:
        col.stop()


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 with nothing listening (at the time of the call)."""
    return free_port()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[[str], MosquittoBroker]]:
    """Factory ``mosquitto_factory(extra_conf) -> MosquittoBroker`` (skips without mosquitto); stopped at teardown."""
    if mosquitto_path() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    made: list[MosquittoBroker] = []

    def make(extra_conf: str = "allow_anonymous true\n") -> MosquittoBroker:
        broker = MosquittoBroker(tmp_path, extra_conf=extra_conf)
        made.append(broker)
        return broker

    yield make
    for b in made:
        b.stop()


# ALGAN_REQUIRE_TRITON=1 (set by .ci/run, which installs tritonclient and the PyTriton venv): a test or module that
# would skip because one of them is missing fails instead, so that CI cannot pass with the Triton path unchecked
TRITON_MISSING = re.compile(r"tritonclient|PyTriton|pytriton")


def _triton_required_but_skipped(report: pytest.CollectReport | pytest.TestReport) -> str | None:
    if os.environ.get("ALGAN_REQUIRE_TRITON") != "1" or not report.skipped:
        return None
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason if TRITON_MISSING.search(reason) else None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    reason = _triton_required_but_skipped(report)
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = f"skipped although ALGAN_REQUIRE_TRITON=1 (make venv triton-venv installs both): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    reason = _triton_required_but_skipped(report)
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = f"skipped although ALGAN_REQUIRE_TRITON=1 (make venv triton-venv installs both): {reason}"
