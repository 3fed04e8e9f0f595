"""A plant's broker settings on a real mosquitto (the one CI installs): one client id per device, several
``algan-alarms --share GROUP`` consumers splitting the alarms of several daemons without duplicates, and their
persistent sessions (``--client-id``) keeping the alarms published while they were away across a broker restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edgekit import edge_config, make_bundle, make_video, write_config
from mqttkit import Collector, persistence_conf

pytestmark = [pytest.mark.broker, pytest.mark.slow]

CYCLES = 4  # alarm cycles per daemon run: 5 dark frames, 4 bright ones (raised at the 3rd, cleared 5 frames later)


class Consumer:
    """``algan-alarms --json --share GROUP --client-id NAME`` as a subprocess; its events are read from stdout."""

    def __init__(self, workdir: Path, broker: tuple[str, int], name: str, group: str = "plant") -> None:
        self.out, self.err = workdir / f"{name}.jsonl", workdir / f"{name}.log"
        ready = f"subscribed to $share/{group}/"
        starts = self.err.read_text().count(ready) if self.err.is_file() else 0
        self.proc = subprocess.Popen([sys.executable, "-m", "algan.cli.alarms", "--broker", f"{broker[0]}:{broker[1]}",
                                      "--json", "--share", group, "--client-id", name],
                                     stdout=self.out.open("a"), stderr=self.err.open("a"))
        end = time.monotonic() + 30
        while self.err.read_text().count(ready) == starts and time.monotonic() < end:
            assert self.proc.poll() is None, self.err.read_text()
            time.sleep(0.1)
        assert self.err.read_text().count(ready) > starts, self.err.read_text()

    def events(self) -> list[tuple[str, str, str]]:
        """(topic, alarm id, state) of every event printed so far (a restarted consumer appends)."""
        lines = [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]
        return [(e["topic"], e["id"], e["state"]) for e in lines]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(20) == 0, self.err.read_text()


def start_daemons(tmp_path: Path, bundle: Path, broker: tuple[str, int], devices: list[str],
                  run: str) -> list[subprocess.Popen]:
    levels = ([20] * 5 + [230] * 4) * CYCLES + [20] * 5
    procs = []
    for device in devices:
        d = tmp_path / device  # the device's state directory (outbox) and camera file
        d.mkdir(exist_ok=True)
        video = d / "cam1.mp4" if (d / "cam1.mp4").is_file() else make_video(d / "cam1.mp4", levels)
        cfg = edge_config(bundle, broker, [{"name": "cam1", "source": str(video)}], device_id=device)
        config = write_config(d / "edge.yaml", cfg)
        procs.append(subprocess.Popen([sys.executable, "-m", "algan.cli.edge", "run", "--config", str(config)],
                                      stdout=subprocess.DEVNULL, stderr=(d / f"{run}.log").open("w"),
                                      env={**os.environ, "STATE_DIRECTORY": str(d)}))
    return procs


def wait_daemons(procs: list[subprocess.Popen], tmp_path: Path, devices: list[str], run: str) -> None:
    for p, device in zip(procs, devices, strict=True):
        assert p.wait(60) == 0, (tmp_path / device / f"{run}.log").read_text()


def test_shared_consumers_split_alarms_once_and_keep_them_across_a_broker_restart(tmp_path, mosquitto_factory):
    broker = mosquitto_factory(persistence_conf(tmp_path))
    address = (broker.host, broker.port)
    bundle = make_bundle(tmp_path / "bundle")
    everything = Collector(*address, topic="algan/+/+/alarm")  # a plain subscriber: every event once, the reference
    a, b = Consumer(tmp_path, address, "alarms-a"), Consumer(tmp_path, address, "alarms-b")

    # two lines at once, each with its own client id (algan-edge-<device_id>)
    devices = ["line1", "line2"]
    wait_daemons(start_daemons(tmp_path, bundle, address, devices, "run1"), tmp_path, devices, "run1")
    n1 = 2 * len(devices) * CYCLES
    assert everything.wait_for(lambda ms: len(ms) == n1, timeout=20), len(everything.messages)
    sent1 = {(m.topic, json.loads(m.payload)["id"], json.loads(m.payload)["state"]) for m in everything.messages}
    assert len(sent1) == n1
    end = time.monotonic() + 20
    while len(a.events()) + len(b.events()) < n1 and time.monotonic() < end:
        time.sleep(0.1)
    got_a, got_b = a.events(), b.events()
    assert len(got_a) + len(got_b) == n1 and set(got_a) | set(got_b) == sent1, "each event exactly once"
    assert got_a and got_b, "both consumers took a share of the load"
    assert {t.split("/")[1] for t, _, _ in got_a} == {t.split("/")[1] for t, _, _ in got_b} == set(devices)
    log = broker.log.name
    text = Path(log).read_text()
    for device in devices:
        assert f" as algan-edge-{device} " in text, "each daemon connects with its own client id"
    assert "already connected, closing old connection" not in text, "no client id taken over by another device"

    # both consumers stop; line1 raises and clears alarms while they are away; the broker restarts (persistence)
    a.stop()
    b.stop()
    before = len(a.events()), len(b.events())
    wait_daemons(start_daemons(tmp_path, bundle, address, ["line1"], "run2"), tmp_path, ["line1"], "run2")
    n2 = n1 + 2 * CYCLES
    assert everything.wait_for(lambda ms: len(ms) == n2, timeout=20), len(everything.messages)
    sent2 = {(m.topic, json.loads(m.payload)["id"], json.loads(m.payload)["state"])
             for m in everything.messages} - sent1
    everything.stop()
    broker.stop()
    broker.start()
    a, b = Consumer(tmp_path, address, "alarms-a"), Consumer(tmp_path, address, "alarms-b")
    end = time.monotonic() + 20
    while len(a.events()) + len(b.events()) < n2 and time.monotonic() < end:
        time.sleep(0.1)
    time.sleep(0.5)  # a duplicate would arrive now
    new_a, new_b = a.events()[before[0]:], b.events()[before[1]:]
    a.stop()
    b.stop()
    assert len(new_a) + len(new_b) == 2 * CYCLES and set(new_a) | set(new_b) == sent2, \
        "the alarms published while both consumers were away arrive once, after the broker restart"
    assert new_a and new_b, "each persistent member kept its share of the group"


def test_share_group_name_is_checked():
    res = subprocess.run([sys.executable, "-m", "algan.cli.alarms", "--share", "plant/1"], capture_output=True,
                         text=True, timeout=30, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == ("algan-alarms: error: argument --share: bad --share group "
                                                   "'plant/1': a non-empty name without '/', '+' or '#'")
