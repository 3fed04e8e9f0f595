"""Alarm logic on hand-made score sequences: debouncing (consecutive and N-of-M), hysteresis, minimum duration,
cooldown, peak frame, update events and closing with a reason."""

from __future__ import annotations

import itertools
import math

import pytest

from algan.edge.alarm import REASONS, UPDATE_RISE, AlarmPolicy, AlarmTracker


def tracker(raise_frames=3, clear_frames=2, threshold=1.0, clear_threshold=0.8) -> AlarmTracker:
    ids = (f"e{i}" for i in itertools.count(1))
    return AlarmTracker("cam1", AlarmPolicy(threshold, clear_threshold, raise_frames, clear_frames=clear_frames),
                        new_id=lambda: next(ids))


def feed(t: AlarmTracker, scores, start: int = 0):
    """Transitions as (frame, state, first_frame, last_frame, frames, peak, id) (``update`` events left out)."""
    out = []
    for i, s in enumerate(scores, start):
        e = t.update(i, s, ts=1000.0 + i)
        if e is not None and e.state != "update":
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
        AlarmTracker("c", AlarmPolicy(thr, clr, rf, clear_frames=cf))


# -- N-of-M, minimum duration, cooldown, peak frame, snapshot candidates ------------------------------------------

def ptracker(**kw) -> AlarmTracker:
    ids = (f"e{i}" for i in itertools.count(1))
    base = {"threshold": 1.0, "clear_threshold": 0.8, "raise_frames": 3, "clear_frames": 2}
    return AlarmTracker("cam1", policy=AlarmPolicy(**{**base, **kw}), new_id=lambda: next(ids))


def run(t: AlarmTracker, scores, dt: float = 1.0, start: int = 0):
    """Transitions as (frame, state, first_frame, frames, peak_frame); frame i at ts = i * dt (``update`` left out)."""
    out = []
    for i, s in enumerate(scores, start):
        e = t.update(i, s, ts=i * dt)
        if e is not None and e.state != "update":
            out.append((i, e.state, e.first_frame, e.frames, e.peak_frame))
    return out


def test_n_of_m_raise_tolerates_gaps():
    t = ptracker(raise_frames=3, raise_window=5)
    # anomalous at 1, 3, 5: 3 of the last 5 (frames 1-5) -> raised at 5, episode from frame 1
    assert run(t, [0.1, 1.2, 0.5, 1.6, 0.5, 1.1]) == [(5, "raised", 1, 5, 3)]


def test_n_of_m_raise_window_slides():
    t = ptracker(raise_frames=3, raise_window=4)
    # anomalous at 0, 2, 5, 6: window 3-6 holds 5, 6 only; 4-7 holds 5, 6, 7 -> raised at 7, first frame 5
    ev = run(t, [1.5, 0.1, 1.5, 0.1, 0.1, 1.2, 1.3, 1.1])
    assert ev == [(7, "raised", 5, 3, 6)]


def test_consecutive_is_the_default_window():
    t = ptracker(raise_frames=3)
    assert run(t, [1.2, 1.2, 0.1, 1.2, 1.2, 0.1]) == []


def test_n_of_m_clear():
    t = ptracker(raise_frames=1, clear_frames=3, clear_window=5)
    # normal (< 0.8) at 2, 4, 6 within the window 2-6 -> cleared at 6
    ev = run(t, [2.0, 1.0, 0.1, 1.0, 0.1, 1.0, 0.1])
    assert [e[:2] for e in ev] == [(0, "raised"), (6, "cleared")]


