"""Run the real ``regsidecar`` CLI as a subprocess on a loopback port, stop it by PID."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.rig.ports import free_port
from tests.rig.proc import MissingBinary, ServerProcess, child_env

#: Debian's libfaketime (package ``libfaketime``, pulled in by ``faketime``), any arch.
LIBFAKETIME_GLOB = "/usr/lib/*-linux-gnu/faketime/libfaketime.so.1"

#: A libfaketime relative offset: sign, integer, optional unit (s m h d y; none = seconds).
#: Integers only: a fraction's delimiter would depend on the locale.
_OFFSET = re.compile(r"[+-]\d+[smhdy]?")

# Debian 12's libfaketime 0.9.10 breaks clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)
# when FAKETIME_DONT_FAKE_MONOTONIC=1: it still rebases the deadline onto the faked wall
# clock, the kernel gets a negative time and says EINVAL (fixed upstream after 0.9.10).
# Python 3.11's time.sleep() is exactly that call, so under faketime time.sleep(x) --
# also subprocess waits and botocore retry sleeps -- raises OSError(EINVAL). A faked
# Python child therefore starts through this launcher: it swaps time.sleep for a
# select()-based sleep on the (real) monotonic clock before anything imports it, then
# runs the module (like ``python -m``) or script (like ``python FILE``) in argv[1].
_FAKETIME_LAUNCHER = """\
import runpy as _runpy, select as _select, sys as _sys, time as _time
def _sleep(secs, _mono=_time.monotonic, _sel=_select.select):
    if secs < 0:
        raise ValueError("sleep length must be non-negative")
    end = _mono() + secs
    while (left := end - _mono()) > 0:
        _sel([], [], [], left)
_time.sleep = _sleep
_target = _sys.argv.pop(1)
if _target.endswith(".py"):
    _sys.argv[0] = _target
    _runpy.run_path(_target, run_name="__main__")
else:
    _runpy.run_module(_target, run_name="__main__", alter_sys=True)
"""


def libfaketime_path() -> str | None:
    """Path of libfaketime.so.1 (Debian multiarch dir), None if not installed."""
    found = sorted(glob.glob(LIBFAKETIME_GLOB))
    return found[0] if found else None


class FakeTime:
    """A libfaketime wall-clock offset for child processes, changeable while they run.

    ``env()`` gives the variables that make a child see (real time + offset) on the
    wall clock (time.time, datetime.now, clock_gettime(CLOCK_REALTIME), gettimeofday,
    and file times from stat) while CLOCK_MONOTONIC stays real::

        LD_PRELOAD=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
        FAKETIME_TIMESTAMP_FILE=<file holding e.g. "+20m">
        FAKETIME_DONT_FAKE_MONOTONIC=1
        FAKETIME_NO_CACHE=1        # re-read the file on every wall-clock call (~1.7 us)
        (FAKETIME, FAKETIME_SHARED unset: FAKETIME would override the file)

    ``set(offset)`` rewrites the file atomically; a running child sees the new offset on
    its next wall-clock read (a clock jump). Offsets: ``+20m``, ``-2h``, ``+1d``, ``+0``.
    libfaketime leaves ``/dev/shm/faketime_shm_PID`` and ``sem.faketime_sem_PID`` behind
    for each process it was preloaded into: ``cleanup_shm(pid)`` after it exits.
    """

    def __init__(self, offset: str, path: Path) -> None:
        lib = libfaketime_path()
        if lib is None:
            raise MissingBinary(
                f"libfaketime not found ({LIBFAKETIME_GLOB}); run tests/rig/install-deps.sh"
            )
        self.lib = lib
        self.path = Path(path)
        self.offset = ""
        self.set(offset)

    def set(self, offset: str) -> None:
        """Change the offset (atomically: readers see the old or the new file, never half)."""
        if not _OFFSET.fullmatch(offset):
            raise ValueError(f"faketime offset must look like +20m, -2h, +1d, +0: {offset!r}")
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(offset + "\n")
        os.replace(tmp, self.path)
        self.offset = offset

    def env(self) -> dict[str, str]:
        preload = os.environ.get("LD_PRELOAD", "")
        return {
            "LD_PRELOAD": f"{self.lib} {preload}".strip(),
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_NO_CACHE": "1",
        }

    #: Variables to drop from the child's environment (they would override the file).
    UNSET = ("FAKETIME", "FAKETIME_SHARED", "FAKETIME_CACHE_DURATION")

    @staticmethod
    def python_argv(target: str, args: list[str]) -> list[str]:
        """argv for ``python -m TARGET ARGS`` (or ``python TARGET.py ARGS``) that works
        under libfaketime 0.9.10 (see ``_FAKETIME_LAUNCHER``)."""
        return [sys.executable, "-c", _FAKETIME_LAUNCHER, target, *args]

    @staticmethod
    def cleanup_shm(pid: int) -> None:
        """Remove libfaketime's per-process shm/semaphore files of exited ``pid``."""
        for name in (f"faketime_shm_{pid}", f"sem.faketime_sem_{pid}"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"/dev/shm/{name}")


