"""Edge daemon configuration: pydantic v2 models (one per section) and :func:`load_config`.

The YAML file maps onto :class:`EdgeConfig`. Every model forbids unknown keys, every field carries a description
with its unit, and :func:`load_config` turns any problem (missing file, YAML syntax, schema) into a
:class:`~algan.edge.errors.ConfigError` whose text is ONE line naming the file, line and field path
(e.g. ``edge.yaml:14: cameras.0.source: ...``) and how to fix it.

Validators check data only; nothing here opens cameras, models or sockets (that happens in
:class:`algan.edge.app.EdgeApp`). Relative paths (``model``, file/folder camera sources, ``mqtt.password_file``)
are resolved against the directory of the config file, so the daemon behaves the same whatever its working
directory (systemd starts it in ``/``).
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from algan.edge.alarm import AlarmPolicy
from algan.edge.errors import ConfigError
from algan.edge.logs import redact, register_secret

#: Names used inside MQTT topics (device id, camera names): no ``/``, ``+``, ``#``, spaces or control characters.
TOPIC_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Topic prefix: one or more topic-safe levels separated by ``/``.
TOPIC_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")
#: Keys whose values are never echoed in error messages (a password given as a number, say).
SECRET_KEY_RE = re.compile(r"password|passwd|secret|token", re.IGNORECASE)
#: ``${NAME}``, ``${NAME:-default}`` and ``${file:PATH}`` in string values (``$${`` = a literal ``${``).
SUBST_RE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: URL schemes OpenCV/FFmpeg opens as live network streams.
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")

SourceKind = Literal["file", "device", "stream", "folder", "gstreamer"]
#: Source kinds read live (a camera): newest frame only, never "finished", stale watchdog applies.
LIVE_KINDS = ("device", "stream", "gstreamer")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _topic_name(value: str, what: str) -> str:
    if not TOPIC_NAME_RE.match(value):
        msg = (
            f"{what} {value!r} is not topic-safe; use 1-64 characters from A-Z a-z 0-9 _ . - "
            "starting with a letter or digit (no spaces, '/', '+' or '#')"
        )
        raise ValueError(msg)
    return value


#: Short names of ONNX Runtime execution providers accepted in ``runner.providers`` and their ORT names.
ORT_PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class TritonConfig(_Section):
    """``runner.backend: triton``: the Triton Inference Server that serves the model (gRPC)."""

    url: str = Field("localhost:8001", min_length=1, description="gRPC host:port of the Triton server")
    model: str | None = Field(
        None, description="Triton model name; default: the one algan-export --triton-repo recorded in the bundle"
    )
    version: str = Field("", description="Triton model version; empty = the server's version policy (latest)")
    timeout_s: float = Field(10.0, gt=0, le=600, description="deadline of one inference request (seconds)")


class RunnerConfig(_Section):
    """Inference backend settings."""

    backend: Literal["auto", "onnxruntime", "tensorrt", "torch", "triton"] = Field(
        "auto",
        description="inference backend: 'auto' (a .engine model -> tensorrt, else onnxruntime), 'onnxruntime', "
        "'tensorrt' (serialized engine via pycuda, NVIDIA GPU), 'torch' (bundle on a CUDA GPU in FP16) or 'triton' "
        "(a Triton Inference Server, runner.triton)",
    )
    providers: list[Literal["tensorrt", "cuda", "cpu"]] = Field(
        default_factory=lambda: ["cpu"],
        min_length=1,
        description="ONNX Runtime execution providers in order of preference (tensorrt, cuda, cpu); unavailable "
        "ones are skipped with a warning and cpu is always the last fallback",
    )
    threads: int = Field(
        0, ge=0, le=256, description="ONNX Runtime intra-op threads (count); 0 = ONNX Runtime default (all cores)"
    )
    device: int = Field(
        0, ge=0, le=64, description="CUDA device index for the tensorrt/torch backends and the GPU providers"
    )
    fp16: bool = Field(
        True, description="half precision where the backend chooses it (torch backend, ORT TensorRT provider)"
    )

    triton: TritonConfig = Field(default_factory=TritonConfig, description="Triton server (backend triton)")

    @field_validator("providers")
    @classmethod
    def _unique_providers(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"providers {v} lists one twice; give each of tensorrt, cuda, cpu at most once")
        return v


class BatchConfig(_Section):
    """Cross-camera batching: a batch is run when it is full or when the oldest frame has waited long enough."""

    max_size: int = Field(8, ge=1, le=256, description="largest batch sent to the model (frames)")
    max_wait_ms: float = Field(
        20.0, ge=0, le=10_000, description="longest time the first frame of a batch waits for more (milliseconds)"
    )


class MqttTlsConfig(_Section):
    """TLS towards the broker (mosquitto ``listener 8883`` with ``cafile``/``certfile``/``keyfile``)."""

    ca_file: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the broker certificate; omit = the system CA store"
    )
    cert_file: Path | None = Field(None, description="PEM client certificate (with key_file), for brokers that "
                                   "require client certificates (require_certificate true)")
    key_file: Path | None = Field(None, description="PEM private key of cert_file (unencrypted)")
    insecure: bool = Field(
        False,
        description="skip the check that the broker certificate names mqtt.host (the chain is still verified); "
        "only for test setups and IP-addressed brokers without a matching certificate",
    )

    @model_validator(mode="after")
    def _cert_and_key(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mqtt.tls.cert_file and mqtt.tls.key_file go together; set both or neither")
        return self


class OutboxConfig(_Section):
    """On-disk queue (SQLite) of alarm events and camera states not yet acknowledged by the broker."""

    enabled: bool = Field(
        True, description="keep alarm events and camera states on disk until the broker acknowledged them"
    )
    path: Path = Field(
        Path("outbox.sqlite"),
        description="SQLite file; a relative path is looked up in $STATE_DIRECTORY (systemd StateDirectory=) if "
        "set, else next to the config file",
    )
    max_events: int = Field(
        10_000, ge=10, le=10_000_000,
        description="most undelivered messages kept (messages); when full the oldest is dropped with a warning",
    )


class HomeAssistantConfig(_Section):
    """Home Assistant MQTT discovery: a binary_sensor (alarm) and a sensor (score) per camera."""

    enabled: bool = Field(False, description="publish retained discovery configs on every broker connection")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant discovery topic prefix")
    device_name: str | None = Field(
        None, description="device name shown in Home Assistant; default 'algan <device_id>'"
    )

    @field_validator("discovery_prefix")
    @classmethod
    def _prefix_topic_safe(cls, v: str) -> str:
        if not TOPIC_PREFIX_RE.match(v):
            raise ValueError(f"discovery_prefix {v!r} is not a valid topic prefix; use e.g. 'homeassistant'")
        return v


class MqttConfig(_Section):
    """MQTT broker connection and topic prefix."""

    host: str = Field("127.0.0.1", min_length=1, description="broker host name or IP address")
    port: int = Field(1883, ge=1, le=65535, description="broker TCP port (usually 1883, or 8883 with TLS)")
    prefix: str = Field("algan", description="first topic level(s), e.g. 'algan' or 'plant1/algan'")
    client_id: str | None = Field(None, description="MQTT client id; default 'algan-edge-<device_id>'")
    username: str | None = Field(None, description="broker user name; omit for anonymous access")
    password: str | None = Field(None, description="broker password (prefer password_file)")
    password_file: Path | None = Field(
        None,
        description="file holding the broker password (first line); relative paths are looked up in "
        "$CREDENTIALS_DIRECTORY (systemd LoadCredential=) if set, else next to the config file",
    )
    tls: MqttTlsConfig | None = Field(None, description="TLS settings; omit for plain TCP")
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval (seconds)")
    connect_timeout_s: float = Field(
        10.0, ge=0, le=300,
        description="how long start-up waits for the first broker connection (seconds); an unreachable broker is "
        "then an error, a refusing one is retried; 0 = do not wait: run and keep retrying (alarms wait in the outbox)",
    )
    reconnect_min_s: int = Field(1, ge=1, le=3600, description="first wait before reconnecting (seconds)")
    reconnect_max_s: int = Field(
        30, ge=1, le=3600, description="longest wait between reconnect attempts; waits double up to it (seconds)"
    )
    max_queued_messages: int = Field(
        10_000, ge=1, description="messages kept in memory by the MQTT client while the broker is unreachable "
        "(messages); alarm events and states are kept on disk in the outbox instead"
    )
    score_qos: Literal[0, 1, 2] = Field(0, description="QoS of score messages (0 = at most once, cheapest)")
    score_every_n: int = Field(
        1, ge=1, le=100_000, description="publish the score of every Nth frame per camera (frames; 1 = every frame); "
        "a frame whose decision (score >= threshold) changes is always published"
    )
    score_min_delta: float | None = Field(
        None, ge=0, description="publish a score only when it changed by more than this since the last published one "
        "(score units); null = on any change"
    )
    alarm_qos: Literal[1, 2] = Field(1, description="QoS of alarm events and state (1 or 2; alarms are never QoS 0)")
    outbox: OutboxConfig = Field(default_factory=OutboxConfig, description="on-disk queue of undelivered alarms")
    homeassistant: HomeAssistantConfig = Field(
        default_factory=HomeAssistantConfig, description="optional Home Assistant MQTT discovery"
    )
    embedded_broker: Literal["auto", "never"] = Field(
        "auto",
        description="'auto': when host is loopback and nothing listens on host:port, start a built-in broker; "
        "'never': always use an external broker",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix_topic_safe(cls, v: str) -> str:
        if not TOPIC_PREFIX_RE.match(v):
            msg = f"prefix {v!r} is not a valid topic prefix; use levels like 'algan' or 'plant1/algan' (no '+', '#')"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _one_password(self) -> MqttConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set either mqtt.password or mqtt.password_file, not both")
        if (self.password is not None or self.password_file is not None) and self.username is None:
            raise ValueError("a broker password needs mqtt.username; add it or remove the password")
        if self.reconnect_max_s < self.reconnect_min_s:
            msg = (f"mqtt.reconnect_max_s ({self.reconnect_max_s}) must be >= mqtt.reconnect_min_s "
                   f"({self.reconnect_min_s}); raise it")
            raise ValueError(msg)
        return self


class SnapshotConfig(_Section):
    """JPEG of the peak frame of each alarm: the full camera frame, with the anomaly heat map blended over the ROI
    and the anomalous region outlined (models with anomaly maps)."""

    dir: Path = Field(description="directory of the snapshots; a relative path is resolved next to the config file")
    max_count: int = Field(1000, ge=1, le=1_000_000, description="most snapshots kept; older ones are deleted (files)")
    max_age_h: float | None = Field(
        168.0, gt=0, le=87_600, description="snapshots older than this are deleted (hours); null = no age limit"
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality (1-100)")
    mqtt: bool = Field(
        False, description="also publish the JPEG bytes on the retained topic <prefix>/<device>/<camera>/snapshot"
    )
    mqtt_max_kb: int = Field(
        256, ge=8, le=65_536, description="size cap of the MQTT snapshot (KiB); a larger JPEG is scaled down to fit"
    )


class AlarmOverride(_Section):
    """Per-camera alarm settings; each one given replaces the global ``alarm`` value for that camera."""

    threshold: float | None = Field(None, gt=0, description="score at or above which a frame is anomalous (score)")
    clear_threshold: float | None = Field(
        None, gt=0, description="score below which a frame is normal again (score); default scales with threshold"
    )
    raise_frames: int | None = Field(None, ge=1, le=1000, description="anomalous frames that raise (frames)")
    raise_window: int | None = Field(None, ge=1, le=1000, description="frames looked at for raise_frames (frames)")
    clear_frames: int | None = Field(None, ge=1, le=100_000, description="normal frames that clear (frames)")
    clear_window: int | None = Field(None, ge=1, le=100_000, description="frames looked at for clear_frames (frames)")
    min_duration_s: float | None = Field(None, ge=0, le=86_400, description="shortest alarm (seconds)")
    cooldown_s: float | None = Field(
        None, ge=0, le=86_400, description="no new alarm this long after a clear (seconds)"
    )


class AlarmConfig(_Section):
    """Alarm debouncing and hysteresis on calibrated scores (1.0 = calibrated alarm threshold).

    A frame is anomalous at ``score >= threshold`` and normal at ``score < clear_threshold``. An alarm is raised
    when ``raise_frames`` of the last ``raise_window`` frames are anomalous (default window = raise_frames, i.e.
    consecutive) and cleared when ``clear_frames`` of the last ``clear_window`` frames are normal, but not before
    ``min_duration_s``; after a clear no alarm is raised for ``cooldown_s``.
    """

    threshold: float = Field(1.0, gt=0, description="score at or above which a frame counts as anomalous (score)")
    clear_threshold: float = Field(
        0.9, gt=0, description="score below which a frame counts as normal again while alarmed (score, <= threshold)"
    )
    raise_frames: int = Field(
        3, ge=1, le=1000, description="anomalous frames within raise_window that raise an alarm (frames)"
    )
    raise_window: int | None = Field(
        None, ge=1, le=1000,
        description="frames looked at for raise_frames (frames, >= raise_frames); default raise_frames = consecutive",
    )
    clear_frames: int = Field(5, ge=1, le=100_000, description="normal frames within clear_window that clear (frames)")
    clear_window: int | None = Field(
        None, ge=1, le=100_000,
        description="frames looked at for clear_frames (frames, >= clear_frames); default clear_frames = consecutive",
    )
    min_duration_s: float = Field(
        0.0, ge=0, le=86_400, description="an alarm stays raised at least this long (seconds)"
    )
    cooldown_s: float = Field(
        0.0, ge=0, le=86_400, description="after a clear, no new alarm is raised for this long (seconds)"
    )
    snapshots: SnapshotConfig | None = Field(None, description="JPEG of each alarm's peak frame; omit = none")
    cameras: dict[str, AlarmOverride] = Field(
        default_factory=dict, description="per-camera overrides by camera name, e.g. {cam1: {raise_frames: 5}}"
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> AlarmConfig:
        if self.clear_threshold > self.threshold:
            msg = (
                f"alarm.clear_threshold ({self.clear_threshold}) must be <= alarm.threshold ({self.threshold}); "
                "lower it (hysteresis)"
            )
            raise ValueError(msg)
        for key, n, m in (("raise", self.raise_frames, self.raise_window),
                          ("clear", self.clear_frames, self.clear_window)):
            if m is not None and m < n:
                raise ValueError(f"alarm.{key}_window ({m}) must be >= alarm.{key}_frames ({n}); raise it")
        return self


_Offset = Annotated[int, Field(ge=0)]
_Extent = Annotated[int, Field(gt=0)]
Roi = Annotated[
    tuple[_Offset, _Offset, _Extent, _Extent],
    Field(description="region of interest [x, y, width, height] (pixels)"),
]


class CameraConfig(_Section):
    """One camera (or recording, or folder of images)."""

    name: str = Field(description="camera name, unique on this device, used as a topic level")
    source: int | str = Field(
        description="video file path, device index (0) or /dev/videoN, rtsp/http URL, folder of images, or a "
        "GStreamer pipeline ending in appsink (kind gstreamer)"
    )
    kind: Literal["auto", "file", "device", "stream", "folder", "gstreamer"] = Field(
        "auto",
        description="source kind; 'auto': integer or /dev path = device, URL = stream, text with ' ! ' = gstreamer "
        "pipeline, else file/folder",
    )
    roi: Roi | None = Field(None, description="crop [x, y, width, height] before resizing (pixels); omit = full frame")
    threshold: float | None = Field(None, gt=0, description="per-camera alarm threshold overriding alarm.threshold")
    clear_threshold: float | None = Field(
        None, gt=0, description="per-camera clear threshold; default scales alarm.clear_threshold with threshold"
    )
    queue_size: int | None = Field(
        None, ge=1, le=1024, description="frames buffered per camera; default 1 for live sources, 16 for files"
    )
    fps: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="target frames/s passed on to the model (frames/s); extra frames are skipped (counted), for "
        "files by source time so a replay scores the same frames; omit = every frame",
    )
    realtime: bool = Field(
        False, description="file/folder replay paced at the video's own frame rate (like a camera); default: as fast "
        "as the model goes"
    )
    replay_fps: float | None = Field(
        None, gt=0, le=1000, description="file/folder replay paced at this rate (frames/s); implies realtime"
    )
    loop: bool = Field(False, description="file/folder: start again at the end instead of finishing (soak tests)")
    watch: bool = Field(
        False, description="folder: keep running and read new image files as they arrive (in name order)"
    )
    settle_s: float = Field(
        0.5,
        ge=0,
        le=600,
        description="folder watch: a new file is read once its size and mtime stayed unchanged this long (seconds); "
        "names starting with '.' or ending in .tmp/.part/.partial/.crdownload/~ are never read",
    )
    resume: bool = Field(
        True,
        description="folder watch: remember the files already scored (name, size, mtime) in a small SQLite journal, "
        "so that a restart goes on where it stopped instead of scoring every file still in the folder again; "
        "false = read them all again",
    )
    journal: Path | None = Field(
        None,
        description="folder watch with resume: the journal file; a relative path is looked up like mqtt.outbox.path; "
        "default: <camera name>.journal.sqlite beside the outbox",
    )
    stale_timeout_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="live source without a frame for this long is released and reopened (seconds)",
    )
    reconnect_interval_s: float = Field(
        5.0, gt=0, le=3600, description="first wait before reopening a live source that failed or died (seconds)"
    )
    reconnect_max_s: float = Field(
        60.0, gt=0, le=86_400, description="longest wait between reopen attempts; waits double up to it (seconds)"
    )
    rtsp_transport: Literal["tcp", "udp"] = Field(
        "tcp", description="stream: RTSP transport given to FFmpeg (tcp avoids smeared frames on lossy links)"
    )
    low_delay: bool = Field(True, description="stream: FFmpeg nobuffer/low_delay flags (less latency, fewer frames "
                            "buffered)")
    open_timeout_s: float = Field(10.0, gt=0, le=600, description="stream: FFmpeg open timeout (seconds)")
    read_timeout_s: float = Field(5.0, gt=0, le=600, description="stream: FFmpeg read timeout (seconds)")

    @field_validator("name")
    @classmethod
    def _name_topic_safe(cls, v: str) -> str:
        return _topic_name(v, "camera name")

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError(f"device index must be >= 0, got {v}")
        if isinstance(v, str) and not v.strip():
            raise ValueError("source is empty; give a file, folder, device index or URL")
        return v

    @model_validator(mode="after")
    def _kind_matches_source(self) -> CameraConfig:
        if self.kind in ("file", "folder", "stream", "gstreamer") and isinstance(self.source, int):
            raise ValueError(f"kind '{self.kind}' needs a path or URL as source, got the device index {self.source}")
        if self.threshold is not None and self.clear_threshold is not None and self.clear_threshold > self.threshold:
            msg = f"clear_threshold ({self.clear_threshold}) must be <= threshold ({self.threshold}); lower it"
            raise ValueError(msg)
        kind = self.resolved_kind
        replay = [k for k in ("realtime", "replay_fps", "loop", "watch") if getattr(self, k) not in (False, None)]
        if replay and kind not in ("file", "folder"):
            msg = f"{', '.join(replay)} only apply to file/folder sources, not to a {kind} source; remove it"
            raise ValueError(msg)
        if self.watch and self.kind == "file":
            raise ValueError("watch applies to folder sources; set kind: folder (or auto) or remove watch")
        if self.watch and self.loop:
            raise ValueError("a watched folder never ends, so loop has no meaning; remove one of watch/loop")
        if self.journal is not None and not self.watch:
            raise ValueError("journal applies to watched folders (watch: true); remove it or set watch: true")
        if self.reconnect_max_s < self.reconnect_interval_s:
            msg = (f"reconnect_max_s ({self.reconnect_max_s}) must be >= reconnect_interval_s "
                   f"({self.reconnect_interval_s}); raise it")
            raise ValueError(msg)
        return self

    @property
    def resolved_kind(self) -> SourceKind:
        """Source kind with 'auto' resolved without touching the file system ('file' stands for file or folder)."""
        if self.kind != "auto":
            return self.kind
        src = self.source
        if isinstance(src, int) or src.strip().isdigit() or src.startswith("/dev/video"):
            return "device"
        if src.lower().startswith(STREAM_SCHEMES):
            return "stream"
        if " ! " in src:
            return "gstreamer"
        return "file"

    @property
    def is_live(self) -> bool:
        """True for cameras, network streams and GStreamer pipelines (newest frame only, run until stopped), False
        for files/folders (never drop a frame)."""
        return self.resolved_kind in LIVE_KINDS

    @property
    def endless(self) -> bool:
        """True when the source never finishes by itself: live sources, watched folders and looped replays."""
        return self.is_live or self.watch or self.loop


class MetricsConfig(_Section):
    """Optional Prometheus endpoint (needs the prometheus-client package)."""

    port: int | None = Field(None, ge=1, le=65535, description="HTTP port of /metrics; omit = no endpoint")
    host: str = Field("127.0.0.1", min_length=1, description="bind address of the metrics endpoint")


class EdgeConfig(_Section):
    """The whole ``algan-edge run`` configuration."""

    device_id: str = Field(description="this device's id, used as a topic level (e.g. 'line1')")
    model: Path = Field(description="model bundle directory holding model.onnx, or a path to a .onnx file")
    runner: RunnerConfig = Field(default_factory=RunnerConfig, description="inference backend settings")
    batch: BatchConfig = Field(default_factory=BatchConfig, description="cross-camera batching")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT broker and topics")
    alarm: AlarmConfig = Field(default_factory=AlarmConfig, description="alarm debouncing and hysteresis")
    stats_interval_s: float = Field(5.0, gt=0, le=3600, description="period of the stats message (seconds)")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="optional Prometheus endpoint")
    cameras: list[CameraConfig] = Field(min_length=1, description="cameras to watch (at least one)")

    @field_validator("device_id")
    @classmethod
    def _device_topic_safe(cls, v: str) -> str:
        return _topic_name(v, "device_id")

    @model_validator(mode="after")
    def _unique_camera_names(self) -> EdgeConfig:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.name in seen:
                raise ValueError(f"camera name {cam.name!r} is used twice; camera names must be unique")
            seen.add(cam.name)
        return self

    @model_validator(mode="after")
    def _alarm_overrides(self) -> EdgeConfig:
        names = [cam.name for cam in self.cameras]
        for name in self.alarm.cameras:
            if name not in names:
                close = difflib.get_close_matches(name, names, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                msg = (f"alarm.cameras.{name}: no camera is named {name!r}; {hint}use a name from cameras "
                       f"({', '.join(names)})")
                raise ValueError(msg)
        for cam in self.cameras:
            over = self.alarm.cameras.get(cam.name)
            if over is not None and cam.threshold is not None and over.threshold is not None:
                msg = (f"camera {cam.name}: threshold is set both in cameras[].threshold and "
                       f"alarm.cameras.{cam.name}.threshold; keep one")
                raise ValueError(msg)
            try:
                self.alarm_policy(cam).check()
            except ValueError as e:
                where = f"alarm.cameras.{cam.name}" if over is not None else f"camera {cam.name}"
                raise ValueError(f"{where}: {e}; fix the alarm settings of this camera") from None
        return self

    def journal_path(self, cam: CameraConfig) -> Path | None:
        """The read journal of a watched folder with ``resume``: the camera's ``journal``, else
        ``<camera name>.journal.sqlite`` beside the MQTT outbox (the state directory); ``None`` for other cameras."""
        if not (cam.watch and cam.resume):
            return None
        return cam.journal if cam.journal is not None else self.mqtt.outbox.path.parent / f"{cam.name}.journal.sqlite"

    def alarm_policy(self, cam: CameraConfig) -> AlarmPolicy:
        """Effective alarm settings of a camera: ``alarm`` overridden by ``alarm.cameras.<name>`` and the camera's own
        ``threshold``/``clear_threshold``. A threshold override without a clear threshold keeps the global ratio
        clear_threshold / threshold."""
        a = self.alarm
        over = a.cameras.get(cam.name) or AlarmOverride()
        thr = over.threshold if over.threshold is not None else cam.threshold
        clr = over.clear_threshold if over.clear_threshold is not None else cam.clear_threshold
        if thr is None:
            thr, clr = a.threshold, clr if clr is not None else a.clear_threshold
        elif clr is None:
            clr = thr * a.clear_threshold / a.threshold

        def pick(key: str) -> Any:
            value = getattr(over, key)
            return value if value is not None else getattr(a, key)

        return AlarmPolicy(
            threshold=thr,
            clear_threshold=clr,
            raise_frames=pick("raise_frames"),
            raise_window=pick("raise_window"),
            clear_frames=pick("clear_frames"),
            clear_window=pick("clear_window"),
            min_duration_s=pick("min_duration_s"),
            cooldown_s=pick("cooldown_s"),
        )

    def camera_thresholds(self, cam: CameraConfig) -> tuple[float, float]:
        """Effective ``(threshold, clear_threshold)`` of a camera (scores), see :meth:`alarm_policy`."""
        policy = self.alarm_policy(cam)
        return policy.threshold, policy.clear_threshold


# ---------------------------------------------------------------------------------------------------------------
# Loading and error reporting


_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """``text`` with control characters (newlines from odd YAML keys or values) escaped: an error stays one line."""
    return _CONTROL_RE.sub(lambda m: {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(m[0], f"\\x{ord(m[0]):02x}"), text)


def _unwrap(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for a in typing.get_args(tp) for t in _unwrap(a) if t is not type(None)]
    return [tp]


def _field_info(loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, Any]:
    """Walk ``EdgeConfig`` along a pydantic error location; return (model owning the last key, its FieldInfo)."""
    current: list[Any] = [EdgeConfig]
    owner: type[BaseModel] | None = None
    info = None
    for part in loc:
        nxt: list[Any] = []
        for tp in current:
            if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str) and part in tp.model_fields:
                owner, info = tp, tp.model_fields[part]
                nxt.extend(_unwrap(info.annotation))
            elif typing.get_origin(tp) in (list, tuple) and isinstance(part, int):
                nxt.extend(_unwrap(typing.get_args(tp)[0]))
        if not nxt:
            # the location ends in a key that does not exist (extra_forbidden): report the owner model
            owner = next((t for t in current if isinstance(t, type) and issubclass(t, BaseModel)), owner)
            return owner, None
        current = nxt
    return owner, info


def _yaml_line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((kv for kv in node.value if kv[0].value == str(part)), None)
            if match is None:
                return line
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _describe(err: dict[str, Any]) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    owner, info = _field_info(loc)
    desc = info.description if info is not None else None
    if kind == "extra_forbidden":
        names = list(owner.model_fields) if owner is not None else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"unknown key {loc[-1]!r}; {hint}remove it or fix its spelling (allowed here: {', '.join(names)})"
    if kind == "missing" and loc and isinstance(loc[-1], int):
        return f"item {loc[-1]} is missing; expected {desc}" if desc else f"item {loc[-1]} is missing"
    if kind == "missing":
        return f"required setting is missing; add it ({desc})" if desc else "required setting is missing; add it"
    msg = err["msg"].removeprefix("Value error, ")
    if kind in ("value_error", "assertion_error"):
        return msg
    got = err.get("input")
    secret = any(isinstance(p, str) and SECRET_KEY_RE.search(p) for p in loc)
    got_text = f" (got {got!r})" if not isinstance(got, dict | list) and not secret else ""
    return f"{msg}{got_text}; expected {desc}" if desc else f"{msg}{got_text}"


def format_validation_error(exc: ValidationError, path: Path, root: yaml.Node | None) -> str:
    """One line for the first schema error: ``file:line: field.path: what is wrong; how to fix`` (+N more)."""
    errors = exc.errors()
    # an unknown key is usually a typo that also makes a required key "missing": report the typo first
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(first["loc"])
    where = ".".join(str(p) for p in loc) or "(top level)"
    line = _yaml_line(root, loc)
    more = f" (+{len(errors) - 1} more error{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    pos = f"{path}:{line}" if line else str(path)
    return one_line(redact(f"config error: {pos}: {where}: {_describe(first)}{more}"))


def _read_password(cfg: EdgeConfig, base: Path) -> EdgeConfig:
    pf = cfg.mqtt.password_file
    if pf is None:
        return cfg
    if not pf.is_absolute():
        creds = os.environ.get("CREDENTIALS_DIRECTORY")
        pf = Path(creds) / pf if creds else base / pf
    try:
        password = pf.read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError) as e:
        reason = "file is empty" if isinstance(e, IndexError) else (e.strerror or str(e))
        raise ConfigError(f"config error: mqtt.password_file: cannot read {pf} ({reason}); fix the path") from e
    mqtt = cfg.mqtt.model_copy(update={"password": password, "password_file": None})
    return cfg.model_copy(update={"mqtt": mqtt})


def _resolve_paths(cfg: EdgeConfig, base: Path) -> EdgeConfig:
    model = cfg.model if cfg.model.is_absolute() else base / cfg.model
    cams = []
    for cam in cfg.cameras:
        if cam.resolved_kind in ("file", "folder") and isinstance(cam.source, str):
            src = Path(cam.source).expanduser()
            cam = cam.model_copy(update={"source": str(src if src.is_absolute() else base / src)})
        cams.append(cam)
    return cfg.model_copy(update={"model": model, "cameras": cams})


def _credential_path(p: Path, base: Path) -> Path:
    if p.is_absolute():
        return p
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(creds) / p if creds else base / p


def _resolve_mqtt_alarm_paths(cfg: EdgeConfig, base: Path) -> EdgeConfig:
    """Resolve (and check readable) TLS files; resolve the outbox file, the watched folders' journals and the
    snapshot directory."""
    mqtt = cfg.mqtt
    if mqtt.tls is not None:
        files = {}
        for key in ("ca_file", "cert_file", "key_file"):
            p = getattr(mqtt.tls, key)
            if p is None:
                continue
            p = _credential_path(p.expanduser(), base)
            try:
                with p.open("rb"):
                    pass
            except OSError as e:
                msg = f"config error: mqtt.tls.{key}: cannot read {p} ({e.strerror or e}); fix the path"
                raise ConfigError(msg) from None
            files[key] = p
        mqtt = mqtt.model_copy(update={"tls": mqtt.tls.model_copy(update=files)})
    state = os.environ.get("STATE_DIRECTORY")
    state_base = Path(state.split(":")[0]) if state else base

    def state_path(p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else state_base / p

    ob = state_path(mqtt.outbox.path)
    mqtt = mqtt.model_copy(update={"outbox": mqtt.outbox.model_copy(update={"path": ob})})
    cams = [c.model_copy(update={"journal": state_path(c.journal)}) if c.journal is not None else c
            for c in cfg.cameras]
    alarm = cfg.alarm
    if alarm.snapshots is not None and not alarm.snapshots.dir.expanduser().is_absolute():
        snaps = alarm.snapshots.model_copy(update={"dir": base / alarm.snapshots.dir.expanduser()})
        alarm = alarm.model_copy(update={"snapshots": snaps})
    return cfg.model_copy(update={"mqtt": mqtt, "alarm": alarm, "cameras": cams})


def _substitute(data: Any, path: Path, root: yaml.Node | None, env: typing.Mapping[str, str] | None = None,
                loc: tuple[Any, ...] = ()) -> Any:
    """Replace ``${NAME}``, ``${NAME:-default}`` and ``${file:PATH}`` in every string value of parsed YAML.

    ``${NAME}``: the environment variable NAME (an unset one is an error; ``${NAME:-default}`` falls back to
    ``default`` when NAME is unset or empty). ``${file:PATH}``: the first line of the file PATH, stripped; a relative
    PATH is looked up in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) if set, else next to the config
    file. ``$${`` gives a literal ``${``. Values read with ``${file:...}`` and values substituted into keys named like
    a password are registered as secrets (masked in every log line, see :func:`algan.edge.logs.redact`). Results
    are strings; pydantic converts them where a number is expected (``port: ${PORT}`` -> 1883).

    Raises:
        ConfigError: unknown variable, unreadable file or bad ``${...}`` syntax; one line naming the file, line and
            field.
    """
    env = os.environ if env is None else env
    if isinstance(data, dict):
        return {k: _substitute(v, path, root, env, (*loc, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [_substitute(v, path, root, env, (*loc, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data
    secret = any(isinstance(p, str) and SECRET_KEY_RE.search(p) for p in loc)

    def fail(what: str) -> ConfigError:
        line = _yaml_line(root, loc)
        pos = f"{path}:{line}" if line else str(path)
        where = ".".join(str(p) for p in loc) or "(top level)"
        return ConfigError(one_line(f"config error: {pos}: {where}: {what}"))

    def one(m: re.Match) -> str:
        if m.group(0) == "$${":
            return "${"
        ref = m.group(1)
        if ref.startswith("file:"):
            if not ref[5:].strip():
                raise fail("${file:} needs a file name, e.g. ${file:camera_password}")
            name = Path(ref[5:].strip()).expanduser()
            fp = _credential_path(name, path.resolve().parent)
            try:
                value = fp.read_text(encoding="utf-8").splitlines()[0].strip()
            except (OSError, IndexError, UnicodeDecodeError) as e:
                reason = "file is empty" if isinstance(e, IndexError) else getattr(e, "strerror", None) or str(e)
                raise fail(f"${{file:{ref[5:].strip()}}}: cannot read {fp} ({reason}); fix the path or the "
                           "systemd LoadCredential= line") from None
            register_secret(value)
            return value
        name, sep, default = ref.partition(":-")
        if not ENV_NAME_RE.match(name):
            raise fail(f"bad reference ${{{ref}}}; write ${{NAME}}, ${{NAME:-default}} or ${{file:PATH}} "
                       "(or $${ for a literal ${)")
        value = env.get(name)
        if not value and sep:
            value = default
        if value is None:
            raise fail(f"environment variable {name} is not set; set it (e.g. Environment={name}=... in the systemd "
                       f"unit) or give a default: ${{{name}:-value}}")
        if secret:
            register_secret(value)
        return value

    return SUBST_RE.sub(one, data)


def parse_config(data: Any, path: Path = Path("<config>"), root: yaml.Node | None = None) -> EdgeConfig:
    """Validate already-parsed YAML data.

    Raises:
        ConfigError: one line naming the field path and how to fix it.
    """
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__}"
        msg = f"config error: {path}: expected a mapping of settings (device_id, model, cameras...), got {got}"
        raise ConfigError(msg)
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, path, root)) from None


def load_config(path: str | Path) -> EdgeConfig:
    """Read, validate and resolve an edge config file.

    Args:
        path: YAML file.

    ``${NAME}``, ``${NAME:-default}`` and ``${file:PATH}`` in string values are substituted first (see
    :func:`_substitute`).

    Returns:
        The validated config with relative paths resolved against the file's directory and ``mqtt.password_file``
        read into ``mqtt.password``.

    Raises:
        ConfigError: missing/unreadable file, YAML syntax error or schema error; the text is one line.
    """
    try:
        return _load_config(Path(path))
    except ConfigError as e:  # every message one line, whatever odd characters a key, value or path holds
        raise ConfigError(one_line(str(e))) from None


def _load_config(path: Path) -> EdgeConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        msg = f"config error: cannot read {path} ({e.strerror or e}); check the path given to --config"
        raise ConfigError(msg) from None
    except UnicodeDecodeError as e:
        msg = f"config error: {path}: not UTF-8 text (byte {e.start}); save the config as UTF-8 YAML"
        raise ConfigError(msg) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        pos = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        msg = f"config error: {pos}: YAML syntax error: {problem}; fix the indentation/quoting there"
        raise ConfigError(msg) from None
    cfg = parse_config(_substitute(data, path, root), path, root)
    base = path.resolve().parent
    cfg = _resolve_mqtt_alarm_paths(_read_password(_resolve_paths(cfg, base), base), base)
    register_secret(cfg.mqtt.password)
    return cfg
