"""The soak benchmark's smoke size (benchmarks/soak.py --smoke, ~25 s): the real daemon with two looped file cameras
and an MJPEG stream camera, mosquitto restarted twice and the camera killed once; every alarm event raised arrives,
no file descriptor leaks."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.broker, pytest.mark.slow]
SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def test_soak_smoke(tmp_path):
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").is_file():
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    out = tmp_path / "soak.json"
    res = subprocess.run([sys.executable, str(SOAK), "--smoke", "--json", str(out)], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    fig = json.loads(out.read_text())
    assert fig["broker_restarts"] == 2 and fig["camera_kills"] == 1 and fig["exit_status"] == 0
    assert fig["events_raised"] >= 6 and fig["events_received"] == fig["events_raised"], fig
    assert fig["events_unexpected"] == 0 and fig["tracebacks"] == 0
    assert fig["mqtt_reconnects"] >= 2 and fig["camera_reconnects"]["stream"] >= 1
    assert fig["fds_end"] <= fig["fds_start"] + 2, "no file descriptor leak across reconnects"