def test_min_duration_holds_the_alarm():
    t = ptracker(raise_frames=1, clear_frames=1, min_duration_s=5.0)
    ev = run(t, [2.0, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    assert [e[:2] for e in ev] == [(0, "raised"), (5, "cleared")]
    e = t.update(6, 2.0, ts=6.0)
    assert e is not None and e.state == "raised"


def test_min_duration_still_needs_the_clear_condition():
    t = ptracker(raise_frames=1, clear_frames=2, min_duration_s=2.0)
    ev = run(t, [2.0, 0.1, 0.1, 0.9, 0.1, 0.1])
    assert [e[:2] for e in ev] == [(0, "raised"), (2, "cleared")]  # 2 normal frames and 2 s elapsed at frame 2
    t = ptracker(raise_frames=1, clear_frames=2, min_duration_s=3.0)
    ev = run(t, [2.0, 0.1, 0.1, 0.9, 0.1, 0.1])
    assert [e[:2] for e in ev] == [(0, "raised"), (5, "cleared")]  # at 3 s frame 3 (hysteresis band) broke the run


def test_cooldown_blocks_a_new_raise():
    t = ptracker(raise_frames=2, clear_frames=1, cooldown_s=3.0)
    # raised at 1, cleared at 2; frames 3-4 anomalous but within 3 s of the clear; first raise at ts 5
    ev = run(t, [2.0, 2.0, 0.1, 2.0, 2.0, 2.0, 0.1])
    assert [e[:2] for e in ev] == [(1, "raised"), (2, "cleared"), (5, "raised"), (6, "cleared")]
    assert ev[2][2] == 4, "the window (frames 4-5) decides; the episode starts at its first anomalous frame"


def test_cooldown_uses_timestamps_not_frames():
    t = ptracker(raise_frames=1, clear_frames=1, cooldown_s=1.0)
    ev = run(t, [2.0, 0.1, 2.0, 2.0, 2.0], dt=0.4)  # cleared at 0.4 s; 0.8 and 1.2 s too soon; 1.6 s ok
    assert [e[:2] for e in ev] == [(0, "raised"), (1, "cleared"), (4, "raised")]


def test_peak_frame_and_duration():
    t = ptracker(raise_frames=2, clear_frames=1)
    events = [t.update(i, s, ts=10.0 + i) for i, s in enumerate([1.5, 1.2, 3.0, 2.0, 0.1])]
    raised, cleared = (e for e in events if e is not None and e.state != "update")
    assert (raised.peak, raised.peak_frame, raised.duration_s) == (1.5, 0, 0.0)
    assert (cleared.peak, cleared.peak_frame, cleared.duration_s) == (3.0, 2, 3.0)
    assert cleared.frames == 5 and cleared.first_frame == 0


def test_update_when_a_later_frame_peaks_higher():
    """raised = the frame that raised it; an update for each later frame scoring > UPDATE_RISE x the last reported
    score; the cleared event is the clearing frame's, with reason "normal"."""
    t = ptracker(raise_frames=2, clear_frames=1)
    scores = [1.5, 1.2, 3.0, 3.2, 4.0, 2.0, 0.1]
    events = [e for i, s in enumerate(scores) if (e := t.update(i, s, ts=10.0 + i)) is not None]
    assert [(e.state, e.last_frame, e.score) for e in events] == [
        ("raised", 1, 1.2), ("update", 2, 3.0), ("update", 4, 4.0), ("cleared", 6, 0.1)]  # 3.2 < 1.1 * 3.0
    assert [e.peak for e in events] == [1.5, 3.0, 4.0, 4.0]
    assert len({e.id for e in events}) == 1 and events[1].duration_s == 1.0
    assert [e.reason for e in events] == [None, None, None, "normal"]
    assert UPDATE_RISE == 1.1


def test_close_ends_an_open_alarm_with_its_reason():
    t = ptracker(raise_frames=1, clear_frames=3)
    assert t.close("shutdown") is None  # nothing open
    t.update(0, 2.0, ts=5.0)
    t.update(1, 1.0, ts=6.0)
    e = t.close("source_ended")
    assert (e.state, e.reason, e.last_frame, e.score, e.duration_s) == ("cleared", "source_ended", 1, 1.0, 1.0)
    assert not t.alarmed and t.close("shutdown") is None
    with pytest.raises(ValueError, match="unknown alarm clear reason"):
        t.close("tired")
    assert set(REASONS) == {"normal", "source_ended", "shutdown", "camera_removed", "restart"}


def test_reconfigure_keeps_state():
    t = ptracker(raise_frames=1, clear_frames=1)
    run(t, [2.0])
    t.reconfigure(AlarmPolicy(threshold=3.0, clear_threshold=2.5, raise_frames=1, clear_frames=1))
    assert t.alarmed and t.update(1, 2.6, ts=1) is None  # 2.6 is in the new hysteresis band
    e = t.update(2, 2.4, ts=2)
    assert e is not None and e.state == "cleared" and e.id == "e1"
    with pytest.raises(ValueError, match="raise_window"):
        t.reconfigure(AlarmPolicy(raise_frames=3, raise_window=2))
    assert t.threshold == 3.0


@pytest.mark.parametrize(("kw", "match"), [
    ({"raise_frames": 3, "raise_window": 2}, "raise_window"),
    ({"clear_frames": 3, "clear_window": 1}, "clear_window"),
    ({"min_duration_s": -1.0}, "min_duration_s"),
    ({"cooldown_s": -1.0}, "cooldown_s"),
])
def test_policy_rejects_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        AlarmPolicy(**kw).check()
