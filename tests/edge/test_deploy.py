"""The systemd unit carries what the daemon's notify/watchdog/stop design relies on."""

from __future__ import annotations

import configparser
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "algan-edge.service"


def test_unit_settings():
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str
    cp.read(UNIT)
    svc = cp["Service"]
    assert svc["Type"] == "notify" and svc["Restart"] == "on-failure"
    assert int(svc["WatchdogSec"]) >= 10 and int(svc["TimeoutStopSec"]) >= 25, "5 s readers + 15 s flush fit"
    assert "algan-edge check-config" in svc["ExecStartPre"] and "algan-edge run --config" in svc["ExecStart"]
    assert "-HUP" in svc["ExecReload"] and svc["KillSignal"] == "SIGTERM"
