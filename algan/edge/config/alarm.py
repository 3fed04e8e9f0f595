"""``alarm:`` section: debouncing and hysteresis, per-camera overrides, alarm snapshots."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from algan.edge.config.base import Section


class SnapshotConfig(Section):
    """JPEG of the frame of each raised/update alarm event: the full camera frame, with the anomaly heat map blended
    over the ROI and the anomalous region outlined (models with anomaly maps)."""

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


class AlarmOverride(Section):
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


class AlarmConfig(Section):
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
    snapshots: SnapshotConfig | None = Field(None, description="JPEG of each raised/update event's frame; omit = none")
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
