"""Minimal systemd notify protocol (``Type=notify`` units): READY, STOPPING and WATCHDOG pings.

A no-op unless systemd set ``NOTIFY_SOCKET``; needs no extra package.
"""

from __future__ import annotations

import os
import socket
import time


class SystemdNotifier:
    """Sends state lines to ``$NOTIFY_SOCKET``; :meth:`watchdog` rate-limits itself to half of ``$WATCHDOG_USEC``."""

    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET")
        if addr and addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract socket namespace
        self._addr = addr
        usec = os.environ.get("WATCHDOG_USEC", "")
        self._interval = int(usec) / 2e6 if usec.isdigit() else None
        self._last = 0.0

    def notify(self, state: str) -> None:
        """Send e.g. ``READY=1``; errors are ignored (notification is best effort)."""
        if not self._addr:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto(state.encode(), self._addr)
        except OSError:
            pass

    def watchdog(self) -> None:
        """Ping the systemd watchdog if one is configured and half its interval has passed."""
        if self._interval is None:
            return
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self.notify("WATCHDOG=1")