class Sidecar(ServerProcess):
    """``python -m regsidecar serve ...`` with a private data dir and log file.

    ``stop()`` keeps the data dir (a restart finds it again); ``close()`` (and leaving
    the ``with`` block) also removes it if it is our own.

    >>> with Sidecar(["--storage", str(tree)]) as sc:  # doctest: +SKIP
    ...     urllib.request.urlopen(sc.url + "/v2/")
    """

    def __init__(
        self,
        args: list[str],
        *,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        command: str = "serve",
        port: int | None = None,
        faketime: str | None = None,
    ) -> None:
        """``faketime``: run under libfaketime with this wall-clock offset (``"+20m"``,
        ``"-2h"``, ``"+1d"``); monotonic stays real; ``set_faketime`` changes it live."""
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        super().__init__(data_dir, prefix="regsidecar-test-", log_name=f"sidecar-{self.port}.log")
        self.data_dir = self.workdir
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.faketime: FakeTime | None = (
            FakeTime(faketime, self.data_dir / f"faketime-{self.port}.rc")
            if faketime is not None
            else None
        )
        cli = [
            command,
            "--listen",
            self.host,
            "--data-dir",
            str(self.data_dir),
            *args,
        ]
        self.argv = (
            [sys.executable, "-m", "regsidecar", *cli]
            if self.faketime is None
            else FakeTime.python_argv("regsidecar", cli)
        )
        base = {
            "AWS_ACCESS_KEY_ID": "rigtestaccesskey",
            "AWS_SECRET_ACCESS_KEY": "rigtestsecretkey",
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
        unset = ["AWS_PROFILE"]
        if self.faketime is not None:
            base.update(self.faketime.env())
            unset += FakeTime.UNSET
        self.env = child_env({**base, **(env or {})}, unset=unset)

    def set_faketime(self, offset: str) -> None:
        """Jump the running sidecar's wall clock to (real time + ``offset``)."""
        if self.faketime is None:
            raise RuntimeError("Sidecar was not started with faketime=")
        self.faketime.set(offset)

    def start(self, deadline_s: float = 30.0) -> Sidecar:
        # 401: auth is on (a challenge tells clients where to log in); the sidecar is up.
        self._start(
            self.argv, self.url + "/v2/", ok=(200, 401), env=self.env, deadline_s=deadline_s
        )
        return self

    def stop(self) -> None:
        """Stop the process by PID; the data dir stays."""
        pid = self._stop_proc()
        if pid is not None and self.faketime is not None:
            FakeTime.cleanup_shm(pid)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self._proc is not None:
            self._proc.proc.kill()
            self._proc.proc.wait(10)
            self.stop()

    def close(self) -> None:
        self.stop()
        self._remove_own_dir()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def cache_files(self) -> list[Path]:
        root = self.data_dir / "cache" / "blobs"
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

    def temp_files(self) -> list[Path]:
        root = self.data_dir / "cache" / "tmp"
        return sorted(root.iterdir()) if root.exists() else []


def wait_for(predicate: Any, deadline_s: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)
