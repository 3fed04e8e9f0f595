"""Alarm logic per camera: consecutive-frame debouncing with hysteresis. Pure: no threads, clocks, cv2 or MQTT.

State machine (scores are calibrated, 1.0 = calibrated threshold, higher = more anomalous)::

    normal --(raise_frames consecutive frames with score >= threshold)--> alarm      emits "raised"
    alarm  --(clear_frames consecutive frames with score < clear_threshold)--> normal  emits "cleared"

A score between ``clear_threshold`` and ``threshold`` keeps the current state and resets the count towards the
other state (hysteresis). A non-finite score (NaN/inf, i.e. a broken model) counts as anomalous: the fail-safe
direction for an inspection system. Raised and cleared events of one episode share the same ``id``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

AlarmState = Literal["raised", "cleared"]


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class AlarmEvent:
    """One alarm transition.

    Attributes:
        id: episode id (hex string), the same for the raised and the cleared event of one episode.
        camera: camera name.
        state: ``"raised"`` or ``"cleared"``.
        ts: time of the frame that decided the transition (Unix seconds, as passed to ``update``).
        score: score of that frame.
        peak: highest finite score in the episode so far (for "raised": within the raising run).
        first_frame: first frame index of the episode (first anomalous frame of the raising run).
        last_frame: frame index that decided the transition.
        frames: number of scored frames in the episode from ``first_frame`` to ``last_frame``.
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


class AlarmTracker:
    """Debounced alarm state of one camera.

    Args:
        camera: camera name copied into events.
        threshold: score at or above which a frame is anomalous (> 0).
        clear_threshold: score below which a frame is normal again while alarmed (<= threshold).
        raise_frames: consecutive anomalous frames needed to raise (>= 1).
        clear_frames: consecutive normal frames needed to clear (>= 1).
        new_id: factory of episode ids (default: random UUID hex); pass a deterministic one in tests.

    Raises:
        ValueError: for thresholds or frame counts outside the ranges above.

    Example:
        >>> t = AlarmTracker("cam1", 1.0, 0.9, raise_frames=2, clear_frames=1, new_id=lambda: "e1")
        >>> [t.update(i, s, ts=float(i)) is not None for i, s in enumerate([0.2, 1.5, 1.4, 0.95, 0.5])]
        [False, False, True, False, True]
    """

    def __init__(
        self,
        camera: str,
        threshold: float,
        clear_threshold: float,
        raise_frames: int,
        clear_frames: int,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        if not (threshold > 0 and 0 < clear_threshold <= threshold):
            msg = f"need 0 < clear_threshold <= threshold, got threshold={threshold}, clear_threshold={clear_threshold}"
            raise ValueError(msg)
        if raise_frames < 1 or clear_frames < 1:
            raise ValueError(f"raise_frames and clear_frames must be >= 1, got {raise_frames}, {clear_frames}")
        self.camera = camera
        self.threshold = float(threshold)
        self.clear_threshold = float(clear_threshold)
        self.raise_frames = int(raise_frames)
        self.clear_frames = int(clear_frames)
        self._new_id = new_id
        self.alarmed = False
        self._episode_id = ""
        self._first = -1  # first frame of the current anomalous run / episode
        self._count = 0  # anomalous run length (normal) or episode length (alarmed)
        self._peak = -math.inf
        self._below = 0  # consecutive normal frames while alarmed

    def update(self, frame: int, score: float, ts: float) -> AlarmEvent | None:
        """Feed one scored frame (in frame order) and return the transition it causes, if any.

        Args:
            frame: frame index in the camera's source (int, increasing).
            score: calibrated score (float).
            ts: frame time (Unix seconds), copied into the event.

        Returns:
            An :class:`AlarmEvent` when this frame raises or clears the alarm, else ``None``.
        """
        finite = math.isfinite(score)
        if finite:
            self._peak = max(self._peak, score)
        if not self.alarmed:
            if finite and score < self.threshold:
                self._reset()
                return None
            if self._count == 0:
                self._first = frame
                self._peak = score if finite else -math.inf
            self._count += 1
            if self._count < self.raise_frames:
                return None
            self.alarmed = True
            self._episode_id = self._new_id()
            self._below = 0
            return self._event("raised", frame, score, ts)
        self._count += 1
        self._below = self._below + 1 if finite and score < self.clear_threshold else 0
        if self._below < self.clear_frames:
            return None
        event = self._event("cleared", frame, score, ts)
        self.alarmed = False
        self._reset()
        return event

    def _reset(self) -> None:
        self._first, self._count, self._peak, self._below = -1, 0, -math.inf, 0

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
        )
