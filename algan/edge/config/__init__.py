"""Edge daemon configuration: pydantic v2 models (one module per section) and :func:`load_config`.

The YAML file maps onto :class:`EdgeConfig`. Every model forbids unknown keys, every field carries a description
with its unit, and :func:`load_config` turns any problem (missing file, YAML syntax, schema) into a
:class:`~algan.edge.errors.ConfigError` whose text is ONE line naming the file, line and field path
(e.g. ``edge.yaml:14: cameras.0.source: ...``) and how to fix it.

Validators check data only; nothing here opens cameras, models or sockets (that happens in
:class:`algan.edge.app.EdgeApp`). Relative paths (``model``, file/folder camera sources, ``mqtt.password_file``)
are resolved against the directory of the config file, so the daemon behaves the same whatever its working
directory (systemd starts it in ``/``).

Modules::

    base        Section (frozen, unknown keys forbidden), topic-safe names
    runner      runner: (RunnerConfig, TritonConfig, ORT_PROVIDERS)
    batch       batch: (BatchConfig)
    mqtt        mqtt: (MqttConfig, MqttTlsConfig, OutboxConfig, HomeAssistantConfig)
    alarm       alarm: (AlarmConfig, AlarmOverride, SnapshotConfig)
    camera      cameras: (CameraConfig, source kinds)
    metrics     metrics: (MetricsConfig)
    edge        EdgeConfig: the whole file, cross-section checks, per-camera alarm policy and journal path
    errors      one-line rendering of schema errors (file:line: field.path: what; how to fix)
    loading     load_config / parse_config: YAML, ${ENV} and ${file:...} substitution, path and secret resolution

This module re-exports the public names, so ``from algan.edge.config import EdgeConfig, load_config`` works.
"""

from algan.edge.config.alarm import AlarmConfig, AlarmOverride, SnapshotConfig
from algan.edge.config.base import TOPIC_NAME_RE, TOPIC_PREFIX_RE, Section
from algan.edge.config.batch import BatchConfig
from algan.edge.config.camera import LIVE_KINDS, STREAM_SCHEMES, CameraConfig, Roi, SourceKind
from algan.edge.config.edge import EdgeConfig
from algan.edge.config.errors import SECRET_KEY_RE, format_validation_error, one_line
from algan.edge.config.loading import load_config, parse_config
from algan.edge.config.metrics import MetricsConfig
from algan.edge.config.mqtt import HomeAssistantConfig, MqttConfig, MqttTlsConfig, OutboxConfig
from algan.runtime.runners.settings import ORT_PROVIDERS, RunnerConfig, TritonConfig

__all__ = [
    "LIVE_KINDS",
    "ORT_PROVIDERS",
    "SECRET_KEY_RE",
    "STREAM_SCHEMES",
    "TOPIC_NAME_RE",
    "TOPIC_PREFIX_RE",
    "AlarmConfig",
    "AlarmOverride",
    "BatchConfig",
    "CameraConfig",
    "EdgeConfig",
    "HomeAssistantConfig",
    "MetricsConfig",
    "MqttConfig",
    "MqttTlsConfig",
    "OutboxConfig",
    "Roi",
    "RunnerConfig",
    "Section",
    "SnapshotConfig",
    "SourceKind",
    "TritonConfig",
    "format_validation_error",
    "load_config",
    "one_line",
    "parse_config",
]
