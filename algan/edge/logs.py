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
import time

from algan.contract import utc_iso

LEVELS = ("debug", "info", "warning", "error")
#: what replaces a secret in log lines and error messages
MASK = "***"
#: ``scheme://user:password@`` with the password running to the LAST ``@`` of the authority (a raw ``@`` in a
#: password, e.g. ``rtsp://admin:Sekr3t@Pw2@10.0.0.5/s1``, is masked whole)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*:/{1,2})(?P<user>[^\s/:@'\"]*):(?P<pw>[^\s/'\"]*)@")
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


def register_url_secrets(text: str) -> None:
    """Register the password of every ``scheme://user:password@`` in ``text`` (see :func:`register_secret`): the
    secret stays masked even where the URL is later rewritten (a path normalisation turning ``//`` into ``/``)."""
    for m in _URL_USERINFO.finditer(text):
        register_secret(m["pw"])


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


class RepeatedErrors:
    """Logs a failure that repeats (disk full, a file system gone read-only) as one line, then at most one line per
    ``interval_s`` with the count of failures since the last line, instead of one line per failure.

    Args:
        logger: where the lines go (level ERROR).
        interval_s: shortest time between two lines of one kind (seconds).
        clock: monotonic clock (seconds).
    """

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0, clock=time.monotonic) -> None:  # noqa: ANN001
        self.logger = logger
        self.interval_s = float(interval_s)
        self.clock = clock
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}
        self._lock = threading.Lock()

    def error(self, kind: str, message: str) -> bool:
        """Report one failure of ``kind`` (e.g. ``"outbox"``); True when a line was logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval_s:
                self._count[kind] = self._count.get(kind, 0) + 1
                return False
            more = self._count.pop(kind, 0)
            self._last[kind] = now
        if more:
            self.logger.error("%s (%d more like this in the last %.0f s)", message, more, now - (last or 0.0))
        else:
            self.logger.error("%s", message)
        return True

    def ok(self, kind: str) -> None:
        """``kind`` works again: the next failure is logged at once."""
        with self._lock:
            more = self._count.pop(kind, 0)
            had = self._last.pop(kind, None) is not None
        if had and more:
            self.logger.error("%d more failures of this kind (%s) before it recovered", more, kind)
