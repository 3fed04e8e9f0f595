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


def test_stand_ins_turn_image_and_mask_alike_and_darken_images_only(tmp_path: Path, monkeypatch):
    import cv2
    import numpy as np

    monkeypatch.syspath_prepend(str(REPO))
    from benchmarks._stand_ins import darken, derive, rotate

    src = tmp_path / "src"
    img = np.full((64, 96, 3), 60, np.uint8)
    img[10:20, 70:85] = 250  # the defect: a bright block off centre
    mask = np.zeros((64, 96), np.uint8)
    mask[10:20, 70:85] = 255
    for d in ("train/good", "test/spot", "ground_truth/spot"):
        (src / d).mkdir(parents=True)
    cv2.imwrite(str(src / "train/good/000.png"), img)
    cv2.imwrite(str(src / "test/spot/001.png"), img)
    cv2.imwrite(str(src / "ground_truth/spot/001_mask.png"), mask)

    turned = derive(src, tmp_path / "rot", rotate)
    out = cv2.imread(str(turned / "test/spot/001.png"))
    out_mask = cv2.imread(str(turned / "ground_truth/spot/001_mask.png"), cv2.IMREAD_GRAYSCALE)
    assert out.shape == img.shape and set(np.unique(out_mask)) <= {0, 255}
    assert not np.array_equal(out_mask, mask)  # 001 turns by a non-zero angle
    inside, outside = out[out_mask > 0].mean(), out[out_mask == 0].mean()
    assert inside > 200 and outside < 90, (inside, outside)  # the bright block moved with its mask

    dark = derive(src, tmp_path / "dark", darken)
    dimg = cv2.imread(str(dark / "train/good/000.png"))
    assert dimg.mean() < 0.5 * img.mean()
    assert np.array_equal(cv2.imread(str(dark / "ground_truth/spot/001_mask.png"), cv2.IMREAD_GRAYSCALE), mask)
    assert derive(src, tmp_path / "dark", darken) == tmp_path / "dark"  # a finished build is reused
    assert not (tmp_path / "dark.partial").exists()
