"""Progress in logs (issue 24, finding 5): when stderr is not a terminal, long steps write one line at the start and
then at least every 30 s, also in the middle of a step, with step, total and ETA."""

from __future__ import annotations

import io
import time

from algan.progress import LogProgress, track


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_lines_give_step_total_and_eta():
    out, clock = io.StringIO(), FakeClock()
    bar = LogProgress("ALGAN member 1/3", 40, "epoch", stream=out, prog="algan-train", clock=clock,
                      interval_s=30.0, start_thread=False)
    clock.t += 10.0
    bar.update(4)  # 10 s after the start line: not yet
    clock.t += 25.0
    bar.update(3)  # 35 s: a line; 7 epochs in 35 s -> 33 left take 165 s
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "algan-train: ALGAN member 1/3: 0/40 epoch (0%), 0s elapsed, ETA unknown"
    assert lines[1] == "algan-train: ALGAN member 1/3: 7/40 epoch (18%), 35s elapsed, ETA 2m45s"
    assert lines[2] == "algan-train: ALGAN member 1/3: done, 7/40 epoch in 35s"
    assert len(lines) == 3


def test_a_line_comes_within_a_long_step():
    """The timer thread speaks while one step is still running (an 18-minute epoch is not 18 silent minutes)."""
    out = io.StringIO()
    bar = LogProgress("features (train)", 2, "batch", stream=out, prog="p", interval_s=0.05)
    time.sleep(0.4)  # one slow step
    bar.update()
    bar.close()
    lines = out.getvalue().splitlines()
    assert sum(ln.startswith("p: features (train): 0/2 batch") for ln in lines) >= 3, lines


def test_track_writes_lines_when_not_on_a_terminal(capsys):
    assert list(track(range(3), "scores", unit="batch")) == [0, 1, 2]
    err = capsys.readouterr().err.splitlines()
    assert err[0].endswith("scores: 0/3 batch (0%), 0s elapsed, ETA unknown") and "done, 3/3 batch" in err[-1]
    assert list(track(range(3), "scores", enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_train_reports_progress_into_a_log(tmp_path, capsys):
    """algan-train with stderr redirected (not a terminal): progress lines, not silence."""
    import cv2
    import numpy as np

    from algan.cli.train import main

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        cv2.imwrite(str(data / f"{i:02d}.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert main(["--data", str(data), "--out", str(tmp_path / "m"), "--head", "mahalanobis", "--input-size", "64",
                 "64"]) == 0
    err = capsys.readouterr().err
    assert "features (train): 0/1 batch (0%)" in err and "features (train): done, 1/1 batch" in err
