"""The first hour (issue 24, finding 10): configs/edge.example.yaml passes check-config on what `make demo` writes,
and the demo's closing commands run as printed."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from edgekit import make_video
from mapkit import make_map_bundle

REPO = Path(__file__).resolve().parents[2]


def test_example_config_passes_check_config_after_the_demo(tmp_path):
    from algan.cli.demo import DEFAULT_OUT, MODEL_NAME, VIDEO_NAME

    # the repository's layout: configs/edge.example.yaml beside the demo's output folder (make demo: --out demo-out)
    (tmp_path / "configs").mkdir()
    cfg = tmp_path / "configs" / "edge.example.yaml"
    shutil.copy(REPO / "configs" / "edge.example.yaml", cfg)
    out = tmp_path / DEFAULT_OUT
    make_map_bundle(out / MODEL_NAME)
    make_video(out / VIDEO_NAME, [128] * 5)
    res = subprocess.run([sys.executable, "-m", "algan.cli.edge", "check-config", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # before the demo ran, the same file names what is missing and how to get it: exit 2
    shutil.rmtree(out)
    res = subprocess.run([sys.executable, "-m", "algan.cli.edge", "check-config", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 2 and "demo-out" in res.stderr


def test_demo_closing_commands_run_as_printed(tmp_path, monkeypatch):
    from algan.cli.demo import next_steps

    monkeypatch.chdir(tmp_path)
    # a shell whose PATH lacks the venv: the commands carry the venv's path, with the line that activates it
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    lines = next_steps(tmp_path / "demo-out", tmp_path / "demo-out" / "model", tmp_path / "demo-out" / "data",
                       tmp_path / "demo-out" / "edge.yaml")
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "algan-predict").exists():
        return  # not an installed environment: the tools run as python -m
    assert any(f"source {venv_bin}/activate" in ln for ln in lines), lines
    commands = [shlex.split(ln.strip()) for ln in lines if ln.startswith("     ")]
    assert [Path(c[0]).name for c in commands] == ["algan-predict", "algan-train", "algan-calibrate", "algan-export",
                                                   "algan-edge"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for cmd in commands:  # the very executable printed runs (its --version)
        res = subprocess.run([cmd[0], "--version"], capture_output=True, text=True, timeout=60, env=env)
        assert res.returncode == 0 and res.stdout.startswith(Path(cmd[0]).name), (cmd, res.stderr)
