"""The edge daemon's composition root: :class:`EdgeApp` starts and stops everything in order.

Start: model runner -> (embedded broker) -> MQTT connection -> initial camera states -> camera readers.
Loop: batch frames across cameras -> score -> publish score, alarm and state messages -> periodic stats.
Stop (sources exhausted, or the stop event set by SIGTERM/SIGINT): join readers -> final stats -> retained
``offline`` -> wait until every message is written/acked -> disconnect -> stop the embedded broker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from algan.edge.alarm import AlarmTracker
from algan.edge.batcher import Batcher, next_batch
from algan.edge.broker import EmbeddedBroker, wants_embedded_broker
from algan.edge.config import EdgeConfig
from algan.edge.errors import EdgeError
from algan.edge.hub import Frame, FrameHub
from algan.edge.messages import (
    STATE_ALARM,
    STATE_NORMAL,
    STATE_OFFLINE,
    Topics,
    alarm_payload,
    dumps,
    score_payload,
    utc_iso,
)
from algan.edge.mqtt import MqttPublisher, Publisher
from algan.edge.runner import Runner, load_runner
from algan.edge.sdnotify import SystemdNotifier
from algan.edge.sources import CameraReader
from algan.edge.stats import StatsWindow

log = logging.getLogger(__name__)

#: Seconds allowed at shutdown for every outstanding message to be written/acknowledged.
FLUSH_TIMEOUT_S = 15.0
#: Consecutive failed inference batches after which the daemon gives up (exit 1).
MAX_INFERENCE_FAILURES = 10


class EdgeApp:
    """Runs the daemon for one config.

    Args:
        config: validated config (paths resolved, see :func:`algan.edge.config.load_config`).
        stop: event that ends the run when set (signal handlers set it); a new one by default.
        runner_factory: builds the runner (tests inject fakes).
        clock: monotonic clock (seconds).
    """

    def __init__(
        self,
        config: EdgeConfig,
        stop: threading.Event | None = None,
        runner_factory: Callable[[EdgeConfig], Runner] = load_runner,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = config
        self.stop = stop or threading.Event()
        self.runner_factory = runner_factory
        self.clock = clock
        self.topics = Topics(config.mqtt.prefix, config.device_id)
        self.hub = FrameHub()
        self.readers: list[CameraReader] = []
        self.trackers: dict[str, AlarmTracker] = {}
        self.thresholds = {cam.name: config.camera_thresholds(cam) for cam in config.cameras}
        self.scored: dict[str, int] = {cam.name: 0 for cam in config.cameras}
        self._states: dict[str, str] = {}
        self._status_events: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._failures = 0
        self.window = StatsWindow(clock())
        self.last_stats: dict = {}
        self.systemd = SystemdNotifier()

    # -- start ---------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until the sources are exhausted or :attr:`stop` is set.

        Returns:
            Exit status: 0 on a clean run; 1 when every camera failed or messages could not be delivered.

        Raises:
            EdgeError: model, broker or start-up problems (one-line message).
        """
        runner = self.runner_factory(self.cfg)
        h, w = runner.input_size
        log.info("model %s loaded: backend=%s input=%dx%d id=%s", self.cfg.model, runner.backend, w, h,
                 runner.model_id)
        broker = self._start_broker()
        try:
            pub = self._connect()
            try:
                self._start_cameras(pub, runner.input_size)
                self.systemd.notify("READY=1")
                self._loop(runner, pub)
            finally:
                self.systemd.notify("STOPPING=1")
                self.stop.set()
                undelivered = self._shutdown(runner, pub)
        finally:
            if broker is not None:
                broker.stop()
        if undelivered:
            log.error("%d MQTT messages could not be delivered before exit; is the broker reachable?", undelivered)
            return 1
        if all(r.counters.status == "failed" for r in self.readers):
            log.error("no camera could be read; fix the camera sources in the config")
            return 1
        return 0

    def _start_broker(self) -> EmbeddedBroker | None:
        m = self.cfg.mqtt
        if not wants_embedded_broker(m):
            return None
        log.info("no MQTT broker on %s:%d: starting the embedded one (mqtt.embedded_broker: auto)", m.host, m.port)
        broker = EmbeddedBroker(m.host, m.port)
        broker.start()
        return broker

    def _connect(self) -> MqttPublisher:
        m = self.cfg.mqtt
        pub = MqttPublisher(m, m.client_id or f"algan-edge-{self.cfg.device_id}", self.topics.status)
        pub.connect(m.connect_timeout_s)
        return pub

    def _start_cameras(self, pub: Publisher, size: tuple[int, int]) -> None:
        a = self.cfg.alarm
        for cam in self.cfg.cameras:
            thr, clr = self.thresholds[cam.name]
            self.trackers[cam.name] = AlarmTracker(cam.name, thr, clr, a.raise_frames, a.clear_frames)
            self._set_state(pub, cam.name, STATE_NORMAL)
        for cam in self.cfg.cameras:
            reader = CameraReader(cam, size, self.hub, self.stop, self._on_camera_status)
            self.readers.append(reader)
            reader.start()

    def _on_camera_status(self, camera: str, status: str) -> None:
        """Called from reader threads; the main loop publishes (single writer of camera state)."""
        self._status_events.put((camera, status))

    def _set_state(self, pub: Publisher, camera: str, state: str) -> None:
        if self._states.get(camera) != state:
            self._states[camera] = state
            pub.publish(self.topics.state(camera), state, qos=self.cfg.mqtt.alarm_qos, retain=True)

    def _drain_status(self, pub: Publisher) -> None:
        while True:
            try:
                camera, status = self._status_events.get_nowait()
            except queue.Empty:
                return
            if status in ("offline", "failed"):
                self._set_state(pub, camera, STATE_OFFLINE)
            elif status == "online":
                self._set_state(pub, camera, STATE_ALARM if self.trackers[camera].alarmed else STATE_NORMAL)

    # -- loop ----------------------------------------------------------------------------------------------
    def _loop(self, runner: Runner, pub: Publisher) -> None:
        batcher: Batcher[Frame] = Batcher(self.cfg.batch.max_size, self.cfg.batch.max_wait_ms / 1000.0)
        self.window = StatsWindow(self.clock())  # restart: model load and connect are not throughput
        while True:
            self.systemd.watchdog()
            self._drain_status(pub)
            batch = next_batch(self.hub, batcher, self.stop, self.clock)
            if batch is None:
                break
            if batch:
                self._process(batch, runner, pub)
            if self.window.due(self.clock(), self.cfg.stats_interval_s):
                self._publish_stats(runner, pub)
        self._drain_status(pub)

    def _process(self, batch: list[Frame], runner: Runner, pub: Publisher) -> None:
        try:
            scores = runner(np.stack([f.image for f in batch]))
        except (RuntimeError, ValueError) as e:
            self._failures += 1
            log.error("inference failed on a batch of %d frames (%d in a row): %s", len(batch), self._failures, e)
            if self._failures >= MAX_INFERENCE_FAILURES:
                raise EdgeError(f"inference failed {self._failures} times in a row; last error: {e}") from None
            return
        self._failures = 0
        for frame, score in zip(batch, scores.tolist(), strict=True):
            cam = frame.camera
            threshold = self.thresholds[cam][0]
            now = self.clock()
            latency_ms = (now - frame.t_mono) * 1000.0
            payload = score_payload(frame.t_wall, frame.index, score, threshold, latency_ms, runner.model_id)
            pub.publish(self.topics.score(cam), payload, qos=self.cfg.mqtt.score_qos)
            self.scored[cam] += 1
            self.window.record(latency_ms, now)
            event = self.trackers[cam].update(frame.index, score, frame.t_wall)
            if event is not None:
                pub.publish(self.topics.alarm(cam), alarm_payload(event), qos=self.cfg.mqtt.alarm_qos)
                self._set_state(pub, cam, STATE_ALARM if event.state == "raised" else STATE_NORMAL)
                log.warning("camera %s: alarm %s at frame %d (score %.3f, peak %.3f, frames %d-%d) id=%s", cam,
                            event.state, frame.index, score, event.peak, event.first_frame, event.last_frame, event.id)

    def _publish_stats(self, runner: Runner, pub: Publisher) -> None:
        fig = self.window.report(self.clock())
        cams = {}
        for r in self.readers:
            name = r.cam.name
            c = r.counters
            cams[name] = {
                "status": c.status,
                "state": self._states.get(name),
                "frames": self.scored[name],
                "read": c.read,
                "dropped": self.hub.dropped.get(name, 0),
                "corrupt": c.corrupt,
                "reconnects": c.reconnects,
            }
        payload = {
            "ts": utc_iso(time.time()),
            **fig,
            "frames": sum(self.scored.values()),
            "dropped": sum(v["dropped"] for v in cams.values()),
            "corrupt": sum(v["corrupt"] for v in cams.values()),
            "queue_depth": self.hub.depth(),
            "backend": runner.backend,
            "model_id": runner.model_id,
            "mqtt_lost": getattr(pub, "lost", 0),
            "cameras": cams,
        }
        pub.publish(self.topics.stats, dumps(payload))
        self.last_stats = payload

    # -- stop ----------------------------------------------------------------------------------------------
    def _shutdown(self, runner: Runner, pub: MqttPublisher) -> int:
        for r in self.readers:
            r.join(timeout=6.0)
            if r.is_alive():
                log.warning("camera %s: reader did not stop within 6 s; abandoning it", r.cam.name)
        self._drain_status(pub)
        if self.readers:
            self._publish_stats(runner, pub)
            s = self.last_stats
            log.info("done: %d frames scored (%.1f frames/s), %d dropped, %d corrupt", s["frames"], s["fps_avg"],
                     s["dropped"], s["corrupt"])
        return pub.close(FLUSH_TIMEOUT_S)
