"""Minimal systemd notify protocol (``Type=notify`` units): READY, STATUS, STOPPING and WATCHDOG messages.

A no-op unless systemd set ``NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace); needs no extra
package. The watchdog interval comes from ``WATCHDOG_USEC`` (set by systemd from ``WatchdogSec=``); it is ignored
when ``WATCHDOG_PID`` names another process.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends state lines to ``$NOTIFY_SOCKET``.

    Args:
        env: environment to read ``NOTIFY_SOCKET`` / ``WATCHDOG_USEC`` / ``WATCHDOG_PID`` from (default
            ``os.environ``).
        clock: monotonic clock (seconds) used to rate-limit watchdog pings.

    Attributes:
        watchdog_interval: seconds between WATCHDOG=1 pings (half of ``WATCHDOG_USEC``), ``None`` without a
            systemd watchdog.
    """

    def __init__(self, env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET") or None
        if addr and addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract socket namespace
        self._addr = addr
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        mine = not pid.isdigit() or int(pid) == os.getpid()
        self.watchdog_interval = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 and mine else None
        self._clock = clock
        self._last: float | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """True when systemd listens (``NOTIFY_SOCKET`` is set)."""
        return self._addr is not None

    def notify(self, *lines: str) -> bool:
        """Send lines such as ``READY=1`` and ``STATUS=...`` in one datagram (best effort, never raises).

        Returns:
            True when the datagram was sent.
        """
        if not self._addr:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto("\n".join(lines).encode(), self._addr)
            return True
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %s: %s", self._addr, e)
            return False

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (with an optional ``STATUS=``): the model is loaded and the cameras are started."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """``STATUS=text`` (shown by ``systemctl status``)."""
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        """``WATCHDOG=1`` if a systemd watchdog is configured and half its interval passed since the last ping.

        The caller decides when the service is healthy (the daemon pings only while frames flow).
        """
        if self.watchdog_interval is None:
            return False
        now = self._clock()
        if self._last is not None and now - self._last < self.watchdog_interval:
            return False
        self._last = now
        return self.notify("WATCHDOG=1")
