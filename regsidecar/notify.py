"""systemd's notify protocol (sd_notify), without libsystemd.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET`` (a datagram socket path, or an abstract
name starting with ``@``); the service sends ``READY=1`` when it can do its job, ``STATUS=...``
lines for ``systemctl status``, ``WATCHDOG=1`` pings when ``WatchdogSec=`` is set (systemd then
passes ``WATCHDOG_USEC``), and ``STOPPING=1`` on the way out. Outside systemd every call is a
no-op.

>>> notifier = Notifier.from_env({})
>>> notifier.enabled
False
>>> notifier.send("READY=1")  # no socket: nothing happens
False
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between watchdog pings (half of systemd's timeout), or None when not asked.

    ``WATCHDOG_PID``, when set, names the process the watchdog is meant for."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isascii() or not usec.isdigit() or int(usec) == 0:
        return None
    target = env.get("WATCHDOG_PID", "")
    if target and target != str(pid):
        return None
    return int(usec) / 2e6


class Notifier:
    """Sends notify messages to systemd's socket; every failure is logged once, never raised."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields as one datagram; True if it was sent."""
        if self.address is None:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(fields).encode(), addr)
        except OSError as exc:
            if not self._warned:
                log.warning(
                    "cannot notify systemd", extra={"socket": self.address, "error": str(exc)}
                )
                self._warned = True
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
