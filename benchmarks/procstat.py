"""CPU time and memory of a server process, read from /proc (Linux).

>>> before = cpu_seconds(pid)  # doctest: +SKIP
>>> with RssSampler(pid, interval_s=0.05) as sampler:  # doctest: +SKIP
...     run_load()
>>> sampler.peak_kib  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
import time
from types import TracebackType

CLK_TCK = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (e.g. nginx's workers), from /proc/*/task/*/children."""
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            out += kids
            stack += kids
    return out


def _own_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the command name may hold spaces and parentheses: split after the last ')'
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is state (field 3); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int, *, with_children: bool = True) -> float:
    """utime+stime of ``pid`` (and its live descendants), in seconds; all threads included."""
    pids = [pid, *descendants(pid)] if with_children else [pid]
    return sum(_own_cpu_s(p) for p in pids)


def status_kib(pid: int, name: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (``VmRSS``, ``VmHWM``...), None if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples VmRSS of ``pid`` every ``interval_s`` in a thread (so a busy event loop in the
    caller cannot delay the samples)."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []  # (seconds since start, kib)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t0 = 0.0

    def _run(self) -> None:
        while True:
            kib = status_kib(self.pid, "VmRSS")
            if kib is not None:
                self.samples.append((time.monotonic() - self._t0, kib))
            if self._stop.wait(self.interval_s):
                return

    def start(self) -> RssSampler:
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    @property
    def peak_kib(self) -> int:
        return max((k for _, k in self.samples), default=0)

    def __enter__(self) -> RssSampler:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (/proc/stat: everything but idle and
    iowait). Across a load, this minus the CPU of the processes we account for is what the
    rest of the machine used (±0.3 s or so: /proc/stat and per-process times are sampled
    differently, and interrupt time lands in either)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK
