"""What a SIGHUP may change in a running daemon: the alarm section and the per-camera thresholds; pure.

:func:`plan_reload` compares the running config with the re-read one and says what to apply and what to ignore
(every other section, the cameras' other settings such as ``source`` and ``roi``, and cameras added, removed or
renamed, need a restart). :class:`~algan.edge.app.EdgeApp` logs the plan and applies it to its alarm trackers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from algan.edge.alarm import AlarmPolicy
from algan.edge.config.camera import CameraConfig
from algan.edge.config.edge import EdgeConfig

#: top-level settings that a reload does not apply (they need a restart)
RESTART_SETTINGS = ("model", "model_trusted_keys", "runner", "batch", "mqtt", "device_id", "metrics")
#: the settings of a camera that a reload applies (the others are the running reader's until a restart)
RELOAD_CAMERA_SETTINGS = ("threshold", "clear_threshold")


@dataclass(frozen=True)
class ReloadPlan:
    """The outcome of comparing the running config with a re-read one.

    Attributes:
        cameras_changed: cameras were added, removed or renamed (ignored: needs a restart).
        ignored: the :data:`RESTART_SETTINGS` that differ (ignored: need a restart).
        camera_settings: ``camera.setting`` of the other camera settings that differ (ignored: need a restart).
        policies: camera -> its new, checked alarm policy (cameras of the running config only).
        config: the running config with the new ``alarm`` section and the re-read thresholds of its cameras (their
            other settings, e.g. a ``roi`` taken from the bundle at start-up, stay the running ones).
        error: why nothing can be applied (an alarm policy fails its check), else ``None``.
    """

    cameras_changed: bool
    ignored: tuple[str, ...]
    policies: dict[str, AlarmPolicy] = field(default_factory=dict)
    config: EdgeConfig | None = None
    error: str | None = None
    camera_settings: tuple[str, ...] = ()

    @property
    def thresholds(self) -> dict[str, tuple[float, float]]:
        """camera -> ``(threshold, clear_threshold)`` of the new policies."""
        return {name: (p.threshold, p.clear_threshold) for name, p in self.policies.items()}


def _camera_changes(current: CameraConfig, new: CameraConfig) -> list[str]:
    """``name.setting`` of the running camera's settings that the re-read entry changes and a reload does not apply.
    A re-read entry without ``roi`` is no change: the running camera may have the bundle's."""
    return [f"{current.name}.{k}" for k in type(current).model_fields
            if k not in RELOAD_CAMERA_SETTINGS and not (k == "roi" and new.roi is None)
            and getattr(new, k) != getattr(current, k)]


def plan_reload(current: EdgeConfig, new: EdgeConfig) -> ReloadPlan:
    """What of ``new`` (the re-read config file) applies to a daemon running ``current``."""
    old_names = [c.name for c in current.cameras]
    changed = [c.name for c in new.cameras] != old_names
    ignored = tuple(k for k in RESTART_SETTINGS if getattr(new, k) != getattr(current, k))
    by_name = {c.name: c for c in new.cameras}
    policies: dict[str, AlarmPolicy] = {}
    try:
        for name in old_names:
            cam = by_name.get(name)
            if cam is not None:
                policies[name] = new.alarm_policy(cam).check()
    except ValueError as e:
        return ReloadPlan(changed, ignored, error=str(e))
    cams = [c.model_copy(update={k: getattr(by_name[c.name], k) for k in RELOAD_CAMERA_SETTINGS})
            if c.name in by_name else c for c in current.cameras]
    settings = tuple(s for c in current.cameras if c.name in by_name for s in _camera_changes(c, by_name[c.name]))
    return ReloadPlan(changed, ignored, policies, current.model_copy(update={"alarm": new.alarm, "cameras": cams}),
                      camera_settings=settings)
