"""Throughput and latency bookkeeping for the stats message, and the message itself. Pure: times and counters are
passed in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


class StatsWindow:
    """Frames and capture-to-publish latencies since the last report.

    Args:
        now: start time (monotonic seconds).
    """

    def __init__(self, now: float) -> None:
        self._start = now
        self._latencies: list[float] = []
        self.first_frame_t: float | None = None
        self.total_frames = 0
        self._batches = 0
        self._batch_frames = 0
        self._infer_ms = 0.0

    def record(self, latency_ms: float, now: float) -> None:
        """Count one scored frame with its latency (milliseconds)."""
        if self.first_frame_t is None:
            self.first_frame_t = now
        self._latencies.append(latency_ms)
        self.total_frames += 1

    def record_batch(self, size: int, infer_ms: float) -> None:
        """Count one scored batch of ``size`` frames that took ``infer_ms`` milliseconds of inference."""
        self._batches += 1
        self._batch_frames += size
        self._infer_ms += infer_ms

    def due(self, now: float, interval_s: float) -> bool:
        """True when ``interval_s`` seconds have passed since the window started."""
        return now - self._start >= interval_s

    def report(self, now: float) -> dict[str, float | None]:
        """Window figures, then start a new window.

        Returns:
            ``fps`` (frames/s in the window), ``fps_avg`` (frames/s since the first frame),
            ``latency_ms_p50`` and ``latency_ms_p99`` (capture to publish, milliseconds, ``None`` without frames),
            ``batch_mean`` (frames per batch) and ``inference_ms`` (mean per batch, milliseconds), ``None`` without
            batches.
        """
        dt = max(now - self._start, 1e-9)
        lat = np.asarray(self._latencies, dtype=np.float64)
        span = now - self.first_frame_t if self.first_frame_t is not None else 0.0
        out: dict[str, float | None] = {
            "fps": round(len(lat) / dt, 2),
            "fps_avg": round(self.total_frames / span, 2) if span > 0 else 0.0,
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 2) if lat.size else None,
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
            "batch_mean": round(self._batch_frames / self._batches, 2) if self._batches else None,
            "inference_ms": round(self._infer_ms / self._batches, 2) if self._batches else None,
        }
        self._start = now
        self._latencies = []
        self._batches, self._batch_frames, self._infer_ms = 0, 0, 0.0
        return out


#: per-camera counters summed into the stats message's totals
SUMMED_COUNTERS = ("dropped", "corrupt", "skipped", "backpressure")


def stats_payload(ts: str, figures: Mapping[str, Any], cameras: Mapping[str, Mapping[str, Any]], *, frames: int,
                  queue_depth: int, batches: tuple[int, int], backend: str, model_id: str, mqtt_lost: int,
                  outbox: tuple[int, int] | None) -> dict[str, Any]:
    """The stats message (``<prefix>/<device>/stats``), from figures already measured; pure.

    Args:
        ts: UTC time of the message (ISO 8601).
        figures: :meth:`StatsWindow.report` of the window.
        cameras: per-camera counters (name -> ``status``, ``frames``, ``dropped``, ``corrupt``, ``skipped``,
            ``backpressure``...), copied as they are and summed into the totals.
        frames: frames scored since the start (all cameras).
        queue_depth: frames waiting in the hub (all cameras).
        batches: ``(full, partial)`` batches run since the start.
        backend, model_id: the runner's.
        mqtt_lost: messages the publisher dropped.
        outbox: ``(depth, dropped)`` of the publisher's outbox, ``None`` without one (both reported as 0).

    Returns:
        The payload, keys in message order.
    """
    depth, dropped = outbox if outbox is not None else (0, 0)
    totals = {key: sum(c[key] for c in cameras.values()) for key in SUMMED_COUNTERS}
    return {
        "ts": ts,
        **figures,
        "frames": frames,
        **totals,
        "queue_depth": queue_depth,
        "batches_full": batches[0],
        "batches_partial": batches[1],
        "backend": backend,
        "model_id": model_id,
        "mqtt_lost": mqtt_lost,
        # durable messages (alarm events, state changes) not yet acknowledged by the broker, and those the full
        # outbox had to drop: a growing depth means the broker has been unreachable for a while
        "outbox_depth": depth,
        "outbox_dropped": dropped,
        "cameras": dict(cameras),
    }


def status_line(payload: Mapping[str, Any]) -> str:
    """The systemd ``STATUS=`` text of a stats message: throughput, p99 latency, cameras online, frames dropped."""
    cams = payload["cameras"]
    online = sum(1 for v in cams.values() if v["status"] == "online")
    return (f"{payload['fps']} frames/s, latency p99 {payload['latency_ms_p99']} ms, {online}/{len(cams)} cameras "
            f"online, {payload['dropped']} dropped")
