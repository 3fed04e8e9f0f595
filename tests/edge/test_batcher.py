"""Batching: the pure rule with a fake clock, and the driver on a fake hub."""

from __future__ import annotations

import threading

import pytest

from algan.edge.capture.batcher import Batcher, next_batch


def test_due_when_full():
    b = Batcher(max_size=3, max_wait_s=1.0)
    for i in range(2):
        b.add(i, now=0.0)
    assert not b.due(0.0)
    b.add(2, now=0.001)
    assert b.due(0.001) and b.time_left(0.001) == 0.0
    assert b.take() == [0, 1, 2] and len(b) == 0


def test_due_after_wait_from_first_item():
    b = Batcher(max_size=8, max_wait_s=0.02)
    assert not b.due(5.0) and b.time_left(5.0) is None
    b.add("a", now=10.0)
    b.add("b", now=10.015)
    assert not b.due(10.019)
    assert b.time_left(10.005) == pytest.approx(0.015)
    assert b.due(10.02)
    assert b.take() == ["a", "b"]
    b.add("c", now=11.0)  # the wait clock restarts with the next batch
    assert not b.due(11.01)


def test_zero_wait_means_no_waiting():
    b = Batcher(max_size=8, max_wait_s=0.0)
    b.add(1, now=3.0)
    assert b.due(3.0)


@pytest.mark.parametrize(("size", "wait"), [(0, 0.1), (1, -0.1)])
def test_rejects_bad_settings(size, wait):
    with pytest.raises(ValueError):
        Batcher(size, wait)


class FakeHub:
    """Items become available at given fake times; ``get`` advances the fake clock by its timeout when empty."""

    def __init__(self, items, clock):
        self.items = list(items)  # (available_at, item)
        self.clock = clock
        self.closed = False

    def get(self, timeout):
        if self.items and self.items[0][0] <= self.clock.t:
            return self.items.pop(0)[1]
        nxt = self.items[0][0] if self.items else None
        self.clock.t = min(self.clock.t + timeout, nxt) if nxt is not None else self.clock.t + timeout
        if self.items and self.items[0][0] <= self.clock.t:
            return self.items.pop(0)[1]
        return None

    def exhausted(self):
        return self.closed and not self.items


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_driver_batches_by_size_then_by_time_then_ends():
    clock = Clock()
    hub = FakeHub([(0.0, 1), (0.0, 2), (0.0, 3), (0.001, 4), (0.5, 5)], clock)
    hub.closed = True
    b = Batcher(max_size=3, max_wait_s=0.02)
    stop = threading.Event()
    assert next_batch(hub, b, stop, clock) == [1, 2, 3]
    assert next_batch(hub, b, stop, clock) == [4]  # waited 20 ms for more
    assert clock.t == pytest.approx(0.021)
    batches = [next_batch(hub, b, stop, clock) for _ in range(6)]
    assert batches[-2:] == [[5], None] and all(x == [] for x in batches[:-2]), "idle polls return []"


def test_driver_flushes_partial_batch_on_stop():
    clock = Clock()
    hub = FakeHub([(0.0, "a")], clock)
    b = Batcher(max_size=4, max_wait_s=10.0)
    stop = threading.Event()
    b.add("x", clock())
    stop.set()
    assert next_batch(hub, b, stop, clock) == ["x"]
    assert next_batch(hub, b, stop, clock) is None
