"""Soak benchmark of the edge daemon (not a timed test): faults injected for a long run, nothing may be lost or leak.

The real ``algan-edge run`` process (a subprocess, as systemd starts it) watches three cameras:

* ``file1``, ``file2``: looped video files (dark frames with a bright burst per loop: one alarm raised and cleared
  per loop and camera);
* ``stream``: an MJPEG-over-HTTP camera (a small server process here, the same burst pattern), killed every
  ``--camera-every`` seconds and restarted ``--camera-down`` seconds later (the daemon's stale-frame watchdog
  releases it and reconnects);

and publishes to a real mosquitto (persistence on) that is restarted every ``--broker-every`` seconds with
``--broker-down`` seconds of downtime (alarm events wait in the daemon's outbox). A subscriber with a persistent
session (clean_session false, QoS 1) collects the alarm events.

Figures printed (and written as JSON with ``--json``):

* alarm events raised by the daemon (from its log lines) vs distinct events received (expect equal; duplicates,
  allowed by QoS 1, are counted apart);
* MQTT reconnects of the daemon and camera reconnects (from the final stats message);
* resident memory (RSS) and open file descriptors of the daemon after the warm-up and at the end (expect no growth).

Usage::

    python benchmarks/soak.py --smoke                 # ~30 s, what CI runs (tests/test_benchmarks_smoke.py)
    nice -n 15 python benchmarks/soak.py --minutes 30 --json /tmp/soak.json

Exit status 0 when every raised event was received, the daemon exited 0 without a traceback, it reconnected to
the broker after each restart, and its file descriptors did not grow by more than 2; 1 otherwise; 77 without
mosquitto (apt-get install mosquitto). Torch-free.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the conftest mosquitto helper

from conftest import MosquittoBroker, free_port, mosquitto_path, wait_port  # noqa: E402
from mqttkit import run_as_me  # noqa: E402

DARK, BRIGHT = 20, 230  # tiny model: score = mean pixel / 128 -> 0.16 / 1.80
#: one loop of a file camera: 40 dark, 8 bright, 40 dark frames (one alarm per loop)
PATTERN = [DARK] * 40 + [BRIGHT] * 8 + [DARK] * 40
RAISED_RE = re.compile(r"camera (\S+): alarm (raised|update|cleared) at frame .* id=(\S+)")
RESTART_RE = re.compile(r"camera (\S+): alarm (\S+) was still open when the daemon last stopped")


def make_model(path: Path, size: int = 64) -> Path:
    """A tiny ONNX model (``scores = mean(images) / 128``) with model id ``soak-1``; no torch."""
    import onnx
    from onnx import TensorProto, helper

    inp = helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", size, size, 3])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"])
    nodes = [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Div", ["m", "k"], ["scores"])]
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [128.0])
    model = helper.make_model(helper.make_graph(nodes, "soak", [inp], [out], initializer=[k]),
                              opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    helper.set_model_props(model, {"algan.model_id": "soak-1"})
    onnx.save(model, str(path))
    return path


def make_video(path: Path, levels: list[int], size: int = 64) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (size, size))
    for v in levels:
        writer.write(np.full((size, size, 3), v, np.uint8))
    writer.release()
    return path


def serve_mjpeg(port: int, fps: float) -> None:
    """``--serve-mjpeg PORT``: an MJPEG-over-HTTP camera (multipart/x-mixed-replace) showing :data:`PATTERN`."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    frames = [cv2.imencode(".jpg", np.full((64, 64, 3), v, np.uint8))[1].tobytes() for v in PATTERN]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            i = 0
            try:
                while True:
                    jpg = frames[i % len(frames)]
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                                     + jpg + b"\r\n")
                    i += 1
                    time.sleep(1.0 / fps)
            except OSError:
                pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


class Camera:
    """The MJPEG camera process (killed and restarted by the soak)."""

    def __init__(self, port: int, fps: float) -> None:
        self.port, self.fps = port, fps
        self.proc: subprocess.Popen | None = None
        self.kills = 0

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-mjpeg", str(self.port), "--stream-fps",
                                      str(self.fps)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port("127.0.0.1", self.port, 10)

    def kill(self, count: bool = True) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
            self.kills += count


