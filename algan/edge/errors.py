"""Errors a user can cause, each carrying one line of text that says what went wrong and how to fix it.

The CLI catches :class:`EdgeError` at the top level, prints ``str(error)`` as a single line on stderr and exits with
:attr:`EdgeError.exit_code`; no traceback is shown for these.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class of user-caused errors in the edge runtime.

    Attributes:
        exit_code: process exit status the CLI uses for this error.
    """

    exit_code: int = 1


class ConfigError(EdgeError):
    """The configuration file is missing, not valid YAML, or does not match the schema (exit status 2)."""

    exit_code = 2


class ModelError(EdgeError):
    """The model file cannot be read, or its graph does not match the edge input/output contract (exit status 2:
    the user must fix the ``model`` setting or the bundle)."""

    exit_code = 2


class BrokerError(EdgeError):
    """The MQTT broker cannot be reached or refused the connection."""


class SourceError(EdgeError):
    """A camera source cannot be opened or read (never fatal for the daemon: other cameras go on)."""


class StateLockError(EdgeError):
    """Another daemon holds the state directory (exit status 2: give each daemon its own state directory)."""

    exit_code = 2
