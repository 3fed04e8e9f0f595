"""systemd notify protocol against a real unix datagram socket (what systemd listens on)."""

from __future__ import annotations

import os
import socket

import pytest

from algan.edge.sdnotify import SystemdNotifier


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    yield str(path), sock
    sock.close()


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


def test_ready_status_stopping_lines(notify_socket):
    path, sock = notify_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert n.enabled and n.watchdog_interval is None
    assert n.ready("running: 2 camera(s)")
    assert sock.recv(4096) == b"READY=1\nSTATUS=running: 2 camera(s)"
    assert n.status("12.5 frames/s")
    assert sock.recv(4096) == b"STATUS=12.5 frames/s"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    assert not n.watchdog(), "no WATCHDOG_USEC: no pings"


def test_watchdog_rate_limited_to_half_the_interval(notify_socket):
    path, sock = notify_socket
    clock = Clock()
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}, clock)
    assert n.watchdog_interval == 1.0
    assert n.watchdog() and sock.recv(64) == b"WATCHDOG=1"
    clock.t = 0.5
    assert not n.watchdog()
    clock.t = 1.0
    assert n.watchdog() and sock.recv(64) == b"WATCHDOG=1"


def test_noop_without_socket_and_other_pid():
    assert not SystemdNotifier({}).notify("READY=1")
    n = SystemdNotifier({"NOTIFY_SOCKET": "/nonexistent/sock", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_interval is None, "the watchdog belongs to another process"
    assert not n.notify("READY=1"), "a missing socket is not an error"


def test_abstract_namespace_address():
    name = f"algan-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).notify("READY=1")
        assert sock.recv(64) == b"READY=1"
