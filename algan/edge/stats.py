"""Throughput and latency bookkeeping for the stats message. Pure: times are passed in."""

from __future__ import annotations

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
