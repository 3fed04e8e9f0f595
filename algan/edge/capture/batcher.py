"""Cross-camera batching: run a batch when it holds ``max_size`` frames or its first frame has waited ``max_wait_s``.

The same rule as DeepStream's ``nvstreammux`` (``batch-size`` + ``batched-push-timeout``): a full batch goes at
once, a partial one when the timeout since its first frame expires, so one slow camera adds at most
``max_wait_s`` of latency to the others. Frames wait in the hub's bounded per-camera queues meanwhile (drops of
live cameras and back-pressure waits of files are counted there).

:class:`Batcher` is the pure rule (the clock is passed in, nothing blocks). :func:`next_batch` is the thin driver
that pulls frames from a :class:`FrameSource`-like hub until the rule says "go".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

#: Longest a driver sleeps waiting for a frame before re-checking the stop event (seconds).
POLL_S = 0.1


class Batcher(Generic[T]):
    """Accumulates items into batches.

    Args:
        max_size: batch size at which the batch is due at once (>= 1).
        max_wait_s: time after the first item at which a non-empty batch is due (seconds, >= 0).

    Raises:
        ValueError: for ``max_size < 1`` or ``max_wait_s < 0``.

    Example:
        >>> b = Batcher(max_size=2, max_wait_s=0.02)
        >>> b.add("a", now=10.0); b.due(now=10.01)
        False
        >>> b.due(now=10.02)
        True
        >>> b.take()
        ['a']
    """

    def __init__(self, max_size: int, max_wait_s: float) -> None:
        if max_size < 1 or max_wait_s < 0:
            raise ValueError(f"need max_size >= 1 and max_wait_s >= 0, got {max_size}, {max_wait_s}")
        self.max_size = int(max_size)
        self.max_wait_s = float(max_wait_s)
        self._items: list[T] = []
        self._first_t = 0.0
        #: batches taken full (``max_size`` items) and taken partial (wait expired, hub exhausted or stop)
        self.full_batches = 0
        self.partial_batches = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T, now: float) -> None:
        """Append an item; ``now`` (seconds, monotonic) starts the wait clock when the batch was empty."""
        if not self._items:
            self._first_t = now
        self._items.append(item)

    def due(self, now: float) -> bool:
        """True when the batch is full, or non-empty and its first item has waited ``max_wait_s``."""
        n = len(self._items)
        return n >= self.max_size or (n > 0 and now >= self._first_t + self.max_wait_s)

    def time_left(self, now: float) -> float | None:
        """Seconds until the batch is due by time (0 when due), or ``None`` when empty."""
        if not self._items:
            return None
        if len(self._items) >= self.max_size:
            return 0.0
        return max(0.0, self._first_t + self.max_wait_s - now)

    def take(self) -> list[T]:
        """Return all pending items, oldest first (at most ``max_size`` when fed one at a time), and start anew."""
        items, self._items = self._items, []
        if len(items) >= self.max_size:
            self.full_batches += 1
        elif items:
            self.partial_batches += 1
        return items


class FrameSource(Protocol[T_co]):
    """What :func:`next_batch` needs from the frame hub."""

    def get(self, timeout: float) -> T_co | None:
        """Next item, or ``None`` after ``timeout`` seconds without one."""

    def exhausted(self) -> bool:
        """True when no item will ever arrive again."""


def next_batch(
    hub: FrameSource[T], batcher: Batcher[T], stop: threading.Event, clock: Callable[[], float]
) -> list[T] | None:
    """Block until a batch is due and return it.

    Returns:
        A non-empty list of items; a partial batch when the hub is exhausted or ``stop`` is set; ``None`` when the
        hub is exhausted (or ``stop`` is set) and nothing is pending. Also returns ``[]`` every :data:`POLL_S`
        seconds while idle so the caller can do periodic work (stats).
    """
    while True:
        now = clock()
        if batcher.due(now):
            return batcher.take()
        if stop.is_set():
            return batcher.take() if len(batcher) else None
        left = batcher.time_left(now)
        item = hub.get(POLL_S if left is None else min(left, POLL_S))
        if item is not None:
            batcher.add(item, clock())
            continue
        if hub.exhausted():
            return batcher.take() if len(batcher) else None
        if left is None:
            return []
