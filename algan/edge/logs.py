"""Logging set-up for the edge CLIs: one line per record on stderr (journald-friendly)."""

from __future__ import annotations

import logging
import os
import sys
import time

LEVELS = ("debug", "info", "warning", "error")


class _UtcFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        t = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{t}.{int(record.msecs):03d}Z"


def setup_logging(level: str = "info") -> None:
    """Log ``time level logger: message`` lines to stderr; under journald (``JOURNAL_STREAM`` set) the time is left
    out because the journal stamps each line itself."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("paho").setLevel(logging.WARNING)
