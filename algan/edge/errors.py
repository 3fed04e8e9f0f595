"""The daemon's user-caused errors (config, broker, cameras), subclasses of :class:`algan.runtime.errors.EdgeError`:
the CLI prints each as one line and exits with its ``exit_code``."""

from __future__ import annotations

from algan.runtime.errors import EdgeError


class ConfigError(EdgeError):
    """The configuration file is missing, not valid YAML, or does not match the schema (exit status 2)."""

    exit_code = 2


class BrokerError(EdgeError):
    """The MQTT broker cannot be reached or refused the connection."""


class SourceError(EdgeError):
    """A camera source cannot be opened or read (never fatal for the daemon: other cameras go on)."""


class StateLockError(EdgeError):
    """Another daemon holds the state directory (exit status 2: give each daemon its own state directory)."""

    exit_code = 2
