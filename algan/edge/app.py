"""The edge daemon's composition root: :class:`EdgeApp` starts and stops everything in order.

Start: model runner -> (embedded broker) -> MQTT connection -> initial camera states -> camera readers ->
metrics endpoint -> systemd ``READY=1``.
Loop: batch frames across cameras -> score -> publish score, alarm and state messages -> periodic stats (and
systemd ``STATUS=``); systemd ``WATCHDOG=1`` while frames flow; a SIGHUP (:meth:`EdgeApp.request_reload`) re-reads
the alarm thresholds from the config file between two batches.
Stop (sources exhausted, or the stop event set by SIGTERM/SIGINT): systemd ``STOPPING=1`` -> join readers (one
shared deadline) -> final stats -> retained ``offline`` -> wait until every message is written/acked -> disconnect
-> stop the embedded broker.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from algan.contract import BundleError, utc_iso
from algan.edge.alarm import AlarmEvent, AlarmTracker
from algan.edge.capture.batcher import Batcher, next_batch
from algan.edge.capture.camera import CameraReader
from algan.edge.capture.hub import Frame, FrameHub
from algan.edge.capture.journal import FolderJournal
from algan.edge.capture.sources import Source, open_source
from algan.edge.config import CameraConfig, EdgeConfig, load_config
from algan.edge.config.reload import plan_reload
from algan.edge.errors import ConfigError, SourceError
from algan.edge.logs import RepeatedErrors
from algan.edge.metrics import Metrics
from algan.edge.publish.broker import EmbeddedBroker, embedded_broker_refusal, wants_embedded_broker
from algan.edge.publish.discovery import discovery_messages
from algan.edge.publish.messages import (
    STATE_ALARM,
    STATE_NORMAL,
    STATE_OFFLINE,
    ScoreThrottle,
    Topics,
    alarm_payload,
    dumps,
    score_payload,
)
from algan.edge.publish.mqtt import MqttPublisher, Publisher
from algan.edge.publish.outbox import Outbox, OutboxError
from algan.edge.publish.snapshots import SnapshotStore, snapshot_name
from algan.edge.sdnotify import SystemdNotifier
from algan.edge.state import StateLock
from algan.edge.stats import StatsWindow, stats_payload, status_line
from algan.runtime.errors import EdgeError
from algan.runtime.inference import Prediction, interpret
from algan.runtime.maps import bundle_roi, draw_overlay, encode_jpeg
from algan.runtime.runners.base import Runner, load_runner
from algan.runtime.tiling import FrameTiling, bundle_tiling, untile

log = logging.getLogger(__name__)

#: Seconds allowed at shutdown for every outstanding message to be written/acknowledged.
FLUSH_TIMEOUT_S = 15.0
#: Consecutive failed inference batches after which the daemon gives up (exit 1).
MAX_INFERENCE_FAILURES = 10
#: Seconds all camera readers together get to stop at shutdown (then they are abandoned: daemon threads).
READER_JOIN_S = 5.0
#: Without a systemd watchdog: frames count as flowing when one was scored within this many seconds.
FLOWING_S = 30.0


class EdgeApp:
    """Runs the daemon for one config.

    Args:
        config: validated config (paths resolved, see :func:`algan.edge.config.load_config`).
        stop: event that ends the run when set (signal handlers set it); a new one by default.
        runner_factory: builds the runner (tests inject fakes).
        clock: monotonic clock (seconds).
        config_path: the YAML file re-read on :meth:`request_reload` (SIGHUP); ``None`` = reload disabled.
        notifier: systemd notifier (default: from the environment, a no-op outside systemd).
    """

    def __init__(
        self,
        config: EdgeConfig,
        stop: threading.Event | None = None,
        runner_factory: Callable[[EdgeConfig], Runner] | None = None,
        clock: Callable[[], float] = time.monotonic,
        config_path: str | Path | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.cfg = config
        self.stop = stop or threading.Event()
        self.runner_factory = runner_factory or (
            lambda cfg: load_runner(cfg.model, cfg.runner, trusted_keys=cfg.model_trusted_keys))
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
        self.systemd = notifier or SystemdNotifier()
        self.config_path = Path(config_path) if config_path is not None else None
        self._reload = threading.Event()
        self._reading: threading.Thread | None = None  # the thread re-reading the config file (SIGHUP)
        self._reread: queue.SimpleQueue[EdgeConfig | None] = queue.SimpleQueue()
        self.reloads = 0
        self.backend = ""
        self._batcher: Batcher[Frame] | None = None
        self._last_scored: float | None = None
        self.metrics = Metrics(config.metrics, config.device_id, self.stats_snapshot)
        snap = config.alarm.snapshots
        self.snapshots = None if snap is None else SnapshotStore(
            snap.dir, snap.max_count, None if snap.max_age_h is None else snap.max_age_h * 3600.0, snap.jpeg_quality)
        #: per camera: (snapshot name, region dict) of the open alarm's last raised/update event (a cleared event
        #: repeats them)
        self._episode: dict[str, tuple[str | None, dict | None]] = {}
        self._ended: set[str] = set()  # cameras whose source ended; their open alarm closes once their frames are in
        self._has_maps = False
        self._batch_buf: np.ndarray | None = None  # see _stack
        self._rois_of: EdgeConfig | None = None  # the config self._rois was made from
        self._rois: dict[str, tuple[int, int, int, int] | None] = {}
        #: the defect-mask level on the calibrated map scale (algan.runtime.runners.calibration.pixel_level)
        self._pixel_level = 1.0
        self._tiling: FrameTiling | None = None  # the model's tile grid (algan.json tiling), set at run()
        self._throttles = {cam.name: ScoreThrottle(config.mqtt.score_every_n, config.mqtt.score_min_delta)
                           for cam in config.cameras}
        self._journals: list[FolderJournal] = []  # watched folders' read journals (see _source_factory)
        self._outbox: Outbox | None = None  # also remembers open alarms (closed at the next start after a crash)
        self._io_errors = RepeatedErrors(log)

    # -- start ---------------------------------------------------------------------------------------------
    def run(self) -> int:
        """Run until the sources are exhausted or :attr:`stop` is set.

        Returns:
            Exit status: 0 on a clean run; 1 when every camera failed or messages could not be delivered.

        Raises:
            EdgeError: model, broker or start-up problems (one-line message).
        """
        lock = self._lock_state()
        try:
            return self._run()
        finally:
            lock.release()

    def _lock_state(self) -> StateLock:
        """Take the state directory (outbox, journals): a second daemon on it would send every alarm twice and
        close the other's open alarms.

        Raises:
            StateLockError: another daemon holds it (exit 2, naming its PID).
            EdgeError: the directory cannot be created.
        """
        try:
            return StateLock(self.cfg.state_dir)
        except OSError as e:
            raise EdgeError(f"cannot lock the state directory {self.cfg.state_dir} ({e.strerror or e}); make it "
                            "writable for the daemon's user or set mqtt.outbox.path") from None

    def _run(self) -> int:
        if self.snapshots is not None:
            self.snapshots.clean_temp()
        runner = self.runner_factory(self.cfg)
        h, w = runner.input_size
        log.info("model %s loaded: backend=%s input=%dx%d id=%s", self.cfg.model, runner.backend, w, h,
                 runner.model_id)
        self.backend = runner.backend
        self._has_maps = runner.has_maps
        if self._has_maps:
            from algan.runtime.runners.calibration import pixel_level

            self._pixel_level, source = pixel_level(Path(self.cfg.model))
            log.info("defect masks of alarm snapshots at map level %.4g (%s)", self._pixel_level, source)
        self._tiling = self._load_tiling()
        self._apply_bundle_roi()
        broker = self._start_broker()
        try:
            pub = self._connect(runner.model_id)
            try:
                self._close_open_alarms(pub)
                self._start_cameras(pub, runner.input_size)
                self.metrics.start()
                self.systemd.ready(f"running: {len(self.readers)} camera(s), backend {runner.backend}")
                self._loop(runner, pub)
            finally:
                self.systemd.stopping("stopping: flushing messages")
                self.stop.set()
                undelivered = self._shutdown(runner, pub)
        finally:
            for journal in self._journals:
                journal.close()
            self.metrics.stop()
            runner.close()
            if broker is not None:
                broker.stop()
        if undelivered:
            log.error("%d MQTT messages could not be delivered before exit; is the broker reachable?", undelivered)
            return 1
        if all(r.counters.status == "failed" for r in self.readers):
            log.error("no camera could be read; fix the camera sources in the config")
            return 1
        return 0

    def _load_tiling(self) -> FrameTiling | None:
        """The model bundle's tile grid (``algan.json`` ``tiling``), or ``None``; EdgeError for an unreadable
        manifest (a tiled model scored untiled would give wrong scores)."""
        try:
            tiling = bundle_tiling(self.cfg.model)
        except BundleError as e:
            raise EdgeError(str(e)) from None
        if tiling is not None:
            log.info("model tiles every frame's roi into %s (maps stitched, score = %s of the stitched map)",
                     tiling.spec, tiling.reduction)
        return tiling

    def _apply_bundle_roi(self) -> None:
        """Cameras without a ``roi`` take the bundle's (``algan.json`` ``roi``: training and serving see the same
        crop); a camera whose ``roi`` differs from the bundle's is warned about (its own is used)."""
        roi = bundle_roi(self.cfg.model)
        if roi is None:
            return
        cams = []
        for cam in self.cfg.cameras:
            if cam.roi is None:
                log.info("camera %s: roi %s from the model bundle", cam.name, list(roi))
                cam = cam.model_copy(update={"roi": roi})
            elif tuple(cam.roi) != roi:
                log.warning("camera %s: roi %s differs from the roi %s the model was trained with (algan.json); "
                            "scores may shift: remove the camera's roi or retrain with algan-train --roi",
                            cam.name, list(cam.roi), list(roi))
            cams.append(cam)
        self.cfg = self.cfg.model_copy(update={"cameras": cams})

    def _start_broker(self) -> EmbeddedBroker | None:
        m = self.cfg.mqtt
        if not wants_embedded_broker(m):
            why = embedded_broker_refusal(m) if m.embedded_broker == "auto" else None
            note = f" (embedded broker not allowed: {why})" if why else ""
            log.info("MQTT broker: external, %s:%d%s", m.host, m.port, note)
            return None
        log.info("no MQTT broker on %s:%d: starting the embedded one (mqtt.embedded_broker: auto)", m.host, m.port)
        broker = EmbeddedBroker(m.host, m.port)
        broker.start()
        return broker

    def _close_open_alarms(self, pub: Publisher) -> None:
        """Publish a ``cleared`` event (``reason: "restart"``, the raised event's other keys kept, ``ts`` now) for
        every alarm the outbox shows as raised and never cleared: an earlier run stopped while it was open (a crash,
        SIGKILL, power cut, or a stop during the alarm), so no subscriber would ever see it end."""
        outbox = self._outbox
        if outbox is None:
            return
        device = self.cfg.device_id
        for cam, raw in outbox.open_alarms(device).items():
            try:
                raised = json.loads(raw)
                if not isinstance(raised, dict):
                    raise ValueError("not an object")
            except ValueError:
                self._record_open_alarm(cam, None)
                continue
            now = time.time()
            try:
                t0 = datetime.fromisoformat(str(raised.get("ts"))).timestamp()
            except ValueError:
                t0 = now
            reason = "restart" if any(c.name == cam for c in self.cfg.cameras) else "camera_removed"
            cleared = {**raised, "state": "cleared", "ts": utc_iso(now), "duration_s": round(max(0.0, now - t0), 3),
                       "reason": reason}
            pub.publish(self.topics.alarm(cam), dumps(cleared), qos=self.cfg.mqtt.alarm_qos, durable=True)
            self._record_open_alarm(cam, None)
            log.warning("camera %s: alarm %s was still open when the daemon last stopped; published it as cleared "
                        "(reason: %s)", cam, raised.get("id"), reason)

    def _record_open_alarm(self, cam: str, payload: str | None) -> None:
        """Remember (``payload``: the raised event) or forget (``None``) ``cam``'s open alarm in the outbox file; a
        failed write is reported once, then as a count per minute (at worst an alarm is not closed after a crash)."""
        if self._outbox is None:
            return
        try:
            self._outbox.set_open_alarm(cam, payload, device=self.cfg.device_id)
        except OutboxError as e:
            self._io_errors.error("open-alarm", str(e))
        else:
            self._io_errors.ok("open-alarm")

    def _connect(self, model_id: str = "") -> MqttPublisher:
        m = self.cfg.mqtt
        path = self.cfg.outbox_path
        legacy = path.parent.parent / "outbox.sqlite"  # the default before it was per device
        if path.parent.name == self.cfg.device_id and path.name == "outbox.sqlite" and legacy.is_file():
            log.warning("%s (the outbox of an earlier version, or of another config) is no longer used: this "
                        "device's outbox is %s; if it still holds messages to deliver, set mqtt.outbox.path to it "
                        "for one run (algan-edge outbox list --config shows what is in the configured one)", legacy,
                        path)
        outbox = Outbox(path, m.outbox.max_events) if m.outbox.enabled else None
        self._outbox = outbox
        if outbox is not None and len(outbox):
            log.info("MQTT outbox %s holds %d undelivered messages from before; they go out first", outbox.path,
                     len(outbox))
        ha = m.homeassistant
        birth = discovery_messages(self.topics, [c.name for c in self.cfg.cameras], ha.discovery_prefix,
                                   ha.device_name, model_id=model_id) if ha.enabled else []
        pub = MqttPublisher(m, m.client_id or f"algan-edge-{self.cfg.device_id}", self.topics.status, outbox, birth)
        pub.connect(m.connect_timeout_s)
        return pub

    def _start_cameras(self, pub: Publisher, size: tuple[int, int]) -> None:
        for cam in self.cfg.cameras:
            self.trackers[cam.name] = AlarmTracker(cam.name, policy=self.cfg.alarm_policy(cam))
            self._set_state(pub, cam.name, STATE_NORMAL)
        for cam in self.cfg.cameras:
            tiled = self._tiling is not None
            reader = CameraReader(cam, size, self.hub, self.stop, self._on_camera_status, self._source_factory(cam),
                                  keep_raw=self.snapshots is not None or self._has_maps or tiled,
                                  tiling=self._tiling.spec if self._tiling is not None else None)
            self.readers.append(reader)
            reader.start()

    def _source_factory(self, cam: CameraConfig) -> Callable[[CameraConfig], Source]:
        """``open_source``, with the camera's read journal for a watched folder with ``resume`` (owned and closed
        by the app). A journal that cannot be opened is logged and the camera runs without one."""
        path = self.cfg.journal_path(cam)
        if path is None:
            return open_source
        try:
            journal = FolderJournal(path)
        except SourceError as e:
            log.error("camera %s: %s; it runs without a journal: files still in the folder are read again after a "
                      "restart", cam.name, e)
            return open_source
        self._journals.append(journal)
        return functools.partial(open_source, journal=journal)

    def _on_camera_status(self, camera: str, status: str) -> None:
        """Called from reader threads; the main loop publishes (single writer of camera state)."""
        self._status_events.put((camera, status))

    def _set_state(self, pub: Publisher, camera: str, state: str) -> None:
        if self._states.get(camera) != state:
            self._states[camera] = state
            pub.publish(self.topics.state(camera), state, qos=self.cfg.mqtt.alarm_qos, retain=True, durable=True)

    def _drain_status(self, pub: Publisher) -> None:
        while True:
            try:
                camera, status = self._status_events.get_nowait()
            except queue.Empty:
                return
            if status == "finished":
                self._ended.add(camera)
            elif status in ("offline", "failed"):
                self._set_state(pub, camera, STATE_OFFLINE)
            elif status == "online":
                self._set_state(pub, camera, STATE_ALARM if self.trackers[camera].alarmed else STATE_NORMAL)

    # -- reload (SIGHUP) -----------------------------------------------------------------------------------
    def request_reload(self) -> None:
        """Ask the loop to re-read the alarm thresholds from :attr:`config_path` (safe from a signal handler)."""
        self._reload.set()

    def _apply_reload(self) -> bool:
        """Re-read the config file and apply the alarm section and per-camera thresholds to the running trackers.

        Other changes (cameras, model, MQTT...) need a restart; they are logged and ignored. A config that does
        not load is logged as one line and the old settings stay.

        Returns:
            True when new thresholds were applied.
        """
        self._reload.clear()
        return self._apply_loaded(self._read_config())

    def _read_config(self) -> EdgeConfig | None:
        """Re-read :attr:`config_path` (any thread); ``None`` (logged) when it does not load."""
        if self.config_path is None:
            log.warning("SIGHUP ignored: the daemon was not started from a config file")
            return None
        try:
            return load_config(self.config_path)
        except ConfigError as e:
            log.error("reload failed, keeping the current settings: %s", e)
            return None

    def _poll_reload(self) -> None:
        """Between two batches: start re-reading the config file in a thread when a SIGHUP asked for it, and apply
        a finished one. The loop never waits for the file (a slow disk or a huge file cannot stop scoring or starve
        the systemd watchdog)."""
        if self._reload.is_set() and self._reading is None:
            self._reload.clear()
            self._reading = threading.Thread(target=lambda: self._reread.put(self._read_config()),
                                             name="config-reload", daemon=True)
            self._reading.start()
        if self._reading is not None:
            try:
                new = self._reread.get_nowait()
            except queue.Empty:
                return
            self._reading = None
            self._apply_loaded(new)

    def _apply_loaded(self, new: EdgeConfig | None) -> bool:
        """Apply the alarm section and thresholds of a re-read config (``None``: it did not load, nothing changes)."""
        if new is None:
            return False
        plan = plan_reload(self.cfg, new)
        if plan.cameras_changed:
            log.warning("reload: cameras were added, removed or renamed; that needs a restart (ignored)")
        if plan.ignored:
            log.warning("reload: changes to %s need a restart (ignored)", ", ".join(plan.ignored))
        if plan.camera_settings:
            log.warning("reload: changes to the camera settings %s need a restart (ignored)",
                        ", ".join(plan.camera_settings))
        if plan.error is not None or plan.config is None:
            log.error("reload failed, keeping the current settings: %s", plan.error)
            return False
        for name, policy in plan.policies.items():
            self.trackers[name].reconfigure(policy)
        self.thresholds.update(plan.thresholds)
        self.cfg = plan.config
        self.reloads += 1
        log.info("reloaded alarm settings from %s: %s", self.config_path,
                 ", ".join(f"{n} {t:g}/{c:g}" for n, (t, c) in self.thresholds.items()))
        return True

    # -- loop ----------------------------------------------------------------------------------------------
    def _frames_flowing(self, now: float) -> bool:
        """Whether the watchdog may be fed: a frame was scored recently, or no live camera is online (all are
        reconnecting, finished, or watched folders waiting for files: nothing is stuck)."""
        window = 2 * self.systemd.watchdog_interval if self.systemd.watchdog_interval else FLOWING_S
        if self._last_scored is not None and now - self._last_scored <= window:
            return True
        return not any(r.cam.is_live and r.counters.status == "online" for r in self.readers)

    def _loop(self, runner: Runner, pub: Publisher) -> None:
        batcher: Batcher[Frame] = Batcher(self.cfg.batch.max_size, self.cfg.batch.max_wait_ms / 1000.0)
        self._batcher = batcher
        self.window = StatsWindow(self.clock())  # restart: model load and connect are not throughput
        self._last_scored = self.clock()  # grace period for the first frames
        while True:
            if self._frames_flowing(self.clock()):
                self.systemd.watchdog()
            self._poll_reload()
            self._drain_status(pub)
            batch = next_batch(self.hub, batcher, self.stop, self.clock)
            if batch is None:
                break
            if batch:
                self._drain_status(pub)  # a camera's "online" state goes out before its first scores
                self._process(batch, runner, pub)
            self._close_ended(pub)
            if self.window.due(self.clock(), self.cfg.stats_interval_s):
                self._publish_stats(runner, pub)
        self._drain_status(pub)

    def _stack(self, batch: list[Frame]) -> np.ndarray:
        """The batch's images as one uint8 ``(N, H, W, 3)`` array, written into a buffer reused from batch to batch
        (the runner has returned before the next batch is stacked)."""
        first = batch[0].image
        shape = (len(batch), *first.shape)
        if self._batch_buf is None or self._batch_buf.shape[0] < shape[0] or self._batch_buf.shape[1:] != shape[1:]:
            self._batch_buf = np.empty((max(shape[0], self.cfg.batch.max_size), *first.shape), first.dtype)
        return np.stack([f.image for f in batch], out=self._batch_buf[: shape[0]])

    def _process(self, batch: list[Frame], runner: Runner, pub: Publisher) -> None:
        t0 = self.clock()
        try:
            if self._tiling is None:
                out = runner.run(self._stack(batch))
                scores, maps = out.scores, out.maps
            else:  # every frame's tiles in one run; maps stitched per frame, scores from the stitched maps
                tiles = runner.run(np.concatenate([f.image for f in batch]))
                t = self._tiling
                frames = untile(tiles.scores, tiles.maps, [f.roi_hw or f.image.shape[1:3] for f in batch], t.spec,
                                t.reduction, t.topk)
                scores, maps = frames.scores, frames.maps
        except (RuntimeError, ValueError) as e:
            self._failures += 1
            log.error("inference failed on a batch of %d frames (%d in a row): %s", len(batch), self._failures, e)
            if self._failures >= MAX_INFERENCE_FAILURES:
                raise EdgeError(f"inference failed {self._failures} times in a row; last error: {e}") from None
            return
        self._failures = 0
        self.metrics.observe_batch(self.clock() - t0)
        self.window.record_batch(len(batch), (self.clock() - t0) * 1000.0)
        cells_of = maps if maps is not None else [None] * len(batch)
        # the batch's score messages are handed to the publisher together after the batch (before an alarm event
        # that follows them): the MQTT network thread wakes once for them instead of once per frame in between the
        # loop's own work; a frame's done() follows its score
        outgoing: list[tuple[str, str]] = []
        finished: list[Callable[[], None]] = []
        for frame, score, cells in zip(batch, scores.tolist(), cells_of, strict=True):
            cam = frame.camera
            threshold = self.thresholds[cam][0]
            now = self.clock()
            latency_ms = (now - frame.t_mono) * 1000.0
            if self._throttles[cam].keep(score, threshold):
                payload = score_payload(frame.t_wall, frame.index, score, threshold, latency_ms, runner.model_id,
                                        frame.source_name)
                outgoing.append((self.topics.score(cam), payload))
            self.scored[cam] += 1
            self.window.record(latency_ms, now)
            self.metrics.observe_frame(latency_ms / 1000.0)
            self._last_scored = now
            event = self.trackers[cam].update(frame.index, score, frame.t_wall)
            if event is not None:
                self._publish_scores(pub, outgoing, finished)
                self._emit(pub, self._describe(frame, event, score, cells, threshold, pub))
            if frame.done is not None:
                finished.append(frame.done)  # a watched folder's journal: this file is not scored again after a restart
        self._publish_scores(pub, outgoing, finished)

    def _publish_scores(self, pub: Publisher, outgoing: list[tuple[str, str]],
                        finished: list[Callable[[], None]]) -> None:
        """Hand the pending score messages to the publisher in frame order, then call the ``done`` of their frames
        (both lists are emptied)."""
        qos = self.cfg.mqtt.score_qos
        for topic, payload in outgoing:
            pub.publish(topic, payload, qos=qos)
        for done in finished:
            done()
        outgoing.clear()
        finished.clear()

    def _emit(self, pub: Publisher, event: AlarmEvent) -> None:
        """Publish an alarm event and the camera's state; the outbox remembers the open alarm first (after a crash
        the next start closes it)."""
        cam = event.camera
        text = alarm_payload(event)
        self._record_open_alarm(cam, text if event.state != "cleared" else None)
        pub.publish(self.topics.alarm(cam), text, qos=self.cfg.mqtt.alarm_qos, durable=True)
        self._set_state(pub, cam, STATE_NORMAL if event.state == "cleared" else STATE_ALARM)
        why = f" reason={event.reason}" if event.reason else ""
        log.warning("camera %s: alarm %s at frame %d (score %.3f, peak %.3f, frames %d-%d) id=%s%s", cam,
                    event.state, event.last_frame, event.score, event.peak, event.first_frame, event.last_frame,
                    event.id, why)

    def _describe(self, frame: Frame, event: AlarmEvent, score: float, cells: np.ndarray | None, threshold: float,
                  pub: Publisher) -> AlarmEvent:
        """Fill in the event's frame: for ``raised`` and ``update`` the :class:`~algan.runtime.inference.Prediction`
        of this frame's runner output (:func:`~algan.runtime.inference.interpret`, as algan-predict makes it: score,
        region of its map for models with maps), its snapshot (the full frame, heat map over the ROI, region
        outlined; one file per event) and its file name; a ``cleared`` event repeats the snapshot and region of the
        episode's last raised/update event."""
        cam = frame.camera
        if event.state == "cleared":
            snapshot, region_dict = self._episode.pop(cam, (None, None))
            return replace(event, snapshot=snapshot, region=region_dict, file=frame.source_name)
        # the full frame with the camera's ROI when the reader handed it over, else the model input itself
        image, roi = (frame.raw, self._camera_roi(cam)) if frame.raw is not None else (frame.image, None)
        pred = interpret(image.shape, score, cells, roi, threshold, self._pixel_level)
        written = False
        suffix = "" if event.state == "raised" else f"-u{frame.index}"
        name = snapshot_name(cam, event.ts, f"{event.id}{suffix}")
        if self.snapshots is not None:
            written = self._write_snapshot(pub, cam, name, image, pred, float(event.score))
        region_dict = pred.region.to_dict() if pred.region is not None else None
        snapshot = name if written else None
        self._episode[cam] = (snapshot, region_dict)
        return replace(event, snapshot=snapshot, region=region_dict, file=frame.source_name)

    def _close_alarm(self, pub: Publisher, cam: str, reason: str) -> None:
        """Close ``cam``'s open alarm (if any) with a ``cleared`` event carrying ``reason``."""
        tracker = self.trackers.get(cam)
        event = tracker.close(reason, time.time()) if tracker is not None else None
        if event is not None:
            snapshot, region = self._episode.pop(cam, (None, None))
            self._emit(pub, replace(event, snapshot=snapshot, region=region))

    def _close_ended(self, pub: Publisher) -> None:
        """Cameras whose source ended and whose last frames are scored: close an open alarm (``source_ended``) and
        publish the state ``offline``."""
        if not self._ended or (self._batcher is not None and len(self._batcher)):
            return
        depths = self.hub.depths()
        for cam in sorted(self._ended):
            if depths.get(cam, 0) == 0:
                self._ended.discard(cam)
                self._close_alarm(pub, cam, "source_ended")
                self._set_state(pub, cam, STATE_OFFLINE)

    def _camera_roi(self, cam: str) -> tuple[int, int, int, int] | None:
        """The camera's ROI in full-frame pixels (config, or the bundle's), ``None`` for the whole frame."""
        if self._rois_of is not self.cfg:
            self._rois = {c.name: tuple(c.roi) if c.roi is not None else None  # type: ignore[misc]
                          for c in self.cfg.cameras}
            self._rois_of = self.cfg
        return self._rois.get(cam)

    def _write_snapshot(self, pub: Publisher, cam: str, name: str, image: np.ndarray, pred: Prediction,
                        peak: float) -> bool:
        """Write the snapshot JPEG (and publish the same bytes on ``<camera>/snapshot`` when configured; re-encoded
        only when they exceed the MQTT size cap); True when written."""
        if self.snapshots is None:
            return False
        overlay = draw_overlay(image, pred.map_cells, pred.roi, pred.region, peak, pred.threshold, mask=pred.mask)
        cfg = self.cfg.alarm.snapshots
        assert cfg is not None
        try:
            data = encode_jpeg(overlay, cfg.jpeg_quality)
        except ValueError as e:
            log.error("camera %s: alarm snapshot not written: %s", cam, e)
            return False
        written = self.snapshots.save_jpeg(name, data) is not None
        if cfg.mqtt:
            cap = cfg.mqtt_max_kb * 1024
            try:
                small = data if len(data) <= cap else encode_jpeg(overlay, cfg.jpeg_quality, cap)
            except ValueError as e:
                log.error("camera %s: alarm snapshot not published: %s", cam, e)
            else:
                pub.publish(self.topics.snapshot(cam), small, qos=1, retain=True)
        return written

    def _camera_stats(self) -> dict[str, dict[str, Any]]:
        """Per-camera counters right now (read without locks: each is written by one thread)."""
        now = self.clock()
        cams = {}
        depths = self.hub.depths()
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
                "skipped": c.skipped,
                "backpressure": self.hub.waits.get(name, 0),
                "queue_depth": depths.get(name, 0),
                "reconnects": c.reconnects,
                "stale": c.stale,
                "frame_age_s": round(now - c.last_frame, 3) if c.last_frame is not None else None,
            }
        return cams

    def stats_snapshot(self) -> dict[str, Any]:
        """The latest stats message with live camera counters (for the metrics endpoint; any thread)."""
        return {**self.last_stats, "cameras": self._camera_stats(), "queue_depth": self.hub.depth()}

    def _publish_stats(self, runner: Runner, pub: Publisher) -> None:
        b = self._batcher
        outbox = pub.outbox
        payload = stats_payload(
            utc_iso(time.time()), self.window.report(self.clock()), self._camera_stats(),
            frames=sum(self.scored.values()), queue_depth=self.hub.depth(),
            batches=(b.full_batches, b.partial_batches) if b is not None else (0, 0),
            backend=runner.backend, model_id=runner.model_id, mqtt_lost=pub.lost,
            outbox=(len(outbox), outbox.dropped) if outbox is not None else None)
        pub.publish(self.topics.stats, dumps(payload))
        self.last_stats = payload
        self.systemd.status(status_line(payload))
        log.debug("stats: %s", payload)

    # -- stop ----------------------------------------------------------------------------------------------
    def _shutdown(self, runner: Runner, pub: Publisher) -> int:
        deadline = time.monotonic() + READER_JOIN_S
        for r in self.readers:
            r.join(timeout=max(0.0, deadline - time.monotonic()))
            if r.is_alive():
                log.warning("camera %s: reader did not stop within %g s; abandoning it", r.cam.name, READER_JOIN_S)
        self._drain_status(pub)
        self._close_ended(pub)
        # a clean stop leaves no alarm open and no camera "normal" or "alarm": cleared (shutdown), then offline
        for cam in self.trackers:
            self._close_alarm(pub, cam, "shutdown")
            self._set_state(pub, cam, STATE_OFFLINE)
        if self.readers:
            self._publish_stats(runner, pub)
            s = self.last_stats
            log.info("done: %d frames scored (%.1f frames/s), %d dropped, %d corrupt", s["frames"], s["fps_avg"],
                     s["dropped"], s["corrupt"])
        return pub.close(FLUSH_TIMEOUT_S)
