"""Optional Prometheus endpoint (``metrics.port`` in the config; needs ``pip install prometheus-client``).

Everything except the latency histograms is read at scrape time from a snapshot callback (the same figures as the
stats message), so the hot loop pays only for ``observe`` calls. A private registry is used, so several daemons
in one process (tests) do not clash.

Exposed series (``device`` label = device id):

* ``algan_frames_scored_total{camera}``, ``algan_frames_read_total{camera}``, ``algan_frames_dropped_total{camera}``,
  ``algan_frames_corrupt_total{camera}``, ``algan_frames_skipped_total{camera}``, ``algan_reconnects_total{camera}``
* ``algan_camera_up{camera}`` (1 online, 0 otherwise), ``algan_queue_depth``, ``algan_fps``
* ``algan_latency_seconds`` histogram (capture to publish), ``algan_inference_seconds`` histogram (per batch)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from algan.edge.config import MetricsConfig
from algan.runtime.errors import EdgeError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "metrics.port needs the prometheus-client package: pip install prometheus-client (or remove metrics.port)"
)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: per-camera counter name -> key in the stats message's ``cameras`` entries
CAMERA_COUNTERS = {
    "frames_scored": "frames",
    "frames_read": "read",
    "frames_dropped": "dropped",
    "frames_corrupt": "corrupt",
    "frames_skipped": "skipped",
    "reconnects": "reconnects",
}


class Metrics:
    """Prometheus exporter, or a no-op when ``cfg.port`` is ``None``.

    Args:
        cfg: metrics section of the config.
        device_id: value of the ``device`` label.
        snapshot: returns the latest stats dict (see ``EdgeApp.stats_snapshot``), called at scrape time.

    Raises:
        EdgeError: ``cfg.port`` is set but prometheus-client is missing (one line with the install hint).
    """

    def __init__(self, cfg: MetricsConfig, device_id: str, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.cfg = cfg
        self.enabled = cfg.port is not None
        self._server: Any = None
        self._latency: Any = None
        self._inference: Any = None
        if not self.enabled:
            return
        try:
            import prometheus_client as pc
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        except ImportError:
            raise EdgeError(INSTALL_HINT) from None
        self._pc = pc
        self.registry = pc.CollectorRegistry()
        labels = {"device": device_id}

        class _Snapshot:
            def collect(self) -> Any:
                s = snapshot()
                cams = s.get("cameras", {})
                for name, key in CAMERA_COUNTERS.items():
                    fam = CounterMetricFamily(f"algan_{name}", f"{name.replace('_', ' ')} per camera",
                                              labels=["device", "camera"])
                    for cam, c in cams.items():
                        fam.add_metric([device_id, cam], float(c.get(key, 0) or 0))
                    yield fam
                up = GaugeMetricFamily("algan_camera_up", "1 when the camera delivers frames",
                                       labels=["device", "camera"])
                for cam, c in cams.items():
                    up.add_metric([device_id, cam], 1.0 if c.get("status") == "online" else 0.0)
                yield up
                for key, text in (("queue_depth", "frames waiting for inference"), ("fps", "frames/s scored"),
                                  ("outbox_depth", "durable MQTT messages not yet acknowledged by the broker")):
                    g = GaugeMetricFamily(f"algan_{key}", text, labels=["device"])
                    g.add_metric([device_id], float(s.get(key) or 0.0))
                    yield g

        self.registry.register(_Snapshot())
        self._latency = pc.Histogram("algan_latency_seconds", "capture-to-publish latency", ["device"],
                                     buckets=LATENCY_BUCKETS, registry=self.registry).labels(**labels)
        self._inference = pc.Histogram("algan_inference_seconds", "inference time per batch", ["device"],
                                       buckets=LATENCY_BUCKETS, registry=self.registry).labels(**labels)

    def start(self) -> None:
        """Serve ``/metrics`` on ``host:port``.

        Raises:
            EdgeError: the port is taken or the address cannot be bound.
        """
        if not self.enabled:
            return
        try:
            self._server, _ = self._pc.start_http_server(self.cfg.port, addr=self.cfg.host, registry=self.registry)
        except OSError as e:
            msg = f"cannot serve metrics on {self.cfg.host}:{self.cfg.port}: {e.strerror or e}; change metrics.port"
            raise EdgeError(msg) from None
        log.info("Prometheus metrics on http://%s:%d/metrics", self.cfg.host, self.cfg.port)
        if not is_loopback(self.cfg.host):
            log.warning("metrics.host %s: the metrics endpoint is plain HTTP without authentication and reachable "
                        "from the network (camera names, frame rates, alarm counts); bind it to 127.0.0.1 and "
                        "scrape through a TLS reverse proxy or an SSH tunnel, or firewall port %d", self.cfg.host,
                        self.cfg.port)

    def observe_frame(self, latency_s: float) -> None:
        """Record one frame's capture-to-publish latency (seconds)."""
        if self._latency is not None:
            self._latency.observe(latency_s)

    def observe_batch(self, seconds: float) -> None:
        """Record one batch's inference time (seconds)."""
        if self._inference is not None:
            self._inference.observe(seconds)

    def stop(self) -> None:
        """Stop the HTTP server (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    import ipaddress

    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
