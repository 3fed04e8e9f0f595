"""``algan-edge run`` under a simulated systemd: notify socket, watchdog, STATUS, SIGHUP reload and SIGTERM stop."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from edgekit import DARK, edge_config, make_video, write_config

pytestmark = pytest.mark.broker


def test_notify_watchdog_reload_and_stop(tmp_path, tiny_model, mqtt_broker, mqtt_collector):
    video = make_video(tmp_path / "v.mp4", [DARK] * 10)
    cams = [{"name": "cam1", "source": str(video), "loop": True, "replay_fps": 30}]
    cfg = edge_config(tiny_model, mqtt_broker, cams, stats_interval_s=0.3)
    path = write_config(tmp_path / "edge.yaml", cfg)
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(0.2)
    col = mqtt_collector()
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen([sys.executable, "-m", "algan.cli.edge", "run", "--config", str(path)], env=env,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def collect_until(pred, timeout=15.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            with contextlib.suppress(TimeoutError):
                lines.extend(sock.recv(4096).decode().splitlines())
        return pred()

    def thresholds():
        return {json.loads(m.payload)["threshold"] for m in col.on("cam1/score")}

    try:
        assert collect_until(lambda: "READY=1" in lines), lines
        assert collect_until(lambda: lines.count("WATCHDOG=1") >= 3 and any("frames/s" in x for x in lines)), lines
        assert any(x.startswith("STATUS=") and "frames/s" in x and "1/1 cameras online" in x for x in lines)
        assert col.wait_for(lambda ms: len(col.on("cam1/score")) >= 5) and thresholds() == {1.0}

        cfg["alarm"] = {**cfg["alarm"], "threshold": 2.0, "clear_threshold": 1.8}
        cfg["cameras"][0]["threshold"] = 1.5
        write_config(path, cfg)
        n_before = len(col.on("cam1/score"))
        proc.send_signal(signal.SIGHUP)
        assert col.wait_for(lambda ms: 1.5 in thresholds(), timeout=10)
        after = [json.loads(m.payload)["threshold"] for m in col.on("cam1/score")[n_before:]]
        assert after[-1] == 1.5 and set(after) <= {1.0, 1.5}
        assert proc.poll() is None, "reloaded without restarting"

        path.write_text("device_id: [broken")  # a broken file on SIGHUP keeps the current settings
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert proc.poll() is None

        t0 = time.monotonic()
        proc.terminate()
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    collect_until(lambda: "STOPPING=1" in lines, timeout=2)
    sock.close()
    assert proc.returncode == 0, err
    assert took < 10, "well within TimeoutStopSec"
    assert "STOPPING=1" in lines and "Traceback" not in err
    assert "reloaded alarm settings" in err and "reload failed, keeping the current settings" in err
    assert col.wait_for(lambda ms: ms[-1].topic.endswith("/status") and ms[-1].payload == "offline")
