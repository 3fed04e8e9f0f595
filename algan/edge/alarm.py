"""Alarm logic per camera: N-of-M debouncing, hysteresis, minimum duration and cooldown.

Pure: no threads, clocks, cv2 or MQTT. Time comes in with every frame (``ts``, Unix seconds).

State machine (scores are calibrated, 1.0 = calibrated threshold, higher = more anomalous)::

    normal --(raise_frames of the last raise_window frames have score >= threshold,
              and at least cooldown_s after the previous clear)------------------------> alarm   emits "raised"
    alarm  --(a frame scores more than UPDATE_RISE times the highest score reported so far)--> alarm   emits "update"
    alarm  --(clear_frames of the last clear_window frames have score < clear_threshold,
              and at least min_duration_s after the raise)------------------------------> normal  emits "cleared"
    alarm  --(close(): the source ended, the daemon stops, the camera was removed)------> normal  emits "cleared"

With ``raise_window == raise_frames`` (the default) raising needs that many *consecutive* anomalous frames; likewise
for clearing. A score between ``clear_threshold`` and ``threshold`` counts towards neither state (hysteresis). A
non-finite score (NaN/inf, i.e. a broken model) counts as anomalous: the fail-safe direction for an inspection
system. The events of one episode share the same ``id``.

Each ``raised`` and ``update`` event describes one frame: its ``score``, ``last_frame`` and (filled in by the daemon)
its ``region``, ``snapshot`` and ``file`` all come from the frame that raised the alarm, or from the later frame of
the episode that peaked higher (Frigate's ``new``/``update``/``end``). A ``cleared`` event's ``score`` is that of
the frame that cleared it (the last frame seen when closed); its ``reason`` says why it ended (:data:`REASONS`).
``peak`` is the highest finite score of the episode from its first anomalous frame (``first_frame``) on, and
``peak_frame`` the frame that had it.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

AlarmState = Literal["raised", "update", "cleared"]

#: an ``update`` event is sent when a frame of an open alarm scores more than this factor times the highest score
#: reported so far (the raised event's or the last update's): a rising defect is reported again, a flat one is not
UPDATE_RISE = 1.1
#: why a ``cleared`` event ended the alarm: scores back below ``clear_threshold``, the source (file or folder) ended,
#: the daemon stopped (SIGTERM, Ctrl-C), the camera was removed from the config, the daemon restarted after a crash
REASONS = ("normal", "source_ended", "shutdown", "camera_removed", "restart")


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class AlarmPolicy:
    """Settings of one camera's alarm logic (validated by :meth:`check`).

    Attributes:
        threshold: score at or above which a frame is anomalous (score, > 0).
        clear_threshold: score below which a frame is normal again while alarmed (score, <= threshold).
        raise_frames: anomalous frames needed within the raise window to raise (frames, >= 1).
        raise_window: length of the raise window (frames, >= raise_frames); ``None`` = raise_frames (consecutive).
        clear_frames: normal frames needed within the clear window to clear (frames, >= 1).
        clear_window: length of the clear window (frames, >= clear_frames); ``None`` = clear_frames (consecutive).
        min_duration_s: an alarm stays raised at least this long (seconds, >= 0).
        cooldown_s: after a clear, no new alarm is raised for this long (seconds, >= 0).
    """

    threshold: float = 1.0
    clear_threshold: float = 0.9
    raise_frames: int = 3
    raise_window: int | None = None
    clear_frames: int = 5
    clear_window: int | None = None
    min_duration_s: float = 0.0
    cooldown_s: float = 0.0

    @property
    def raise_m(self) -> int:
        """Effective raise window (frames)."""
        return self.raise_window if self.raise_window is not None else self.raise_frames

    @property
    def clear_m(self) -> int:
        """Effective clear window (frames)."""
        return self.clear_window if self.clear_window is not None else self.clear_frames

    def check(self) -> AlarmPolicy:
        """Return ``self`` when consistent.

        Raises:
            ValueError: one line naming the offending setting.
        """
        if not (self.threshold > 0 and 0 < self.clear_threshold <= self.threshold):
            msg = (f"need 0 < clear_threshold <= threshold, got threshold={self.threshold}, "
                   f"clear_threshold={self.clear_threshold}")
            raise ValueError(msg)
        if self.raise_frames < 1 or self.clear_frames < 1:
            msg = f"raise_frames and clear_frames must be >= 1, got {self.raise_frames}, {self.clear_frames}"
            raise ValueError(msg)
        if self.raise_m < self.raise_frames:
            raise ValueError(f"raise_window ({self.raise_m}) must be >= raise_frames ({self.raise_frames})")
        if self.clear_m < self.clear_frames:
            raise ValueError(f"clear_window ({self.clear_m}) must be >= clear_frames ({self.clear_frames})")
        if not (self.min_duration_s >= 0 and self.cooldown_s >= 0):
            msg = f"min_duration_s and cooldown_s must be >= 0, got {self.min_duration_s}, {self.cooldown_s}"
            raise ValueError(msg)
        return self


@dataclass(frozen=True)
class AlarmEvent:
    """One alarm transition.

    Attributes:
        id: episode id (hex string), the same for the raised and the cleared event of one episode.
        camera: camera name.
        state: ``"raised"`` or ``"cleared"``.
        ts: time of the frame that decided the transition (Unix seconds, as passed to ``update``).
        score: score of that frame.
        peak: highest finite score of the episode so far (NaN when every score was non-finite).
        first_frame: first frame index of the episode (first anomalous frame of the raising window).
        last_frame: frame index that decided the transition.
        frames: number of scored frames in the episode from ``first_frame`` to ``last_frame``.
        peak_frame: frame index that had ``peak`` (``first_frame`` when no score was finite).
        duration_s: seconds from the raise to this event (0.0 for "raised").
        snapshot: file name of the event frame's JPEG (relative to ``alarm.snapshots.dir``), filled in by the daemon
            when it wrote that file (``None`` with snapshots off or when the write failed); a ``cleared`` event
            repeats the last ``raised``/``update`` event's.
        region: where the defect is in the event's frame (``{"box": [x, y, w, h], "peak": [x, y], "peak_score",
            "level"}``, frame pixels; :meth:`algan.runtime.maps.Region.to_dict`), filled in by the daemon for models
            with anomaly maps, else ``None``; a ``cleared`` event repeats the last ``raised``/``update`` event's.
        file: image file name of the event's frame (folder sources), filled in by the daemon, else ``None``.
        reason: ``cleared`` events: why the alarm ended (one of :data:`REASONS`); ``None`` otherwise.
    """

    id: str
    camera: str
    state: AlarmState
    ts: float
    score: float
    peak: float
    first_frame: int
    last_frame: int
    frames: int
    peak_frame: int = -1
    duration_s: float = 0.0
    snapshot: str | None = None
    region: dict | None = None
    file: str | None = None
    reason: str | None = None


@dataclass
class _Seen:
    frame: int
    score: float
    anomalous: bool


class AlarmTracker:
    """Debounced alarm state of one camera.

    Args:
        camera: camera name copied into events.
        policy: the settings (thresholds, N-of-M windows, minimum duration, cooldown); default :class:`AlarmPolicy`.
        new_id: factory of episode ids (default: random UUID hex); pass a deterministic one in tests.

    Raises:
        ValueError: for inconsistent settings (see :meth:`AlarmPolicy.check`).

    Example:
        >>> t = AlarmTracker("cam1", AlarmPolicy(1.0, 0.9, raise_frames=2, clear_frames=1), new_id=lambda: "e1")
        >>> [t.update(i, s, ts=float(i)) is not None for i, s in enumerate([0.2, 1.5, 1.4, 0.95, 0.5])]
        [False, False, True, False, True]
    """

    def __init__(self, camera: str, policy: AlarmPolicy | None = None, new_id: Callable[[], str] = _new_id) -> None:
        policy = policy if policy is not None else AlarmPolicy()
        self.camera = camera
        self._new_id = new_id
        self.alarmed = False
        self._window: deque[_Seen] = deque()  # last raise_m frames while normal
        self._clear: deque[bool] = deque()  # last clear_m "is normal" flags while alarmed
        self._episode_id = ""
        self._first = -1
        self._count = 0  # frames of the open episode (alarmed)
        self._peak = -math.inf
        self._peak_frame = -1
        self._raised_ts = 0.0
        self._cleared_ts = -math.inf
        self._reported = -math.inf  # highest score sent in a raised/update event of the open episode
        self._last: tuple[int, float, float] | None = None  # (frame, score, ts) of the last frame fed
        self.policy = policy.check()

    # -- settings --------------------------------------------------------------------------------------------
    @property
    def threshold(self) -> float:
        return self.policy.threshold

    @property
    def clear_threshold(self) -> float:
        return self.policy.clear_threshold

    def reconfigure(self, policy: AlarmPolicy) -> None:
        """Switch to new settings (e.g. on SIGHUP) keeping the current state; windows are trimmed or restarted.

        Raises:
            ValueError: inconsistent settings; the tracker keeps its old ones.
        """
        self.policy = policy.check()
        while len(self._window) > policy.raise_m:
            self._window.popleft()
        while len(self._clear) > policy.clear_m:
            self._clear.popleft()

    # -- frames ----------------------------------------------------------------------------------------------
    def update(self, frame: int, score: float, ts: float) -> AlarmEvent | None:
        """Feed one scored frame (in frame order) and return the transition it causes, if any.

        Args:
            frame: frame index in the camera's source (int, increasing).
            score: calibrated score (float).
            ts: frame time (Unix seconds); drives ``min_duration_s`` and ``cooldown_s``.

        Returns:
            An :class:`AlarmEvent` when this frame raises or clears the alarm, else ``None``.
        """
        p = self.policy
        finite = math.isfinite(score)
        self._last = (frame, float(score), ts)
        if self.alarmed:
            self._count += 1
            if finite and score > self._peak:
                self._peak, self._peak_frame = score, frame
            self._clear.append(finite and score < p.clear_threshold)
            if len(self._clear) > p.clear_m:
                self._clear.popleft()
            if sum(self._clear) < p.clear_frames or ts - self._raised_ts < p.min_duration_s:
                if finite and score >= p.threshold and score > UPDATE_RISE * self._reported:
                    self._reported = float(score)
                    return self._event("update", frame, score, ts)
                return None
            return self._end(frame, score, ts, "normal")
        self._window.append(_Seen(frame, float(score), not finite or score >= p.threshold))
        if len(self._window) > p.raise_m:
            self._window.popleft()
        hits = [s for s in self._window if s.anomalous]
        if len(hits) < p.raise_frames or ts - self._cleared_ts < p.cooldown_s:
            return None
        self._first = hits[0].frame
        self._count = sum(1 for s in self._window if s.frame >= self._first)
        finite_hits = [s for s in self._window if s.frame >= self._first and math.isfinite(s.score)]
        if finite_hits:
            best = max(finite_hits, key=lambda s: s.score)  # first of equal maxima
            self._peak, self._peak_frame = best.score, best.frame
        else:
            self._peak, self._peak_frame = -math.inf, self._first
        self.alarmed = True
        self._episode_id = self._new_id()
        self._raised_ts = ts
        self._reported = float(score) if finite else math.inf  # a non-finite raise is never topped by an update
        self._window.clear()
        self._clear.clear()
        return self._event("raised", frame, score, ts)

    def close(self, reason: str, ts: float | None = None) -> AlarmEvent | None:
        """End an open alarm without a clearing frame: the source ended, the daemon stops, the camera was removed.

        Args:
            reason: one of :data:`REASONS` (carried as the event's ``reason``).
            ts: the event's time (Unix seconds); default: the last frame's.

        Returns:
            The ``cleared`` event (score and ``last_frame`` of the last frame fed), or ``None`` when no alarm is open.

        Raises:
            ValueError: an unknown ``reason``.
        """
        if reason not in REASONS:
            raise ValueError(f"unknown alarm clear reason {reason!r}; use one of {', '.join(REASONS)}")
        if not self.alarmed or self._last is None:
            return None
        frame, score, last_ts = self._last
        return self._end(frame, score, last_ts if ts is None else ts, reason)

    def _end(self, frame: int, score: float, ts: float, reason: str) -> AlarmEvent:
        event = self._event("cleared", frame, score, ts, reason)
        self.alarmed = False
        self._cleared_ts = ts
        self._reported = -math.inf
        self._window.clear()
        self._clear.clear()
        return event

    @property
    def peak_frame(self) -> int:
        """Frame index of the open episode's peak (-1 when not alarmed)."""
        return self._peak_frame if self.alarmed else -1

    def _event(self, state: AlarmState, frame: int, score: float, ts: float, reason: str | None = None) -> AlarmEvent:
        return AlarmEvent(
            id=self._episode_id,
            camera=self.camera,
            state=state,
            ts=ts,
            score=float(score),
            peak=float(self._peak) if math.isfinite(self._peak) else float("nan"),
            first_frame=self._first,
            last_frame=frame,
            frames=self._count,
            peak_frame=self._peak_frame,
            duration_s=max(0.0, ts - self._raised_ts) if state != "raised" else 0.0,
            reason=reason,
        )
