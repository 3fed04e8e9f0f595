"""The Jetson install path and the systemd unit agree with each other and with the package: the unit runs the
venv install.sh creates and documents files it installs, the venv keeps JetPack's GPU stack (no dependency
resolution for the package, the pure dependencies match pyproject's), and ``systemd-analyze verify`` accepts it."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "algan-edge.service"
JETSON = ROOT / "deploy" / "jetson"
JETPACK = {"numpy", "opencv-python-headless", "onnxruntime"}  # from JetPack through --system-site-packages


def _unit() -> configparser.SectionProxy:
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str  # type: ignore[assignment, method-assign]
    cp.read(UNIT)
    return cp


def _dry_run(tmp_path: Path) -> list[str]:
    p = subprocess.run(["bash", str(JETSON / "install.sh"), "--dry-run", "--no-apt", "--python", "/usr/bin/python3"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [s[2:] for s in p.stdout.splitlines() if s.startswith("+ ")]


def test_unit_runs_the_installed_venv_and_documents_installed_files(tmp_path):
    cp = _unit()
    svc, unit = cp["Service"], cp["Unit"]
    cmds = _dry_run(tmp_path)
    venv = next(c.split()[-1] for c in cmds if "-m venv --system-site-packages" in c)
    assert svc["ExecStart"].split()[0] == svc["ExecStartPre"].split()[0] == f"{venv}/bin/algan-edge"
    installed = {c.split()[-1] for c in cmds if c.startswith("install -m 644")}
    docs = [d.removeprefix("file:") for d in unit["Documentation"].split()]
    assert docs and all(d in installed for d in docs), (docs, installed)
    assert "/etc/systemd/system/algan-edge.service" in installed and "/etc/algan/edge.yaml" in installed
    assert svc["RestartPreventExitStatus"] == "2", "a config error (exit 2) must not restart forever"
    # state: outbox relative to StateDirectory, snapshots configured in a path ProtectSystem=strict lets it write
    state = f"/var/lib/{svc['StateDirectory']}"
    writable = svc["ReadWritePaths"].split() + [state]
    cfg = yaml.safe_load((ROOT / "deploy" / "edge.yaml").read_text())
    assert not Path(cfg["mqtt"]["outbox"].get("path") or ".").is_absolute()
    snaps = cfg["alarm"]["snapshots"]["dir"]
    assert any(snaps == w or snaps.startswith(w.rstrip("/") + "/") for w in writable), (snaps, writable)


def test_venv_keeps_jetpacks_stack(tmp_path):
    cmds = _dry_run(tmp_path)
    pip = [c for c in cmds if " -m pip install" in c]
    assert pip[0].endswith(f"install -r {JETSON / 'requirements.txt'} -c {JETSON / 'constraints.txt'}")
    assert pip[-1].endswith(f"install --no-deps {ROOT}"), "the package itself without dependency resolution"
    # requirements.txt = pyproject's base dependencies minus what JetPack provides
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    name = re.compile(r"^[A-Za-z0-9_.-]+")
    base = {name.match(d).group(0).lower(): d for d in deps}
    req = [s.strip() for s in (JETSON / "requirements.txt").read_text().splitlines() if s.strip()[:1].isalnum()]
    assert {name.match(r).group(0).lower(): r for r in req} == {k: v for k, v in base.items() if k not in JETPACK}
    forbidden = {name.match(s).group(0) for s in (JETSON / "constraints.txt").read_text().splitlines()
                 if s.strip()[:1].isalnum()}
    assert {"opencv-python-headless", "opencv-python", "onnxruntime", "tensorrt", "torch"} <= forbidden


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_analyze_verify(tmp_path):
    # the venv does not exist here: point the unit at this checkout's algan-edge (verify checks it is executable)
    exe = shutil.which("algan-edge") or str(Path(__import__("sys").executable).parent / "algan-edge")
    if not Path(exe).is_file():
        pytest.skip("no algan-edge console script to stand in for /opt/algan/venv/bin/algan-edge")
    text = UNIT.read_text().replace("/opt/algan/venv/bin/algan-edge", exe)
    (tmp_path / "algan-edge.service").write_text(text)
    p = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "algan-edge.service")], capture_output=True,
                       text=True, timeout=60)
    ours = [s for s in (p.stdout + p.stderr).splitlines() if "algan-edge.service" in s]
    assert p.returncode == 0 and not ours, p.stdout + p.stderr
