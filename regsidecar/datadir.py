"""The data directory's lock: one running sidecar per ``data_dir``, and tools that can tell.

``serve`` holds an exclusive ``flock`` on ``DATA_DIR/.lock`` for as long as it runs (the
kernel drops it when the process ends, however it ends). A command that would change the
directory's files itself (``cache gc`` / ``verify`` when no sidecar answered) first checks
:func:`held`: a locked directory belongs to a sidecar that is running, so the command talks
to it or says why it cannot, and never removes files from under it.

It also writes ``DATA_DIR/control.token`` (mode 0600, new at every start): the bearer token
the cache administration endpoints (``/-/cache/*``) want. Whoever may read the data directory's
files may administer its cache, as whoever may open docker.sock may run containers; a local
process of another user, or anything that only reaches the port, may not.

>>> lock = DataDirLock("/var/lib/regsidecar"); lock.acquire()  # doctest: +SKIP
"""

from __future__ import annotations

import fcntl
import os
import secrets
from pathlib import Path

from regsidecar.hostinstall import write_atomic

LOCK_NAME = ".lock"
CONTROL_TOKEN_NAME = "control.token"


class DataDirBusy(Exception):
    """Another process holds the data directory."""


class DataDirLock:
    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Hold the lock (DataDirBusy if another process does)."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise DataDirBusy(f"{os.path.dirname(self.path)} is in use by another sidecar") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def write_control_token(data_dir: str) -> str:
    """A new control token in ``DATA_DIR/control.token`` (0600, replaced atomically)."""
    token = secrets.token_hex(32)
    write_atomic(Path(data_dir, CONTROL_TOKEN_NAME), f"{token}\n".encode(), 0o600)
    return token


def read_control_token(data_dir: str) -> str | None:
    """The running sidecar's control token, None if this process may not read it (or none)."""
    try:
        with open(os.path.join(data_dir, CONTROL_TOKEN_NAME)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def held(data_dir: str) -> bool:
    """Whether a running process holds ``data_dir``'s lock (False if there is none)."""
    path = os.path.join(data_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
