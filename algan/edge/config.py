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

from algan.edge.errors import ConfigError

#: Names used inside MQTT topics (device id, camera names): no ``/``, ``+``, ``#``, spaces or control characters.
TOPIC_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: Topic prefix: one or more topic-safe levels separated by ``/``.
TOPIC_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")
#: URL schemes OpenCV/FFmpeg opens as live network streams.
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")

SourceKind = Literal["file", "device", "stream", "folder"]


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


class RunnerConfig(_Section):
    """Inference backend settings."""

    backend: Literal["onnxruntime", "tensorrt"] = Field(
        "onnxruntime", description="inference backend: 'onnxruntime' (CPU) or 'tensorrt' (NVIDIA GPU)"
    )
    threads: int = Field(
        0, ge=0, le=256, description="ONNX Runtime intra-op threads (count); 0 = ONNX Runtime default (all cores)"
    )


class BatchConfig(_Section):
    """Cross-camera batching: a batch is run when it is full or when the oldest frame has waited long enough."""

    max_size: int = Field(8, ge=1, le=256, description="largest batch sent to the model (frames)")
    max_wait_ms: float = Field(
        20.0, ge=0, le=10_000, description="longest time the first frame of a batch waits for more (milliseconds)"
    )


class MqttConfig(_Section):
    """MQTT broker connection and topic prefix."""

    host: str = Field("127.0.0.1", min_length=1, description="broker host name or IP address")
    port: int = Field(1883, ge=1, le=65535, description="broker TCP port")
    prefix: str = Field("algan", description="first topic level(s), e.g. 'algan' or 'plant1/algan'")
    client_id: str | None = Field(None, description="MQTT client id; default 'algan-edge-<device_id>'")
    username: str | None = Field(None, description="broker user name; omit for anonymous access")
    password: str | None = Field(None, description="broker password (prefer password_file)")
    password_file: Path | None = Field(
        None,
        description="file holding the broker password (first line); relative paths are looked up in "
        "$CREDENTIALS_DIRECTORY (systemd LoadCredential=) if set, else next to the config file",
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keep-alive interval (seconds)")
    connect_timeout_s: float = Field(
        10.0, gt=0, le=300, description="how long to wait for the first broker connection at start (seconds)"
    )
    max_queued_messages: int = Field(
        10_000, ge=1, description="QoS1 messages kept in memory while the broker is unreachable (messages)"
    )
    score_qos: Literal[0, 1, 2] = Field(0, description="QoS of score messages (0 = at most once, cheapest)")
    alarm_qos: Literal[1, 2] = Field(1, description="QoS of alarm events and state (1 or 2; alarms are never QoS 0)")
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
        return self


class AlarmConfig(_Section):
    """Alarm debouncing and hysteresis on calibrated scores (1.0 = calibrated alarm threshold)."""

    threshold: float = Field(1.0, gt=0, description="score at or above which a frame counts as anomalous (score)")
    clear_threshold: float = Field(
        0.9, gt=0, description="score below which a frame counts as normal again while alarmed (score, <= threshold)"
    )
    raise_frames: int = Field(3, ge=1, le=10_000, description="consecutive anomalous frames that raise an alarm")
    clear_frames: int = Field(5, ge=1, le=100_000, description="consecutive normal frames that clear an alarm")

    @model_validator(mode="after")
    def _hysteresis(self) -> AlarmConfig:
        if self.clear_threshold > self.threshold:
            msg = (
                f"alarm.clear_threshold ({self.clear_threshold}) must be <= alarm.threshold ({self.threshold}); "
                "lower it (hysteresis)"
            )
            raise ValueError(msg)
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
        description="video file path, device index (0) or /dev/videoN, rtsp/http URL, or folder of images"
    )
    kind: Literal["auto", "file", "device", "stream", "folder"] = Field(
        "auto", description="source kind; 'auto': integer or /dev path = device, URL = stream, else file/folder"
    )
    roi: Roi | None = Field(None, description="crop [x, y, width, height] before resizing (pixels); omit = full frame")
    threshold: float | None = Field(None, gt=0, description="per-camera alarm threshold overriding alarm.threshold")
    clear_threshold: float | None = Field(
        None, gt=0, description="per-camera clear threshold; default scales alarm.clear_threshold with threshold"
    )
    queue_size: int | None = Field(
        None, ge=1, le=1024, description="frames buffered per camera; default 1 for live sources, 16 for files"
    )
    reconnect_interval_s: float = Field(
        5.0, gt=0, le=3600, description="wait before reopening a live source that failed or died (seconds)"
    )

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
        if self.kind in ("file", "folder", "stream") and isinstance(self.source, int):
            raise ValueError(f"kind '{self.kind}' needs a path or URL as source, got the device index {self.source}")
        if self.threshold is not None and self.clear_threshold is not None and self.clear_threshold > self.threshold:
            msg = f"clear_threshold ({self.clear_threshold}) must be <= threshold ({self.threshold}); lower it"
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
        return "file"

    @property
    def is_live(self) -> bool:
        """True for cameras and network streams (run until stopped), False for files/folders (end when exhausted)."""
        return self.resolved_kind in ("device", "stream")


class EdgeConfig(_Section):
    """The whole ``algan-edge run`` configuration."""

    device_id: str = Field(description="this device's id, used as a topic level (e.g. 'line1')")
    model: Path = Field(description="model bundle directory holding model.onnx, or a path to a .onnx file")
    runner: RunnerConfig = Field(default_factory=RunnerConfig, description="inference backend settings")
    batch: BatchConfig = Field(default_factory=BatchConfig, description="cross-camera batching")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT broker and topics")
    alarm: AlarmConfig = Field(default_factory=AlarmConfig, description="alarm debouncing and hysteresis")
    stats_interval_s: float = Field(5.0, gt=0, le=3600, description="period of the stats message (seconds)")
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

    def camera_thresholds(self, cam: CameraConfig) -> tuple[float, float]:
        """Effective ``(threshold, clear_threshold)`` of a camera (scores).

        A camera ``threshold`` without ``clear_threshold`` keeps the global ratio clear_threshold / threshold.
        """
        if cam.threshold is None:
            return self.alarm.threshold, (
                cam.clear_threshold if cam.clear_threshold is not None else self.alarm.clear_threshold
            )
        if cam.clear_threshold is not None:
            return cam.threshold, cam.clear_threshold
        return cam.threshold, cam.threshold * self.alarm.clear_threshold / self.alarm.threshold


# ---------------------------------------------------------------------------------------------------------------
# Loading and error reporting


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
    got_text = f" (got {got!r})" if not isinstance(got, dict | list) else ""
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
    return f"config error: {pos}: {where}: {_describe(first)}{more}"


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

    Returns:
        The validated config with relative paths resolved against the file's directory and ``mqtt.password_file``
        read into ``mqtt.password``.

    Raises:
        ConfigError: missing/unreadable file, YAML syntax error or schema error; the text is one line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        msg = f"config error: cannot read {path} ({e.strerror or e}); check the path given to --config"
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
    cfg = parse_config(data, path, root)
    base = path.resolve().parent
    return _read_password(_resolve_paths(cfg, base), base)
