"""Subprocess plumbing shared by the rig: start/stop by PID, run-and-check, binaries,
ServerProcess (the lifecycle every server subprocess of the rig shares)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from .ports import tail_file, wait_http

#: How long a process gets between SIGTERM and SIGKILL.
STOP_TIMEOUT_S = 10.0


class MissingBinary(RuntimeError):
    """A required executable is not installed (tests turn this into a skip)."""


class CommandFailed(RuntimeError):
    """A rig command exited non-zero; carries its argv, exit code, stdout and stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"command failed (exit {returncode}): {' '.join(self.argv)}\n"
            f"--- stdout ---\n{stdout[-4000:]}\n--- stderr ---\n{stderr[-4000:]}"
        )


def which(name: str) -> str:
    """Absolute path of executable ``name``; MissingBinary if it is not on PATH."""
    path = shutil.which(name)
    if path is None:
        raise MissingBinary(f"{name} not found on PATH (see tests/rig/install-deps.sh)")
    return path


def missing(*names: str) -> list[str]:
    """The subset of ``names`` that is not on PATH (for pytest skip reasons)."""
    return [n for n in names if shutil.which(n) is None]


#: Proxy settings are always dropped from children: rig traffic stays on loopback.
PROXY_VARS = frozenset(
    v
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")
    for v in (name, name.upper())
)