@dataclass
class Collector:
    """Persistent-session QoS 1 subscriber of alarm events and stats."""

    host: str
    port: int
    events: list[tuple[str, str, str, str | None]] = field(default_factory=list)  # (camera, id, state, reason)
    stats: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-collector", clean_session=False)
        self.client.reconnect_delay_set(0.2, 1)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe([("algan/+/+/alarm", 1),
                                                                           ("algan/+/stats", 0)])
        self.client.on_message = self._on_message
        self.client.connect(self.host, self.port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        data = json.loads(msg.payload)
        with self.lock:
            if msg.topic.endswith("/stats"):
                self.stats = data
            else:
                self.events.append((data["camera"], data["id"], data["state"], data.get("reason")))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def proc_figures(pid: int) -> tuple[float, int]:
    """(RSS in MiB, open file descriptors) of a process, from /proc."""
    rss = float("nan")
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def soak(seconds: float, broker_every: float, broker_down: float, camera_every: float, camera_down: float,
         replay_fps: float, stream_fps: float, workdir: Path, say=print) -> dict:
    """Run the soak; return the figures (see the module docstring)."""
    model = make_model(workdir / "model.onnx")
    videos = [make_video(workdir / f"file{i}.mp4", PATTERN) for i in (1, 2)]
    # persistence: the collector's session (its subscription and the messages queued for it) survives the restarts;
    # run_as_me: as root, mosquitto would switch to its own user and fail to write the database here
    broker = MosquittoBroker(workdir, extra_conf=f"allow_anonymous true\npersistence true\npersistence_location "
                             f"{workdir}/\nautosave_interval 2\nmax_queued_messages 1000000\n{run_as_me()}")
    cam = Camera(free_port(), stream_fps)
    cam.start()
    col = Collector(broker.host, broker.port)
    col.start()
    cams = [{"name": f"file{i}", "source": str(v), "loop": True, "replay_fps": replay_fps}
            for i, v in enumerate(videos, 1)]
    cams.append({"name": "stream", "source": f"http://127.0.0.1:{cam.port}/", "kind": "stream",
                 "stale_timeout_s": 2, "reconnect_interval_s": 0.5, "reconnect_max_s": 2, "open_timeout_s": 3,
                 "read_timeout_s": 3})
    cfg = {"device_id": "soak", "model": str(model), "runner": {"backend": "onnxruntime", "threads": 1},
           "batch": {"max_size": 4, "max_wait_ms": 20},
           "mqtt": {"host": broker.host, "port": broker.port, "embedded_broker": "never", "connect_timeout_s": 10,
                    "reconnect_min_s": 1, "reconnect_max_s": 2, "outbox": {"path": str(workdir / "outbox.sqlite")}},
           "alarm": {"threshold": 1.0, "clear_threshold": 0.9, "raise_frames": 3, "clear_frames": 5},
           "stats_interval_s": 5, "cameras": cams}
    (workdir / "edge.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    log_path = workdir / "daemon.log"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with log_path.open("w") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "algan.cli.edge", "run", "--config",
                                   str(workdir / "edge.yaml")], stdout=log, stderr=subprocess.STDOUT, env=env)
    t0 = time.monotonic()
    warm = min(20.0, seconds * 0.2)
    start_fig: tuple[float, int] | None = None
    samples: list[tuple[float, float, int]] = []
    next_broker, next_cam = t0 + broker_every, t0 + camera_every
    broker_restarts = 0
    try:
        while (now := time.monotonic()) - t0 < seconds:
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited early ({daemon.returncode}); see {log_path}")
            if start_fig is None and now - t0 >= warm:
                start_fig = proc_figures(daemon.pid)
            if now >= next_broker:
                broker.stop()
                time.sleep(broker_down)
                broker.start()
                broker_restarts += 1
                next_broker = time.monotonic() + broker_every
                say(f"[{time.monotonic() - t0:6.0f} s] broker restarted ({broker_restarts})")
            if now >= next_cam:
                cam.kill()
                time.sleep(camera_down)
                cam.start()
                next_cam = time.monotonic() + camera_every
                say(f"[{time.monotonic() - t0:6.0f} s] stream camera killed and restarted ({cam.kills})")
            if int(now - t0) % 30 == 0 and (not samples or now - t0 - samples[-1][0] >= 29):
                samples.append((now - t0, *proc_figures(daemon.pid)))
            time.sleep(0.2)
        end_fig = proc_figures(daemon.pid)
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        cam.kill(count=False)
    deadline = time.monotonic() + 20
    text = log_path.read_text()
    sent = {(m[0], m[2], m[1]) for m in RAISED_RE.findall(text)}  # (camera, id, state)
    sent |= {(m[0], m[1], "cleared") for m in RESTART_RE.findall(text)}
    while time.monotonic() < deadline:
        with col.lock:
            got = {(c, i, s) for c, i, s, _ in col.events}
        if sent <= got:
            break
        time.sleep(0.2)
    col.stop()
    broker.stop()
    with col.lock:
        events, stats = list(col.events), dict(col.stats)
    got = {(c, i, s) for c, i, s, _ in events}
    start_fig = start_fig or end_fig
    cams_stats = stats.get("cameras", {})
    res = {
        "seconds": round(time.monotonic() - t0, 1),
        "exit_status": rc,
        "broker_restarts": broker_restarts,
        "camera_kills": cam.kills,
        "events_raised": len(sent),
        "events_received": len(got & sent),
        "events_missing": sorted(map(list, sent - got))[:10],
        "events_unexpected": len(got - sent),
        "duplicates": len(events) - len(set(events)),
        "mqtt_reconnects": max(0, text.count("connected to MQTT broker") - 1),
        "camera_reconnects": {k: v.get("reconnects") for k, v in cams_stats.items()},
        "frames_scored": stats.get("frames"),
        "rss_mib_start": round(start_fig[0], 1),
        "rss_mib_end": round(end_fig[0], 1),
        "rss_growth_pct": round(100.0 * (end_fig[0] - start_fig[0]) / start_fig[0], 1),
        "fds_start": start_fig[1],
        "fds_end": end_fig[1],
        "samples": samples,
        "tracebacks": text.count("Traceback"),
    }
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="<= 60 s: a 24 s run, the broker restarted twice, the stream camera killed once")
    p.add_argument("--minutes", type=float, default=30.0, help="run length (minutes, default 30)")
    p.add_argument("--broker-every", type=float, default=180.0, help="seconds between broker restarts")
    p.add_argument("--broker-down", type=float, default=3.0, help="seconds the broker stays down")
    p.add_argument("--camera-every", type=float, default=240.0, help="seconds between stream camera kills")
    p.add_argument("--camera-down", type=float, default=5.0, help="seconds the stream camera stays down")
    p.add_argument("--replay-fps", type=float, default=10.0, help="frames/s of each file camera")
    p.add_argument("--stream-fps", type=float, default=10.0, help="frames/s of the stream camera")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--workdir", type=Path, help="keep the run's files here (default: a temporary directory)")
    p.add_argument("--serve-mjpeg", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve_mjpeg:
        serve_mjpeg(a.serve_mjpeg, a.stream_fps)
        return 0
    if mosquitto_path() is None:
        print("soak: mosquitto is not installed (apt-get install mosquitto)", file=sys.stderr)
        return 77
    seconds = a.minutes * 60.0
    if a.smoke:
        seconds, a.broker_every, a.camera_every, a.broker_down, a.camera_down = 24.0, 8.0, 13.0, 1.5, 2.0
    with tempfile.TemporaryDirectory(prefix="algan-soak-") as tmp:
        workdir = a.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        res = soak(seconds, a.broker_every, a.broker_down, a.camera_every, a.camera_down, a.replay_fps,
                   a.stream_fps, workdir)
    print(f"soak {res['seconds']:.0f} s: {res['broker_restarts']} broker restarts, {res['camera_kills']} camera kills, "
          f"{res['frames_scored']} frames scored, exit status {res['exit_status']}")
    print(f"  alarm events raised {res['events_raised']}, received {res['events_received']} "
          f"(missing {len(res['events_missing'])}, unexpected {res['events_unexpected']}, duplicates "
          f"{res['duplicates']})")
    print(f"  reconnects: MQTT {res['mqtt_reconnects']}, cameras {res['camera_reconnects']}")
    print(f"  RSS {res['rss_mib_start']} -> {res['rss_mib_end']} MiB ({res['rss_growth_pct']:+.1f} %), file "
          f"descriptors {res['fds_start']} -> {res['fds_end']}, tracebacks {res['tracebacks']}")
    if a.json:
        a.json.write_text(json.dumps(res, indent=2) + "\n")
    checks = {
        "every raised event received": res["events_raised"] == res["events_received"] > 0,
        "no unexpected event": res["events_unexpected"] == 0,
        "daemon exit status 0": res["exit_status"] == 0,
        "no traceback": res["tracebacks"] == 0,
        "reconnected after each broker restart": res["mqtt_reconnects"] >= res["broker_restarts"],
        "stream camera reconnected": res["camera_kills"] == 0 or (res["camera_reconnects"].get("stream") or 0) >= 1,
        "file descriptors did not grow": res["fds_end"] <= res["fds_start"] + 2,
    }
    failed = [k for k, ok in checks.items() if not ok]
    print(f"  checks: {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
