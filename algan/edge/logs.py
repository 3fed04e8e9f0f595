"""Logging set-up for the edge CLIs: one line per record on stderr (journald-friendly), credentials redacted.

Redaction (:func:`redact`, applied to every record by :class:`RedactingFilter` and to the CLIs' error lines): the
password of ``scheme://user:password@host`` URLs (RTSP cameras), ``password=`` / ``user-pw=`` style key-value pairs
(GStreamer ``rtspsrc user-pw=``), and every value registered with :func:`register_secret` (the MQTT password, values
read with ``${file:...}`` in the config) are replaced by ``***``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading

from algan.contract import utc_iso

LEVELS = ("debug", "info", "warning", "error")
#: what replaces a secret in log lines and error messages
MASK = "***"
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/:@'\"]*):(?P<pw>[^\s/@'\"]*)@")
_KEY_VALUE = re.compile(r"(?P<key>\b(?:password|passwd|pwd|user-pw|user_pw|secret|token)=)(?P<value>[^\s&;,'\"]+)",
                        re.IGNORECASE)
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def register_secret(value: object) -> None:
    """Mask ``value`` (its text, when at least 3 characters long) wherever it appears in later log lines/errors."""
    text = str(value) if value is not None else ""
    if len(text) >= 3:
        with _SECRETS_LOCK:
            _SECRETS.add(text)


def redact(text: str) -> str:
    """``text`` with URL passwords, ``password=`` values and registered secrets replaced by ``***``.

    Example:
        >>> redact("cannot open stream source rtsp://admin:hunter2@10.0.0.5:554/s1")
        'cannot open stream source rtsp://admin:***@10.0.0.5:554/s1'
    """
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _KEY_VALUE.sub(lambda m: f"{m['key']}{MASK}", text)
    with _SECRETS_LOCK:
        secrets = sorted(_SECRETS, key=len, reverse=True)
    for s in secrets:
        text = text.replace(s, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback text) through :func:`redact`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as usual
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return utc_iso(record.created)


def setup_logging(level: str = "info") -> None:
    """Log ``time level logger: message`` lines to stderr; under journald (``JOURNAL_STREAM`` set) the time is left
    out because the journal stamps each line itself."""
    fmt = "%(levelname)s %(name)s: %(message)s"
    if not os.environ.get("JOURNAL_STREAM"):
        fmt = "%(asctime)s " + fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter(fmt))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("paho").setLevel(logging.WARNING)