def child_env(extra: Mapping[str, str] | None = None, unset: Sequence[str] = ()) -> dict[str, str]:
    """os.environ minus proxy variables and ``unset``, plus ``extra``."""
    drop = set(unset) | PROXY_VARS
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 300.0,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to completion (bounded); CommandFailed with both streams if it fails."""
    cp = run_bytes(argv, env=env, timeout_s=timeout_s, cwd=cwd)
    return subprocess.CompletedProcess(
        cp.args,
        cp.returncode,
        cp.stdout.decode("utf-8", "replace"),
        cp.stderr.decode("utf-8", "replace"),
    )


def run_bytes(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 300.0,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Like ``run`` but stdout/stderr stay bytes (e.g. a raw manifest, byte for byte)."""

    def text(b: bytes | str | None) -> str:
        return b.decode("utf-8", "replace") if isinstance(b, bytes) else (b or "")

    try:
        cp = subprocess.run(
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as e:
        raise CommandFailed(
            argv, -1, text(e.stdout), text(e.stderr) + f"\n[rig] timed out after {timeout_s}s"
        ) from e
    if cp.returncode != 0:
        raise CommandFailed(argv, cp.returncode, text(cp.stdout), text(cp.stderr))
    return cp


def stop_process(proc: subprocess.Popen[bytes] | None, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop one process by its PID: SIGTERM, wait, SIGKILL on timeout, reap."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout_s)


def stop_pid(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop a process we did not spawn directly (e.g. a daemon's child) by PID.

    Polls /proc until it is gone; SIGKILL after ``timeout_s``.
    """

    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie whose parent is gone is reaped by init; treat zombies as dead.
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    if not alive():
        return
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout_s
    while alive() and time.monotonic() < end:
        time.sleep(0.02)
    if alive():
        os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + timeout_s
        while alive() and time.monotonic() < end:
            time.sleep(0.02)


class LoggedProcess:
    """One long-running child process whose stdout+stderr go to a log file."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 -- lives as long as the child
        try:
            self.proc: subprocess.Popen[bytes] = subprocess.Popen(
                self.argv,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # keep terminal signals (Ctrl-C) away from it
            )
        except BaseException:
            self._log.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Terminate by PID, wait, kill on timeout; close the log."""
        try:
            stop_process(self.proc, timeout_s)
        finally:
            self._log.close()


class ServerProcess:
    """One long-running server child with a work dir and a log file (context manager).

    The work dir is ``workdir`` if given, else a fresh temp dir (``prefix``) that
    ``stop()`` removes. Subclasses define ``start()`` and call ``_start()`` from it.
    """

    #: Name in the "--- NAME log tail ---" printed when a ``with`` block fails (None: none).
    log_label: str | None = None

    def __init__(self, workdir: Path | None, *, prefix: str, log_name: str) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix)) if workdir is None else workdir
        self.log_path = self.workdir / log_name
        self._proc: LoggedProcess | None = None
        self.startup_s: float | None = None

    def start(self, deadline_s: float = 30.0) -> Self:
        raise NotImplementedError

    def _start(
        self,
        argv: Sequence[str],
        ready: str | Callable[[subprocess.Popen[bytes]], object],
        *,
        ok: Collection[int] = (200,),
        env: Mapping[str, str] | None = None,
        deadline_s: float = 30.0,
        then: Callable[[], object] | None = None,
    ) -> None:
        """Spawn ``argv`` (cwd = work dir, output to the log), wait until ``ready`` (a URL
        that must answer with a status in ``ok``, or a callable given the Popen), run
        ``then``; on any failure stop (and clean up) before re-raising."""
        t0 = time.monotonic()
        self._proc = LoggedProcess(argv, self.log_path, env=env, cwd=self.workdir)
        try:
            if isinstance(ready, str):
                wait_http(ready, deadline_s, ok=set(ok), proc=self._proc.proc, log=self.log_path)
            else:
                ready(self._proc.proc)
            if then is not None:
                then()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0

    def _stop_proc(self) -> int | None:
        """Stop the child by PID (if running); return the PID it had."""
        if self._proc is None:
            return None
        pid = self._proc.pid
        self._proc.stop()
        self._proc = None
        return pid

    def _remove_own_dir(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def stop(self) -> None:
        """Stop the child, then remove the work dir if it is our own."""
        self._stop_proc()
        self._remove_own_dir()

    @property
    def pid(self) -> int:
        """PID of the running server process."""
        if self._proc is None:
            raise RuntimeError("not running")
        return self._proc.pid

    def log_tail(self) -> str:
        return tail_file(self.log_path)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if et is not None and self.log_label is not None:
            sys.stderr.write(f"--- {self.log_label} log tail ---\n{self.log_tail()}\n")
        self.stop()


def _unescape_mountinfo(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts_under(root: str | Path) -> list[str]:
    """Mount points at or below ``root`` (from /proc/self/mountinfo), deepest first."""
    base = os.path.realpath(root)
    found: list[str] = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mp = _unescape_mountinfo(line.split()[4])
                if mp == base or mp.startswith(base + "/"):
                    found.append(mp)
    except OSError:
        return []
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_all_under(root: str | Path) -> list[str]:
    """Unmount everything mounted at/below ``root`` (lazy as a fallback); return what was."""
    done = []
    for mp in mounts_under(root):
        r = subprocess.run(["umount", mp], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", mp], capture_output=True, text=True)
        done.append(mp)
    return done


def remove_tree(root: str | Path) -> None:
    """Unmount whatever is left below ``root``, then delete it.

    Refuses (RuntimeError) to delete a tree that still has something mounted in
    it: rmtree would walk into the mount.
    """
    if not os.path.exists(root):
        return
    unmount_all_under(root)
    left = mounts_under(root)
    if left:
        raise RuntimeError(f"not removing {root}: still mounted: {left}")
    shutil.rmtree(root, ignore_errors=True)


def private_mounts_argv(binds: Sequence[tuple[str | Path, str]], argv: Sequence[str]) -> list[str]:
    """Wrap ``argv`` so it runs in a private mount namespace with each ``(src, target)``
    bind-mounted (src over target) -- how the rig keeps root-only tools from writing
    fixed host paths (/var/lib/containers, /run/..., /opt/containerd).

    ``unshare`` execs ``sh``, which execs ``argv``: the PID stays the tool's own.
    The mounts vanish with the namespace, i.e. when its last process exits.
    """
    for src, target in binds:
        if os.path.realpath(src).startswith(target.rstrip("/") + "/"):
            raise ValueError(f"bind source {src} lies under its own target {target}")
    script = " && ".join(
        f'mount --bind "${{{2 * i + 1}}}" "${{{2 * i + 2}}}"' for i in range(len(binds))
    )
    script += f' && shift {2 * len(binds)} && exec "$@"' if binds else 'exec "$@"'
    flat: list[str] = []
    for src, target in binds:
        flat += [str(src), target]
    return [
        which("unshare"),
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        script,
        "rig-sandbox",
        *flat,
        *argv,
    ]


def can_isolate_mounts() -> bool:
    """True if we are root and ``unshare`` exists (private mount namespaces work)."""
    return os.geteuid() == 0 and shutil.which("unshare") is not None
