"""Progress of long steps (feature extraction, training epochs, scoring): a tqdm bar on a terminal, plain log lines
elsewhere.

When stderr is not a terminal (a log file, the journal, a CI log), carriage-return bars are noise and say nothing
once the output is read later; :class:`LogProgress` writes one line instead, at the start and then at least every
``interval_s`` seconds (default :data:`LOG_INTERVAL_S`) from a timer thread, also while one step is still running:
``<prog>: <desc>: 12/40 epoch (30%), 1m05s elapsed, ETA 2m32s``. Torch-free.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any, TypeVar

#: seconds between two progress lines in a log
LOG_INTERVAL_S = 30.0

T = TypeVar("T")


def _duration(s: float) -> str:
    s = int(round(max(0.0, s)))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


class LogProgress:
    """Progress lines for a log: what is done of ``total`` steps, the elapsed time and an ETA (elapsed / done x left,
    the mean rate so far).

    Args:
        desc: what runs (``features (train)``, ``ALGAN member 1/3``).
        total: number of steps, ``None`` when unknown (no percentage, no ETA).
        unit: the step's name (``batch``, ``epoch``, ``img``).
        initial: steps already done (a resumed run).
        interval_s: longest time between two lines (seconds).
        stream: where the lines go (default stderr).
        prog: prefix of each line (the command's name).
        clock: monotonic clock (seconds); tests pass a fake.

    Use as a context manager (or call :meth:`close`); :meth:`update` after each step.
    """

    def __init__(self, desc: str, total: int | None, unit: str = "step", initial: int = 0,
                 interval_s: float = LOG_INTERVAL_S, stream: IO[str] | None = None, prog: str | None = None,
                 clock: Callable[[], float] = time.monotonic, start_thread: bool = True) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.n = self.initial = int(initial)
        self.interval_s = float(interval_s)
        self.stream = stream if stream is not None else sys.stderr
        self.prog = prog if prog is not None else _prog()
        self.clock = clock
        self.t0 = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said_at = self.t0
        self.say()
        if start_thread:
            self._thread = threading.Thread(target=self._tick, name="algan-progress", daemon=True)
            self._thread.start()

    def line(self) -> str:
        """The current progress line (without the newline)."""
        elapsed = self.clock() - self.t0
        done = self.n - self.initial
        if self.total:
            text = f"{self.n}/{self.total} {self.unit} ({100.0 * self.n / self.total:.0f}%)"
        else:
            text = f"{self.n} {self.unit}"
        text += f", {_duration(elapsed)} elapsed"
        if self.total and done > 0 and self.n < self.total:
            text += f", ETA {_duration(elapsed / done * (self.total - self.n))}"
        elif self.total and self.n < self.total:
            text += ", ETA unknown"
        return f"{self.prog}: {self.desc}: {text}"

    def say(self) -> None:
        with self._lock:
            self._said_at = self.clock()
            with contextlib.suppress(OSError, ValueError):  # a closed stream must not stop the work
                print(self.line(), file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self._said_at >= self.interval_s:
            self.say()

    def _tick(self) -> None:
        while not self._stop.wait(min(self.interval_s, 1.0)):
            if self.clock() - self._said_at >= self.interval_s:
                self.say()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        total = f"/{self.total}" if self.total else ""
        with contextlib.suppress(OSError, ValueError):
            print(f"{self.prog}: {self.desc}: done, {self.n}{total} {self.unit} in {_duration(self.clock() - self.t0)}",
                  file=self.stream, flush=True)

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _prog() -> str:
    import os

    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "algan"


def track(iterable: Iterable[T], desc: str, total: int | None = None, unit: str = "step", initial: int = 0,
          enabled: bool = True) -> Iterator[T]:
    """``iterable`` with progress: a tqdm bar when stderr is a terminal, :class:`LogProgress` lines otherwise,
    nothing when ``enabled`` is False.

    Args:
        total: number of items (default ``len(iterable)`` where it has one) plus ``initial``.
        initial: items already done before this iterable (a resumed run); counted in the shown position.
    """
    if not enabled:
        yield from iterable
        return
    if total is None:
        try:
            total = initial + len(iterable)  # type: ignore[arg-type]
        except TypeError:
            total = None
    if sys.stderr.isatty():
        from tqdm import tqdm

        yield from tqdm(iterable, desc=desc, unit=unit, dynamic_ncols=True, leave=False, total=total,
                        initial=initial)
        return
    with LogProgress(desc, total, unit, initial=initial) as bar:
        for item in iterable:
            yield item
            bar.update()
