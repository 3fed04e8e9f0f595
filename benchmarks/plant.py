"""A plant on one box: N edge daemons sharing one Triton server and one MQTT broker, against the same N daemons each
on its own ONNX Runtime.

For each N (``--daemons 1,2,4``) and each backend, one run starts N ``algan-edge run`` processes, each with its own
camera file (a looped synthetic video of dark parts with runs of bright, anomalous ones), its own config and state
directory (outbox), all publishing to one mosquitto (the package's amqtt broker when mosquitto is absent) and, with
``runner.backend: triton``, all scoring through one real ``tritonserver`` (PyTriton, ``tests/edge/triton_serve.py``:
the Python backend runs the graph with ONNX Runtime CPU; dynamic batching on, max_batch_size 16, queue delay 2 ms;
every port bound to 127.0.0.1). One subscriber (QoS 1 on ``<prefix>/#``) counts every score and alarm message.

Measured over a common window (``--seconds``, after every daemon has published its first score and ``--warmup``
seconds more): total frames/s and per-daemon frames/s (score messages received per second; fairness = min/max),
capture-to-publish latency p50/p99 (``latency_ms`` of those messages), and from Triton's Prometheus endpoint the
deltas of ``nv_inference_request_success``, ``nv_inference_count`` and ``nv_inference_exec_count`` over the window:
requests per execution (> 1: the dynamic batcher merged requests of several daemons) and frames per execution.
After SIGTERM every daemon publishes its final stats (``frames``: scores sent) and logs each alarm event it
published; received must equal sent for both.

The graph (``--model MODEL.onnx`` for an exported one): a stand-in of the detector's shape, uint8 [N, 224, 224, 3]
-> 4 strided 3x3 convolutions (the compute) and ``scores = mean(images) / 128 + 1e-4 * max(conv)`` (so bright
frames raise alarms). Exit 77 without a PyTriton venv (``make triton-venv`` or ``ALGAN_PYTRITON_PYTHON``).

    nice -n 10 python benchmarks/plant.py [--daemons 1,2,4] [--seconds 20] [--batch 8] [--fps 0] [--json out.json]
    python benchmarks/plant.py --smoke       # CI: N = 2, 64 px, 3 s windows (figures not comparable)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from benchmarks._kit import REPO, Broker, print_rows
from benchmarks.triton_runner import ports, pytriton_python

MAX_BATCH = 16  # the Triton model's max_batch_size
ALARM_LINE = re.compile(r"camera \S+: alarm (raised|cleared) at frame")
TRITON_COUNTERS = ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count")


def plant_graph(path: Path, size: int) -> Path:
    """The stand-in detector (module docstring): uint8 [N, size, size, 3] -> ``scores`` float32 [N]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Cast", ["images"], ["x0"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["x0"], ["x"], perm=[0, 3, 1, 2]),
             helper.make_node("ReduceMean", ["x0"], ["mean"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Div", ["mean", "k128"], ["bright"])]
    inits = [numpy_helper.from_array(np.array(128.0, np.float32), "k128"),
             numpy_helper.from_array(np.array(1e-4, np.float32), "k_small")]
    c, prev = 3, "x"
    for i, out_c in enumerate((16, 32, 32, 32)):
        inits.append(numpy_helper.from_array((rng.standard_normal((out_c, c, 3, 3)) * 0.01).astype(np.float32),
                                             f"w{i}"))
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], strides=[2, 2], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev, c = f"r{i}", out_c
    nodes += [helper.make_node("ReduceMax", [prev], ["feat"], axes=[1, 2, 3], keepdims=0),
              helper.make_node("Mul", ["feat", "k_small"], ["tiny"]),
              helper.make_node("Add", ["bright", "tiny"], ["scores"])]
    graph = helper.make_graph(nodes, "plant-standin",
                              [helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", size, size, 3])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, {"algan.model_id": "plant-standin"})
    onnx.save(model, str(path))
    return path


def line_video(path: Path, size: int, seed: int, normal: int = 40, anomalous: int = 10) -> Path:
    """One production line's camera file: ``normal`` dark noisy frames, then ``anomalous`` bright ones (scores about
    0.2 and 1.8 on the stand-in), mp4v; looped by the daemon, so each loop raises and clears one alarm."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (size, size))
    if not writer.isOpened():
        raise RuntimeError("cv2.VideoWriter cannot write mp4v here")
    rng = np.random.default_rng(seed)
    for i in range(normal + anomalous):
        base = 30 if i < normal else 230
        writer.write(np.clip(rng.normal(base, 12, (size, size, 3)), 0, 255).astype(np.uint8))
    writer.release()
    return path


def triton_counters(metrics_url: str, model: str) -> dict[str, float]:
    """The model's cumulative inference counters from Triton's Prometheus text endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()  # noqa: S310 - loopback URL built here
    out = dict.fromkeys(TRITON_COUNTERS, 0.0)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            name = s.name.removesuffix("_total")
            if name in out and s.labels.get("model") == model:
                out[name] += s.value
    return out


@dataclass
class Counts:
    """What the subscriber received, per device."""

    scores: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))  # (arrival, ms)
    alarms: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    stats: dict[str, dict] = field(default_factory=dict)  # the last stats message
    offline: set[str] = field(default_factory=set)


class PlantSubscriber:
    """One QoS 1 subscription to ``<prefix>/#``: score arrivals with their latency, alarm events, last stats."""

    def __init__(self, host: str, port: int, prefix: str) -> None:
        import paho.mqtt.client as mqtt

        self.counts = Counts()
        self.lock = threading.Lock()
        ready = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(f"{prefix}/#", qos=1) if not rc.is_failure else None
        c.on_subscribe = lambda cl, u, mid, rcs, p: ready.set()
        c.on_message = self._on_message
        c.connect(host, port, keepalive=30)
        c.loop_start()
        if not ready.wait(10):
            c.loop_stop()
            raise RuntimeError(f"could not subscribe to {prefix}/# on {host}:{port}")
        self._client = c
        self._depth = len(prefix.split("/"))

    def _on_message(self, client: object, userdata: object, msg: object) -> None:
        now = time.monotonic()
        levels = msg.topic.split("/")[self._depth:]  # type: ignore[attr-defined]
        device, kind = levels[0], levels[-1]
        with self.lock:
            if kind == "score" and len(levels) == 3:
                self.counts.scores[device].append((now, float(json.loads(msg.payload)["latency_ms"])))  # type: ignore[attr-defined]
            elif kind == "alarm" and len(levels) == 3:
                self.counts.alarms[device] += 1
            elif kind == "stats" and len(levels) == 2:
                self.counts.stats[device] = json.loads(msg.payload)  # type: ignore[attr-defined]
            elif kind == "status" and len(levels) == 2 and msg.payload == b"offline":  # type: ignore[attr-defined]
                self.counts.offline.add(device)

    def n_scores(self) -> dict[str, int]:
        with self.lock:
            return {d: len(v) for d, v in self.counts.scores.items()}

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def daemon_config(i: int, model: Path, video: Path, backend: str, broker: Broker, triton_url: str, batch: int,
                  prefix: str, fps: float = 0.0) -> dict:
    """Daemon ``i``'s config: its own device id (and so MQTT client id), camera file and outbox; ``fps`` > 0 paces
    the camera like a line camera (``replay_fps``), 0 replays as fast as the daemon scores."""
    camera: dict = {"name": "cam1", "source": str(video), "loop": True, "queue_size": 2 * batch}
    if fps > 0:
        camera["replay_fps"] = fps
    runner: dict = {"backend": backend, "threads": 1}
    if backend == "triton":
        runner["triton"] = {"url": triton_url, "model": "algan", "timeout_s": 30}
    return {
        "device_id": f"line{i + 1}",
        "model": str(model),
        "runner": runner,
        "batch": {"max_size": batch, "max_wait_ms": 20},
        "mqtt": {"host": broker.host, "port": broker.port, "prefix": prefix, "embedded_broker": "never",
                 "max_queued_messages": 100_000, "outbox": {"path": "outbox.sqlite"}},
        "alarm": {"threshold": 1.0, "clear_threshold": 0.9, "raise_frames": 3, "clear_frames": 5},
        "stats_interval_s": 3600,
        "cameras": [camera],
    }


def run_plant(n: int, backend: str, a: argparse.Namespace, work: Path, model: Path, broker: Broker,
              triton: tuple[str, str] | None) -> dict:
    """One measurement: ``n`` daemons on ``backend``; returns the figures (see the module docstring)."""
    prefix = f"plant/{backend}{n}"
    sub = PlantSubscriber(broker.host, broker.port, prefix)
    procs, logs, devices = [], [], [f"line{i + 1}" for i in range(n)]
    try:
        for i in range(n):
            d = work / f"{backend}-n{n}" / devices[i]
            d.mkdir(parents=True)
            video = line_video(d / "cam1.mp4", a.size, seed=i)
            cfg = daemon_config(i, model, video, backend, broker, triton[0] if triton else "", a.batch, prefix,
                                a.fps)
            (d / "edge.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
            log = (d / "daemon.log").open("w")
            logs.append(d / "daemon.log")
            procs.append(subprocess.Popen([sys.executable, "-m", "algan.cli.edge", "run", "--config",
                                           str(d / "edge.yaml")], cwd=d, stdout=log, stderr=subprocess.STDOUT,
                                          env={**os.environ, "STATE_DIRECTORY": str(d)}))
            log.close()
        end = time.monotonic() + 120
        while len(sub.n_scores()) < n and time.monotonic() < end:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a daemon exited at start: {_tail(logs)}")
            time.sleep(0.1)
        if len(sub.n_scores()) < n:
            raise RuntimeError(f"not every daemon scored within 120 s: {_tail(logs)}")
        time.sleep(a.warmup)
        before = triton_counters(triton[1], "algan") if triton else {}
        t0, c0 = time.monotonic(), sub.n_scores()
        time.sleep(a.seconds)
        t1, c1 = time.monotonic(), sub.n_scores()
        after = triton_counters(triton[1], "algan") if triton else {}
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(60) for p in procs]
        # after a clean stop each daemon's final stats and 'offline' are on the broker; wait for them
        end = time.monotonic() + 30
        while time.monotonic() < end and not (set(devices) <= sub.counts.offline
                                              and set(devices) <= set(sub.counts.stats)):
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        sub.stop()
    if any(codes):
        raise RuntimeError(f"daemon exit codes {codes}: {_tail(logs)}")
    dt = t1 - t0
    per = [(c1[d] - c0.get(d, 0)) / dt for d in devices]
    lat = np.array([ms for d in devices for (t, ms) in sub.counts.scores[d] if t0 <= t <= t1])
    sent_scores = {d: int(sub.counts.stats.get(d, {}).get("frames", -1)) for d in devices}
    sent_alarms = {d: sum(1 for line in logs[i].read_text().splitlines() if ALARM_LINE.search(line))
                   for i, d in enumerate(devices)}
    res = {
        "n": n, "backend": backend, "window_s": round(dt, 2),
        "fps_total": round(sum(per), 1), "fps_per_daemon": [round(f, 1) for f in per],
        "fairness_min_over_max": round(min(per) / max(per), 3) if max(per) > 0 else 0.0,
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 1),
        "scores_sent": sum(sent_scores.values()), "scores_received": sum(len(sub.counts.scores[d]) for d in devices),
        "alarms_sent": sum(sent_alarms.values()), "alarms_received": sum(sub.counts.alarms[d] for d in devices),
        "mqtt_lost": sum(int(sub.counts.stats.get(d, {}).get("mqtt_lost", 0)) for d in devices),
    }
    if triton:
        delta = {k: after[k] - before[k] for k in TRITON_COUNTERS}
        execs = max(delta["nv_inference_exec_count"], 1.0)
        res["triton_requests_per_execution"] = round(delta["nv_inference_request_success"] / execs, 2)
        res["triton_frames_per_execution"] = round(delta["nv_inference_count"] / execs, 2)
        res["triton_executions"] = int(delta["nv_inference_exec_count"])
    return res


