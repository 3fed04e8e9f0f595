"""Errors a user can cause, each carrying one line of text that says what went wrong and how to fix it: the base
class and the runtime's model errors (the daemon adds its own in :mod:`algan.edge.errors`).

The CLI catches :class:`EdgeError` at the top level, prints ``str(error)`` as a single line on stderr and exits with
:attr:`EdgeError.exit_code`; no traceback is shown for these.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class of user-caused errors in the runtime and the daemon.

    Attributes:
        exit_code: process exit status the CLI uses for this error.
    """

    exit_code: int = 1


class ModelError(EdgeError):
    """The model file cannot be read, or its graph does not match the edge input/output contract (exit status 2:
    the user must fix the ``model`` setting or the bundle)."""

    exit_code = 2
