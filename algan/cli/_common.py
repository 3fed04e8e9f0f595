"""Shared CLI plumbing: logging set-up and one-line errors instead of tracebacks."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

#: exception types a user can cause (bad paths, bad data, bad settings); shown as one line, exit code 2.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run_cli(prog: str, fn: Callable[[], int]) -> int:
    """Run ``fn``; user errors become ``prog: error: <message>`` on stderr and exit code 2, Ctrl-C exit 130."""
    try:
        return fn()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # backbone/export errors carry a full sentence too
        print(f"{prog}: error: {exc}", file=sys.stderr)
        # an error type may say it is the user's (``exit_code = 2``, e.g. BackboneError: a bad --blocks or weights)
        return int(getattr(exc, "exit_code", 1))