def _tail(logs: list[Path]) -> str:
    return " | ".join(f"{p.parent.name}: {p.read_text()[-300:]!r}" for p in logs if p.is_file())


def start_triton(exe: str, model: Path, work: Path) -> tuple[subprocess.Popen, str, str]:
    grpc, http, metrics = ports(3)
    ready = work / "triton-ready"
    log = (work / "tritonserver.log").open("w")
    proc = subprocess.Popen([exe, str(REPO / "tests" / "edge" / "triton_serve.py"), str(grpc), str(http),
                             str(metrics), str(MAX_BATCH), f"algan={model}"], stdin=subprocess.PIPE, stdout=log,
                            stderr=subprocess.STDOUT, env={**os.environ, "ALGAN_TRITON_READY": str(ready)})
    log.close()
    t0 = time.monotonic()
    while not ready.exists() and proc.poll() is None and time.monotonic() - t0 < 180:
        time.sleep(0.2)
    if not ready.exists():
        stop_triton(proc)
        raise RuntimeError(f"tritonserver did not start: {(work / 'tritonserver.log').read_text()[-500:]}")
    return proc, f"127.0.0.1:{grpc}", f"http://127.0.0.1:{metrics}/metrics"


def stop_triton(proc: subprocess.Popen) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--daemons", default="1,2,4", help="comma-separated numbers of daemons (default 1,2,4)")
    ap.add_argument("--seconds", type=float, default=20.0, help="measurement window per run (default 20 s)")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds after every daemon's first score (default 3)")
    ap.add_argument("--batch", type=int, default=8, help="daemon batch.max_size (default 8)")
    ap.add_argument("--size", type=int, default=224, help="frame size of the stand-in graph (default 224 px)")
    ap.add_argument("--fps", type=float, default=0.0,
                    help="each camera paced at this frame rate, like a line camera (default 0: as fast as scored)")
    ap.add_argument("--model", type=Path, help="an exported model.onnx (default: the stand-in graph)")
    ap.add_argument("--backends", default="triton,onnxruntime", help="default: triton,onnxruntime")
    ap.add_argument("--json", type=Path, help="write the figures as JSON here")
    ap.add_argument("--smoke", action="store_true", help="CI size: N = 2, 64 px, 3 s windows")
    a = ap.parse_args(argv)
    if a.smoke:
        a.daemons, a.seconds, a.warmup, a.size = "2", 3.0, 1.0, 64
    counts = [int(x) for x in a.daemons.split(",")]
    backends = [b.strip() for b in a.backends.split(",")]
    if not set(backends) <= {"triton", "onnxruntime"}:
        print(f"--backends: triton and/or onnxruntime, not {a.backends}", file=sys.stderr)
        return 2
    exe = pytriton_python() if "triton" in backends else None
    if "triton" in backends and exe is None:
        print("no PyTriton venv (`make triton-venv`, or ALGAN_PYTRITON_PYTHON naming one with nvidia-pytriton, "
              "onnxruntime)", file=sys.stderr)
        return 77
    work = Path(tempfile.mkdtemp(prefix="algan-plant-"))
    triton_proc = None
    results = []
    try:
        model = a.model or plant_graph(work / "model.onnx", a.size)
        with Broker(work) as broker:
            triton = None
            if exe is not None:
                triton_proc, url, metrics = start_triton(exe, model, work)
                triton = (url, metrics)
            for n in counts:
                for backend in backends:
                    r = run_plant(n, backend, a, work, model, broker, triton if backend == "triton" else None)
                    r["broker"] = broker.kind
                    results.append(r)
                    report(r)
    finally:
        if triton_proc is not None:
            stop_triton(triton_proc)
        shutil.rmtree(work, ignore_errors=True)
    print(f"# broker {results[0]['broker'] if results else '?'}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end; model {a.model or f'stand-in {a.size} px'}, daemon batch "
          f"{a.batch}, Triton max_batch_size {MAX_BATCH}, cameras "
          f"{f'paced at {a.fps:g} frames/s' if a.fps else 'unpaced'}"
          + (" (smoke size: figures not comparable)" if a.smoke else ""))
    if a.json:
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    bad = [r for r in results if r["scores_received"] != r["scores_sent"] or r["alarms_received"] != r["alarms_sent"]]
    if bad:
        print(f"messages lost: {[(r['n'], r['backend']) for r in bad]}", file=sys.stderr)
        return 1
    return 0


def report(r: dict) -> None:
    rows = [(f"N={r['n']} {r['backend']}: frames/s total", f"{r['fps_total']:.1f} over {r['window_s']} s"),
            ("  per daemon (min / max, fairness)",
             f"{min(r['fps_per_daemon']):.1f} / {max(r['fps_per_daemon']):.1f} ({r['fairness_min_over_max']:.2f})"),
            ("  latency capture->publish p50 / p99", f"{r['latency_ms_p50']:.1f} / {r['latency_ms_p99']:.1f} ms"),
            ("  scores received / sent", f"{r['scores_received']} / {r['scores_sent']}"),
            ("  alarms received / sent", f"{r['alarms_received']} / {r['alarms_sent']} (mqtt_lost {r['mqtt_lost']})")]
    if "triton_executions" in r:
        rows.append(("  Triton requests / frames per execution",
                     f"{r['triton_requests_per_execution']:.2f} / {r['triton_frames_per_execution']:.2f} "
                     f"({r['triton_executions']} executions)"))
    print_rows(rows)


if __name__ == "__main__":
    sys.exit(main())
