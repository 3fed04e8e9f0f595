"""The whole config file: :class:`EdgeConfig` (the sections, cross-section checks, each camera's effective alarm
policy and journal path)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from algan.edge.alarm import AlarmPolicy
from algan.edge.config.alarm import AlarmConfig, AlarmOverride
from algan.edge.config.base import Section, topic_name
from algan.edge.config.batch import BatchConfig
from algan.edge.config.camera import CameraConfig
from algan.edge.config.metrics import MetricsConfig
from algan.edge.config.mqtt import MqttConfig
from algan.runtime.runners.settings import RunnerConfig
from algan.runtime.signing import KEY_PREFIX, parse_public_key


class EdgeConfig(Section):
    """The whole ``algan-edge run`` configuration."""

    device_id: str = Field(description="this device's id, used as a topic level (e.g. 'line1')")
    model: Path = Field(description="model bundle directory holding model.onnx, or a path to a .onnx file; or a "
                        "mapping {path: BUNDLE, trusted_keys: [...]} (see model_trusted_keys)")
    model_trusted_keys: tuple[str, ...] = Field(
        (), description="written as model.trusted_keys: public keys ('ed25519:<base64>' from algan-edge keygen, or a "
        ".pub file); when set, a bundle without a valid signature of one of them (algan-export --sign) is refused")
    runner: RunnerConfig = Field(default_factory=RunnerConfig, description="inference backend settings")
    batch: BatchConfig = Field(default_factory=BatchConfig, description="cross-camera batching")
    mqtt: MqttConfig = Field(default_factory=MqttConfig, description="MQTT broker and topics")
    alarm: AlarmConfig = Field(default_factory=AlarmConfig, description="alarm debouncing and hysteresis")
    stats_interval_s: float = Field(5.0, gt=0, le=3600, description="period of the stats message (seconds)")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description="optional Prometheus endpoint")
    cameras: list[CameraConfig] = Field(min_length=1, description="cameras to watch (at least one)")

    @model_validator(mode="before")
    @classmethod
    def _model_mapping(cls, data: Any) -> Any:
        """``model: {path: ..., trusted_keys: [...]}`` -> ``model`` and ``model_trusted_keys``."""
        if not (isinstance(data, dict) and isinstance(data.get("model"), dict)):
            return data
        m = data["model"]
        unknown = sorted(str(k) for k in m if k not in ("path", "trusted_keys"))
        if unknown:
            raise ValueError(f"model: unknown setting(s) {', '.join(unknown)}; model is a path, or a mapping with "
                             "path and trusted_keys")
        if "path" not in m:
            raise ValueError("model: give model.path (the bundle directory) beside model.trusted_keys")
        keys = m.get("trusted_keys") or []
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError("model.trusted_keys: a list of public keys ('ed25519:<base64>' or .pub files)")
        return {**data, "model": m["path"], "model_trusted_keys": tuple(keys)}

    @field_validator("model_trusted_keys")
    @classmethod
    def _keys_well_formed(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        for i, k in enumerate(keys):
            if k.strip().startswith(KEY_PREFIX):
                try:
                    parse_public_key(k)
                except ValueError as e:
                    raise ValueError(f"model.trusted_keys[{i}]: {e}") from None
        return keys

    @field_validator("device_id")
    @classmethod
    def _device_topic_safe(cls, v: str) -> str:
        return topic_name(v, "device_id")

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

    @property
    def outbox_path(self) -> Path:
        """The MQTT outbox file: ``mqtt.outbox.path``, else ``<device_id>/outbox.sqlite`` (resolved against the state
        directory by :func:`~algan.edge.config.load_config`)."""
        return self.mqtt.outbox.path or Path(self.device_id) / "outbox.sqlite"

    @property
    def state_dir(self) -> Path:
        """The daemon's state directory: the outbox's directory (journals beside it; locked while a daemon runs)."""
        return self.outbox_path.parent

    def journal_path(self, cam: CameraConfig) -> Path | None:
        """The read journal of a watched folder with ``resume``: the camera's ``journal``, else
        ``<camera name>.journal.sqlite`` beside the MQTT outbox (the state directory); ``None`` for other cameras."""
        if not (cam.watch and cam.resume):
            return None
        return cam.journal if cam.journal is not None else self.state_dir / f"{cam.name}.journal.sqlite"

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
