"""Loopback ports and bounded readiness polling.

Every helper here refuses non-loopback hosts: the rig never sends traffic
anywhere but 127.0.0.0/8 (or ::1).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Container
from pathlib import Path

LOOPBACK = "127.0.0.1"

#: Pause between readiness polls. This is a poll interval, not synchronisation:
#: every wait below is bounded by an explicit deadline.
POLL_INTERVAL_S = 0.02


class NotReady(TimeoutError):
    """A component did not become ready before its deadline (or died)."""


def assert_loopback(host: str) -> None:
    """Raise ValueError unless ``host`` is a loopback address or ``localhost``."""
    h = host.strip("[]")
    if h == "localhost":
        return
    try:
        if ipaddress.ip_address(h).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"rig only talks to loopback, refusing host {host!r}")


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is currently free on ``host`` (loopback only).

    The kernel picks it (bind to port 0); there is an inherent race until the
    caller binds it, which is acceptable for tests.
    """
    assert_loopback(host)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _check_proc(proc: subprocess.Popen[bytes] | None, what: str, log: Path | None) -> None:
    if proc is not None and proc.poll() is not None:
        tail = tail_file(log) if log is not None else ""
        raise NotReady(f"{what}: process {proc.pid} exited with {proc.returncode}\n{tail}")


def tail_file(path: Path | None, n_bytes: int = 4000) -> str:
    """Last ``n_bytes`` of a (log) file, decoded leniently; '' if unreadable."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - n_bytes))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def wait_until(
    predicate: Callable[[], bool],
    deadline_s: float,
    what: str = "condition",
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``predicate`` until it returns True, for at most ``deadline_s``.

    If ``proc`` is given and exits meanwhile, fail at once (with ``log``'s tail).
    """
    end = time.monotonic() + deadline_s
    while True:
        _check_proc(proc, what, log)
        if predicate():
            return
        if time.monotonic() >= end:
            raise NotReady(f"{what} not ready after {deadline_s}s\n{tail_file(log)}")
        time.sleep(POLL_INTERVAL_S)


def tcp_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if a TCP connect to host:port succeeds."""
    assert_loopback(host)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def wait_tcp(
    host: str,
    port: int,
    deadline_s: float = 10.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Wait until host:port accepts TCP connections (bounded by ``deadline_s``)."""
    assert_loopback(host)
    wait_until(lambda: tcp_open(host, port), deadline_s, f"tcp {host}:{port}", proc, log)


def http_status(url: str, timeout_s: float = 2.0, method: str = "GET") -> int | None:
    """Status code of one request to ``url`` (no redirects followed), None on connection error."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or u.hostname is None:
        raise ValueError(f"only plain http URLs are supported: {url!r}")
    assert_loopback(u.hostname)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout_s)
    try:
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        conn.request(method, path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_http(
    url: str,
    deadline_s: float = 10.0,
    *,
    ok: Container[int] | None = None,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> int:
    """Wait until ``url`` answers over HTTP; return the status.

    With ``ok`` the status must be in it (e.g. ``{200}``); otherwise any HTTP
    answer counts as ready.
    """
    got: list[int] = []

    def ready() -> bool:
        st = http_status(url)
        if st is None or (ok is not None and st not in ok):
            return False
        got.append(st)
        return True

    wait_until(ready, deadline_s, f"http {url}", proc, log)
    return got[-1]
