"""Every benchmark runs at its ``--smoke`` size in CI (seconds each), so that none rots outside CI.

Benchmarks are discovered, not listed: every ``benchmarks/<name>.py`` (not ``_*.py``) must accept ``--smoke``. Each
is run as a script (``python benchmarks/<name>.py --smoke``, the repository root on ``PYTHONPATH``, so both
``from benchmarks._kit import ...`` and plain script imports work) and must exit 0 and print its figures (at least
one line with a number). Exit status 77 means "cannot run on this machine" (no GPU, no TensorRT): the test skips
with the benchmark's own reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
SKIP_RC = 77
TIMEOUT_S = 180


def benchmark_scripts() -> list[Path]:
    return sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_every_benchmark_has_a_smoke_size():
    scripts = benchmark_scripts()
    assert any(p.name == "edge.py" for p in scripts)
    missing = [p.name for p in scripts if "--smoke" not in p.read_text(encoding="utf-8")]
    assert not missing, f"benchmarks without a --smoke size (CI runs every benchmark's smoke size): {missing}"


@pytest.mark.parametrize("script", benchmark_scripts(), ids=lambda p: p.stem)
def test_benchmark_smoke_size_runs_and_prints_figures(script: Path, tmp_path: Path):
    if "--smoke" not in script.read_text(encoding="utf-8"):
        pytest.fail(f"{script.name} has no --smoke size")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    res = subprocess.run([sys.executable, str(script), "--smoke"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=TIMEOUT_S, check=False)
    if res.returncode == SKIP_RC:
        pytest.skip(f"{script.name} --smoke cannot run here: {res.stderr.strip()[-300:]}")
    assert res.returncode == 0, f"{script.name} --smoke exit {res.returncode}:\n{res.stderr[-3000:]}"
    figures = [line for line in res.stdout.splitlines() if re.search(r"\d", line)]
    assert figures, f"{script.name} --smoke printed no figures:\n{res.stdout[-2000:]}"
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
