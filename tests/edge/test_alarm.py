"""Alarm logic: raise/clear debouncing and hysteresis on hand-made score sequences."""

from __future__ import annotations

import itertools
import math

import pytest

from algan.edge.alarm import AlarmTracker


def tracker(raise_frames=3, clear_frames=2, threshold=1.0, clear_threshold=0.8) -> AlarmTracker:
    ids = (f"e{i}" for i in itertools.count(1))
    return AlarmTracker("cam1", threshold, clear_threshold, raise_frames, clear_frames, new_id=lambda: next(ids))


def feed(t: AlarmTracker, scores, start: int = 0):
    """Events as (frame, state, first_frame, last_frame, frames, peak, id)."""
    out = []
    for i, s in enumerate(scores, start):
        e = t.update(i, s, ts=1000.0 + i)
        if e is not None:
            out.append((i, e.state, e.first_frame, e.last_frame, e.frames, e.peak, e.id))
    return out


def test_raise_needs_consecutive_frames():
    t = tracker()
    assert feed(t, [0.1, 1.2, 1.3, 0.5, 1.1, 1.5, 1.4, 1.2]) == [(6, "raised", 4, 6, 3, 1.5, "e1")]
    assert t.alarmed


def test_clear_needs_consecutive_frames_below_clear_threshold():
    t = tracker()
    events = feed(t, [2.0, 2.0, 2.0, 0.5, 0.85, 0.5, 0.5, 0.1])
    assert events == [(2, "raised", 0, 2, 3, 2.0, "e1"), (6, "cleared", 0, 6, 7, 2.0, "e1")]
    assert not t.alarmed


def test_hysteresis_band_keeps_state():
    t = tracker(raise_frames=1, clear_frames=1)
    # 0.9 is in [clear_threshold, threshold): neither raises nor clears
    assert feed(t, [0.9, 0.9]) == []
    assert [e[1] for e in feed(t, [1.0, 0.9, 0.95, 0.99], start=2)] == ["raised"]
    assert [e[:2] for e in feed(t, [0.79], start=6)] == [(6, "cleared")]


def test_threshold_is_inclusive_and_peak_tracks_episode():
    t = tracker(raise_frames=2, clear_frames=1)
    ev = feed(t, [1.0, 1.0, 3.0, 0.2])
    assert ev[0][:5] == (1, "raised", 0, 1, 2) and ev[0][5] == 1.0
    assert ev[1][:5] == (3, "cleared", 0, 3, 4) and ev[1][5] == 3.0


def test_second_episode_gets_new_id_and_fresh_peak():
    t = tracker(raise_frames=1, clear_frames=1)
    ev = feed(t, [5.0, 0.1, 1.5, 0.1])
    assert [(e[1], e[5], e[6]) for e in ev] == [("raised", 5.0, "e1"), ("cleared", 5.0, "e1"),
                                                ("raised", 1.5, "e2"), ("cleared", 1.5, "e2")]


def test_nan_counts_as_anomalous():
    t = tracker(raise_frames=2)
    ev = feed(t, [math.nan, math.nan])
    assert ev[0][1] == "raised" and math.isnan(ev[0][5])


def test_event_fields():
    t = tracker(raise_frames=1)
    e = t.update(7, 1.5, ts=123.25)
    assert e is not None and e.camera == "cam1" and e.ts == 123.25 and e.score == 1.5


@pytest.mark.parametrize(("thr", "clr", "rf", "cf"), [(1.0, 1.1, 1, 1), (0.0, 0.0, 1, 1), (1.0, 0.5, 0, 1),
                                                      (1.0, 0.5, 1, 0)])
def test_rejects_bad_settings(thr, clr, rf, cf):
    with pytest.raises(ValueError):
        AlarmTracker("c", thr, clr, rf, cf)
