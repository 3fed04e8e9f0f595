"""Helpers shared by the benchmarks: a broker on a free port, a score subscriber, a torch-free stand-in model and a
synthetic video. Deliberately independent of ``tests/`` (benchmarks must run from a plain checkout)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 10.0) -> bool:
    """Whether something accepts TCP connections on ``host:port`` within ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def mosquitto_path() -> str | None:
    """Path of the mosquitto binary, or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").is_file() else None


class Broker:
    """An MQTT broker on a free loopback port: mosquitto when installed (what a plant runs), else the package's
    embedded amqtt broker (:class:`algan.edge.publish.broker.EmbeddedBroker`). Use as a context manager.

    Attributes:
        host, port: where it listens.
        kind: ``mosquitto`` or ``amqtt``.
    """

    def __init__(self, workdir: Path, prefer: str = "mosquitto") -> None:
        self.host, self.port = "127.0.0.1", free_port()
        self._proc: subprocess.Popen | None = None
        self._embedded = None
        self.pid: int | None = None  # the mosquitto process
        binary = mosquitto_path() if prefer == "mosquitto" else None
        if binary is not None:
            conf = workdir / f"mosquitto-{self.port}.conf"
            conf.write_text(f"listener {self.port} {self.host}\npersistence false\nallow_anonymous true\n")
            self._log = (workdir / f"mosquitto-{self.port}.log").open("a")
            self._proc = subprocess.Popen([binary, "-c", str(conf)], stdout=self._log, stderr=subprocess.STDOUT)
            self.kind = "mosquitto"
            self.pid = self._proc.pid
        else:
            from algan.edge.publish.broker import EmbeddedBroker

            self._embedded = EmbeddedBroker(self.host, self.port)
            self._embedded.start()
            self.kind = "amqtt"
        if not wait_port(self.host, self.port):
            self.stop()
            raise RuntimeError(f"{self.kind} did not start on port {self.port}")

    def stop(self) -> None:
        """Stop the broker (idempotent)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._log.close()
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Subscriber:
    """Records the payloads published on ``topic`` (QoS 1 subscription), in arrival order."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.payloads: list[bytes] = []
        self._cond = threading.Condition()
        ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(topic, qos=1) if not rc.is_failure else None
        c.on_subscribe = lambda cl, u, mid, rcs, p: ready.set()
        c.on_message = self._on_message
        c.connect(host, port, keepalive=30)
        c.loop_start()
        if not ready.wait(10):
            c.loop_stop()
            raise RuntimeError(f"could not subscribe to {topic} on {host}:{port}")
        self._client = c

    @property
    def native_ids(self) -> set[int]:
        """Native thread ids of the subscriber's network thread (for CPU accounting)."""
        t = getattr(self._client, "_thread", None)
        return {t.native_id} if t is not None and t.native_id is not None else set()

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        with self._cond:
            self.payloads.append(msg.payload)  # type: ignore[attr-defined]
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[bytes]], bool], timeout: float) -> bool:
        """Wait until ``pred(payloads)`` holds; False after ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: pred(self.payloads), timeout)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def standin_model(path: Path, size: tuple[int, int] = (224, 224), model_id: str = "bench-standin") -> Path:
    """Write a torch-free stand-in ONNX model with the edge contract (``images`` uint8 [N,H,W,3] in, ``scores``
    float32 [N] out, ``scores = mean(images) / 128``): measures the runtime around a model, not a model."""
    import onnx
    from onnx import TensorProto, helper

    h, w = size
    inp = helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", h, w, 3])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"])
    nodes = [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Div", ["m", "k"], ["scores"])]
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [128.0])
    model = helper.make_model(helper.make_graph(nodes, "standin", [inp], [out], initializer=[k]),
                              opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    helper.set_model_props(model, {"algan.model_id": model_id})
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def synthetic_video(path: Path, n_frames: int, size: tuple[int, int] = (224, 224), fps: float = 25.0) -> Path:
    """An mp4v video of ``n_frames`` noisy grey frames (seeded), shape ``size`` (H, W)."""
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError("cv2.VideoWriter cannot write mp4v here")
    rng = np.random.default_rng(0)
    for _ in range(n_frames):
        writer.write(rng.integers(0, 256, (h, w, 3), np.uint8))
    writer.release()
    return path


def print_rows(rows: Sequence[tuple[str, str]]) -> None:
    """Print ``label  value`` rows aligned (the benchmarks' figures)."""
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}", flush=True)


def sweep_sets(names: str, work: Path, smoke: bool, data_sets: Callable[[list[str], Path, bool], dict],
               run_one: Callable[[str, Path, str], list[dict]]) -> list[dict]:
    """The rows of ``run_one(name, root, layout)`` for every data set ``data_sets(names.split(","), work, smoke)``
    builds; a smoke run's ``work`` (a temporary folder the benchmark made for it) is removed afterwards."""
    rows: list[dict] = []
    try:
        for name, (root, layout) in data_sets(names.split(","), work, smoke).items():
            rows += run_one(name, root, layout)
    finally:
        if smoke:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def finish(rows: list[dict], as_json: bool) -> int:
    """Print the rows as JSON lines when asked; exit status 0 when there are rows, else 1."""
    if as_json:
        import json

        for r in rows:
            print(json.dumps(r))
    return 0 if rows else 1
