"""Cost of refusing a hostile config (issue 25): time and peak Python memory of ``load_config`` on a normal config,
a YAML alias bomb (a few hundred bytes expanding to 9^10 values), a self-referencing alias and an oversized file,
each relative to the normal config, measured in one run.

Usage::

    python benchmarks/config_bounds.py [--big-mb 50] [--repeat 5]
    python benchmarks/config_bounds.py --smoke          # CI size: a 2 MB file, 2 repeats

Before the bounds (main of issue 25) the 537-byte bomb took 61.5 s and 1.19 GB in ``check-config`` and a 50 MB
config 89 s; the daemon must refuse both in well under a second.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path


def _bomb(levels: int = 9, fan: int = 9) -> str:
    lines = [f"a0: &a0 [{','.join(['lol'] * fan)}]"]
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * fan)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\ndevice_id: line1\nmodel: m.onnx\ncameras: [{name: cam1, source: /dev/null}]\n"


NORMAL = """device_id: line1
model: m.onnx
mqtt: {host: 127.0.0.1, port: 1883, outbox: {max_events: 1000}}
alarm: {threshold: 1.0, clear_threshold: 0.9, raise_frames: 3}
cameras:
  - &cam {name: cam1, source: /dev/null, threshold: 1.2}
  - {<<: *cam, name: cam2}
  - {<<: *cam, name: cam3}
"""


def _measure(path: Path, repeat: int) -> tuple[float, float, str]:
    """Median seconds, peak MiB (tracemalloc) and outcome of ``load_config(path)``."""
    from algan.edge.config import load_config
    from algan.edge.errors import ConfigError

    times, peaks, outcome = [], [], ""
    for _ in range(repeat):
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            load_config(path)
            outcome = "loaded"
        except ConfigError as e:
            outcome = "refused: " + str(e).split(": ", 2)[-1][:70]
        times.append(time.perf_counter() - t0)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
    return statistics.median(times), max(peaks), outcome


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--big-mb", type=float, default=50.0, help="size of the oversized config (MB)")
    p.add_argument("--repeat", type=int, default=5, help="runs per case (median time)")
    p.add_argument("--smoke", action="store_true", help="CI size: a 2 MB file, 2 repeats")
    args = p.parse_args(argv)
    big_mb, repeat = (2.0, 2) if args.smoke else (args.big_mb, args.repeat)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        cases = {"normal config": NORMAL, "alias bomb (9^10 values)": _bomb(),
                 "self-referencing alias": "x: &x [1, *x]\n" + NORMAL.split("\n", 1)[1]}
        files = {}
        for name, text in cases.items():
            files[name] = root / f"{len(files)}.yaml"
            files[name].write_text(text)
        big = root / "big.yaml"
        with big.open("w") as f:
            f.write(NORMAL + "note: |\n")
            line = "  " + "x" * 78 + "\n"
            for _ in range(int(big_mb * 2**20 / len(line))):
                f.write(line)
        files[f"{big_mb:g} MB file"] = big
        base_t = None
        print(f"{'case':28} {'bytes':>10} {'time ms':>9} {'x normal':>9} {'peak MiB':>9}  outcome")
        for name, path in files.items():
            t, peak, outcome = _measure(path, repeat)
            base_t = base_t or t
            print(f"{name:28} {path.stat().st_size:>10} {t * 1000:>9.2f} {t / base_t:>9.2f} {peak:>9.2f}  {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
