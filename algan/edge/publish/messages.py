"""MQTT topics and payloads of the edge daemon, as pure functions: the contract a subscriber relies on.

| topic                               | QoS / retain | payload                                   |
| ----------------------------------- | ------------ | ----------------------------------------- |
| ``<prefix>/<device>/status``        | 1 / yes      | ``online`` / ``offline`` (also the Will)  |
| ``<prefix>/<device>/<camera>/score``| 0 / no       | :func:`score_payload` JSON                |
| ``<prefix>/<device>/<camera>/alarm``| 1 / no       | :func:`alarm_payload` JSON                |
| ``<prefix>/<device>/<camera>/state``| 1 / yes      | ``normal`` / ``alarm`` / ``offline``      |
| ``<prefix>/<device>/stats``         | 0 / no       | stats JSON (see ``algan.edge.stats``)     |
| ``<prefix>/<device>/<camera>/snapshot`` | 1 / yes  | JPEG bytes of the latest alarm's snapshot (optional) |

Timestamps are UTC ISO 8601 with milliseconds and a ``Z`` (:func:`algan.contract.utc_iso`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from algan.contract import utc_iso
from algan.edge.alarm import AlarmEvent

STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
STATE_NORMAL = "normal"
STATE_ALARM = "alarm"
#: Camera state when its source cannot be opened or died (an addition to normal/alarm).
STATE_OFFLINE = "offline"


def _num(x: float, ndigits: int = 6) -> float | None:
    """JSON-safe float: non-finite values become ``null`` (json would write the invalid token NaN)."""
    return round(float(x), ndigits) if math.isfinite(x) else None


@dataclass(frozen=True)
class Topics:
    """Topic names for one device.

    Args:
        prefix: first topic level(s), e.g. ``algan``.
        device: device id.
    """

    prefix: str
    device: str

    @property
    def status(self) -> str:
        return f"{self.prefix}/{self.device}/status"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/{self.device}/stats"

    def score(self, camera: str) -> str:
        return f"{self.prefix}/{self.device}/{camera}/score"

    def alarm(self, camera: str) -> str:
        return f"{self.prefix}/{self.device}/{camera}/alarm"

    def state(self, camera: str) -> str:
        return f"{self.prefix}/{self.device}/{camera}/state"

    def snapshot(self, camera: str) -> str:
        return f"{self.prefix}/{self.device}/{camera}/snapshot"


def dumps(obj: dict[str, Any]) -> str:
    """Compact JSON used for every payload."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def score_payload(ts: float, frame: int, score: float, threshold: float, latency_ms: float, model_id: str,
                  file: str | None = None) -> str:
    """Score message.

    Args:
        ts: capture time of the frame (Unix seconds).
        frame: frame index in its source, from 0 (gaps = frames dropped or skipped as corrupt).
        score: calibrated score (1.0 = calibrated threshold; higher = more anomalous).
        threshold: the camera's alarm threshold (score units).
        latency_ms: capture-to-publish latency (milliseconds).
        model_id: model identifier.
        file: image file name of a folder source (key ``file``; absent for other sources).
    """
    payload = {
        "ts": utc_iso(ts),
        "frame": int(frame),
        "score": _num(score),
        "threshold": _num(threshold),
        "latency_ms": round(float(latency_ms), 2),
        "model_id": model_id,
    }
    if file is not None:
        payload["file"] = file
    return dumps(payload)


class ScoreThrottle:
    """Which score messages of one camera to publish (so a recorder such as Home Assistant's is not flooded).

    A frame's score is published when at least ``every_n`` frames passed since the last published one and, with
    ``min_delta``, when it differs from the last published score by more than ``min_delta``; a frame whose decision
    (``score >= threshold``) differs from the last published one is always published. The defaults publish every
    frame. Pure: no clock.

    Args:
        every_n: publish at most every Nth scored frame (frames, >= 1).
        min_delta: publish only on a change larger than this (score units), ``None`` = any change.
    """

    def __init__(self, every_n: int = 1, min_delta: float | None = None) -> None:
        self.every_n = max(1, int(every_n))
        self.min_delta = min_delta
        self._since = self.every_n  # the first frame is always published
        self._last: float | None = None
        self._last_above: bool | None = None

    def keep(self, score: float, threshold: float) -> bool:
        """True when this frame's score message goes out (call once per scored frame, in order)."""
        above = not (score < threshold)  # NaN counts as anomalous, as in the alarm logic
        self._since += 1
        changed = above != self._last_above
        ok = self._since >= self.every_n
        if ok and self.min_delta is not None and self._last is not None and math.isfinite(score):
            ok = abs(score - self._last) > self.min_delta
        if not (ok or changed):
            return False
        self._since, self._last, self._last_above = 0, score, above
        return True


def alarm_payload(event: AlarmEvent) -> str:
    """Alarm event JSON.

    Keys: ``id``, ``camera``, ``state`` (raised|update|cleared), ``ts`` (the event's frame, UTC ISO), ``score`` (of
    that frame), ``peak`` (highest score of the episode so far), ``peak_frame``, ``first_frame``, ``last_frame`` (the
    event's frame), ``frames`` (frames in the episode), ``duration_s`` (seconds since the raise; 0 for raised),
    ``snapshot`` (file name of the event frame's JPEG in ``alarm.snapshots.dir`` on the device, ``null`` when none
    was written), ``region`` (models with anomaly maps: ``{"box": [x, y, w, h], "peak": [x, y], "peak_score",
    "level"}`` in frame pixels of the event's frame, else ``null``), ``file`` (image file name of the event's frame
    for folder sources, else ``null``) and, for ``cleared`` only, ``reason`` (``normal``, ``source_ended``,
    ``shutdown``, ``camera_removed``, ``restart``). ``raised`` and ``update`` describe one frame (score, region,
    snapshot, file); ``cleared`` repeats the snapshot and region of the episode's last raised/update event.
    """
    payload = {
        "id": event.id,
        "camera": event.camera,
        "state": event.state,
        "ts": utc_iso(event.ts),
        "score": _num(event.score),
        "peak": _num(event.peak),
        "peak_frame": event.peak_frame,
        "first_frame": event.first_frame,
        "last_frame": event.last_frame,
        "frames": event.frames,
        "duration_s": round(float(event.duration_s), 3),
        "snapshot": event.snapshot,
        "region": event.region,
        "file": event.file,
    }
    if event.state == "cleared":
        payload["reason"] = event.reason or "normal"
    return dumps(payload)
