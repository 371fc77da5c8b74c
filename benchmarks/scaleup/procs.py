"""Processes inside the simulation's namespaces, every one tracked and stopped by PID.

``Procs.spawn`` starts ``ip netns exec NS ARGV`` (``ip`` execs ARGV after entering the
namespace, so the PID we hold is the server's own); ``Procs.run_all`` runs short jobs (probes,
the seed, ``regsidecar warm``) a bounded number at a time, each with a deadline. ``stop``
sends SIGTERM to a whole group at once, waits (bounded), then SIGKILLs what is left.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from benchmarks.scaleup.netns import Topology
from tests.rig.proc import child_env

#: The repository root: the working directory of every child (``python -m benchmarks...``).
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Between SIGTERM and SIGKILL.
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05


def python_argv(module: str, *args: str) -> list[str]:
    """``python -m MODULE ARGS`` with this interpreter (the venv's)."""
    return [sys.executable, "-m", module, *args]


def venv_binary(name: str) -> str:
    """``name`` next to this interpreter (e.g. the venv's ``moto_server``), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    from tests.rig.proc import which

    return which(name)


@dataclass
class Spawned:
    """One child in a namespace; stdout (and stderr, unless ``err_path``) go to files."""

    role: str
    ns: str
    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path | None
    _files: list[IO[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") if self.out_path.exists() else ""

    def errors(self) -> str:
        path = self.err_path or self.out_path
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def close_files(self) -> None:
        for f in self._files:
            f.close()
        self._files.clear()


@dataclass
class JobResult:
    ns: str
    returncode: int | None  # None: killed at the deadline
    stdout: str
    stderr: str


class Procs:
    """Every process this run started in the topology's namespaces."""

    def __init__(self, topo: Topology, logs: Path) -> None:
        self.topo = topo
        self.logs = logs
        self.live: list[Spawned] = []
        self._seq = 0

    def spawn(
        self,
        role: str,
        ns: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        unset: Sequence[str] = (),
        name: str | None = None,
        split_stderr: bool = False,
    ) -> Spawned:
        """Start ``argv`` in ``ns`` (cwd: the repository root, proxies unset)."""
        self._seq += 1
        stem = name or f"{role}-{self._seq}"
        out_path = self.logs / f"{stem}.log"
        err_path = self.logs / f"{stem}.err" if split_stderr else None
        out = open(out_path, "wb")  # noqa: SIM115 -- lives as long as the child
        files: list[IO[bytes]] = [out]
        err: IO[bytes] | int = subprocess.STDOUT
        try:
            if err_path is not None:
                err = open(err_path, "wb")  # noqa: SIM115
                files.append(err)
            proc = subprocess.Popen(
                self.topo.exec_argv(ns, argv),
                env=child_env(dict(env or {}), unset=list(unset)),
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # keep the terminal's Ctrl-C away: we stop it ourselves
            )
        except BaseException:
            for f in files:
                f.close()
            raise
        sp = Spawned(role, ns, proc, out_path, err_path, files)
        self.live.append(sp)
        return sp

    def pids(self, role: str) -> list[int]:
        return [s.pid for s in self.live if s.role == role and s.alive()]

    def stop(self, group: Sequence[Spawned], timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every process of ``group``, wait for all (bounded), SIGKILL the rest."""
        for s in group:
            if s.alive():
                with contextlib.suppress(ProcessLookupError):
                    s.proc.terminate()
        end = time.monotonic() + timeout_s
        for s in group:
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.proc.wait(max(0.0, end - time.monotonic()))
        for s in group:
            if s.alive():
                with contextlib.suppress(ProcessLookupError):
                    s.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    s.proc.wait(timeout_s)
            s.close_files()
        gone = {id(s) for s in group}
        self.live = [s for s in self.live if id(s) not in gone]

    def stop_all(self) -> None:
        self.stop(list(self.live))

    def wait_all(self, group: Sequence[Spawned], deadline_s: float) -> bool:
        """Wait until every process of ``group`` exited; False if the deadline came first."""
        end = time.monotonic() + deadline_s
        while any(s.alive() for s in group):
            if time.monotonic() >= end:
                return False
            time.sleep(POLL_S)
        return True

    def run_all(
        self,
        role: str,
        jobs: Sequence[tuple[str, Sequence[str]]],
        *,
        parallel: int,
        deadline_s: float,
        env: Mapping[str, str] | None = None,
    ) -> list[JobResult]:
        """Run each ``(ns, argv)`` to completion, at most ``parallel`` at once, all within
        ``deadline_s``; jobs still running at the deadline are killed (returncode None)."""
        end = time.monotonic() + deadline_s
        pending = list(enumerate(jobs))
        running: list[tuple[int, Spawned]] = []
        results: dict[int, JobResult] = {}
        try:
            while pending or running:
                while pending and len(running) < parallel:
                    i, (ns, argv) = pending.pop(0)
                    running.append((i, self.spawn(role, ns, argv, env=env, split_stderr=True)))
                for i, sp in list(running):
                    if not sp.alive():
                        results[i] = JobResult(sp.ns, sp.proc.returncode, sp.output(), sp.errors())
                        running.remove((i, sp))
                        self.stop([sp])
                if time.monotonic() >= end:
                    break
                time.sleep(POLL_S)
        finally:
            for i, sp in running:
                self.stop([sp], timeout_s=2.0)
                results[i] = JobResult(sp.ns, None, sp.output(), sp.errors() + "\n[deadline]")
        for i, (ns, _) in pending:
            results[i] = JobResult(ns, None, "", "not started: deadline")
        return [results[i] for i in range(len(jobs))]
