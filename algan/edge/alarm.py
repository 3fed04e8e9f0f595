"""Alarm logic per camera: N-of-M debouncing, hysteresis, minimum duration and cooldown.

Pure: no threads, clocks, cv2 or MQTT. Time comes in with every frame (``ts``, Unix seconds).

State machine (scores are calibrated, 1.0 = calibrated threshold, higher = more anomalous)::

    normal --(raise_frames of the last raise_window frames have score >= threshold,
              and at least cooldown_s after the previous clear)------------------------> alarm   emits "raised"
    alarm  --(clear_frames of the last clear_window frames have score < clear_threshold,
              and at least min_duration_s after the raise)------------------------------> normal  emits "cleared"

With ``raise_window == raise_frames`` (the default) raising needs that many *consecutive* anomalous frames; likewise
for clearing. A score between ``clear_threshold`` and ``threshold`` counts towards neither state (hysteresis). A
non-finite score (NaN/inf, i.e. a broken model) counts as anomalous: the fail-safe direction for an inspection
system. Raised and cleared events of one episode share the same ``id``.

An episode starts at the first anomalous frame of the raising window (``first_frame``); its ``peak`` is the highest
finite score from there on and ``peak_frame`` the frame that had it. :meth:`AlarmTracker.snapshot_candidates` names
the frames whose pixels may still become the episode's peak snapshot, so a caller keeps at most ``raise_window``
images before the raise and exactly one while the alarm is open.
"""

from __future__ import annotations

import math
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

AlarmState = Literal["raised", "cleared"]


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
        snapshot: file name of the peak-frame JPEG (relative to ``alarm.snapshots.dir``), filled in by the daemon
            when it wrote that file (``None`` with snapshots off or when the write failed).
        region: where the defect is in the peak frame (``{"box": [x, y, w, h], "peak": [x, y], "peak_score",
            "level"}``, frame pixels; :meth:`algan.runtime.maps.Region.to_dict`), filled in by the daemon for models
            with anomaly maps, else ``None``.
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
        if self.alarmed:
            self._count += 1
            if finite and score > self._peak:
                self._peak, self._peak_frame = score, frame
            self._clear.append(finite and score < p.clear_threshold)
            if len(self._clear) > p.clear_m:
                self._clear.popleft()
            if sum(self._clear) < p.clear_frames or ts - self._raised_ts < p.min_duration_s:
                return None
            event = self._event("cleared", frame, score, ts)
            self.alarmed = False
            self._cleared_ts = ts
            self._window.clear()
            self._clear.clear()
            return event
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
        self._window.clear()
        self._clear.clear()
        return self._event("raised", frame, score, ts)

    def snapshot_candidates(self) -> set[int]:
        """Frame indices whose pixels may still be the episode's peak frame (keep their images, drop the others).

        Before a raise: the anomalous frames of the window not outscored by a later one (at most ``raise_window``);
        while alarmed: only the current peak frame; none otherwise.
        """
        if self.alarmed:
            return {self._peak_frame}
        keep: set[int] = set()
        best = -math.inf
        for s in reversed(self._window):
            if not s.anomalous:
                continue
            value = s.score if math.isfinite(s.score) else -math.inf
            if value >= best or not keep:
                keep.add(s.frame)
                best = max(best, value)
        return keep

    @property
    def peak_frame(self) -> int:
        """Frame index of the open episode's peak (-1 when not alarmed)."""
        return self._peak_frame if self.alarmed else -1

    def _event(self, state: AlarmState, frame: int, score: float, ts: float) -> AlarmEvent:
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
            duration_s=max(0.0, ts - self._raised_ts) if state == "cleared" else 0.0,
        )
