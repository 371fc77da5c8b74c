"""sd_notify without libsystemd: datagrams to NOTIFY_SOCKET, watchdog interval from the env."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from regsidecar.notify import Notifier, watchdog_interval


def test_watchdog_interval_is_half_the_timeout_for_this_pid_only() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 7) is None
    assert watchdog_interval({}, 7) is None


def test_send_reaches_a_path_socket_as_one_datagram(tmp_path: Path) -> None:
    path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
        assert notifier.enabled
        assert notifier.send("READY=1", "STATUS=serving from store")
        assert server.recv(1024) == b"READY=1\nSTATUS=serving from store"
        notifier.close()


def test_send_reaches_an_abstract_socket() -> None:
    name = f"regsidecar-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        notifier = Notifier(f"@{name}")
        assert notifier.send("WATCHDOG=1")
        assert server.recv(1024) == b"WATCHDOG=1"
        notifier.close()


def test_a_missing_socket_is_not_an_error(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "absent.sock"))
    assert notifier.send("READY=1") is False
    assert notifier.send("READY=1") is False  # warned once, still no exception
    notifier.close()
    assert Notifier.from_env({}).send("READY=1") is False
