"""Whole-machine CPU use during a pull phase, sampled from ``/proc/stat`` every 0.5 s.

The busy fraction of an interval is (busy jiffies) / (all jiffies) over every core, so 1.0
means both cores busy all the time. Busy is everything but idle and iowait. If the fraction
stays well below 1, the CPUs had room to spare and the network caps bounded the run.

>>> with CpuSampler(roles={"sidecars": pids}) as s:  # doctest: +SKIP
...     pull()
>>> s.summary()  # doctest: +SKIP
{'busy_fraction_max': 0.41, 'busy_fraction_mean': 0.3, 'samples': 52, 'by_role_s': {...}}
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, NamedTuple

from benchmarks.procstat import cpu_seconds


class Stat(NamedTuple):
    """Jiffies since boot, all cores together, from the aggregate ``cpu`` line of /proc/stat.

    ``busy`` is everything but idle and iowait; ``user`` includes nice (and guest time, which
    the kernel already counts in user/nice); ``irq`` is hard + soft interrupts (here mostly
    the network stack: veth, bridge, tbf)."""

    busy: int
    total: int
    user: int = 0
    system: int = 0
    irq: int = 0


def parse_stat_line(line: str) -> Stat:
    fields = line.split()
    if not fields or fields[0] != "cpu":
        raise ValueError(f"not the aggregate cpu line: {line!r}")
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    total = user + nice + system + idle + iowait + irq + softirq + steal
    return Stat(total - idle - iowait, total, user + nice, system, irq + softirq)


def read_stat() -> Stat:
    with open("/proc/stat") as f:
        return parse_stat_line(f.readline())


def busy_fraction(before: Stat, after: Stat) -> float | None:
    """Share of all cores' time that was busy between two samples (None: no time passed)."""
    busy = after.busy - before.busy
    total = after.total - before.total
    if total <= 0:
        return None
    return min(1.0, max(0.0, busy / total))


def breakdown(before: Stat, after: Stat) -> dict[str, float | None]:
    """User, system and interrupt shares of all cores' time between two samples."""
    total = after.total - before.total
    if total <= 0:
        return {"user": None, "system": None, "irq": None}
    return {
        "user": round((after.user - before.user) / total, 3),
        "system": round((after.system - before.system) / total, 3),
        "irq": round((after.irq - before.irq) / total, 3),
    }


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def summarize(fractions: Sequence[float]) -> dict[str, Any]:
    """``busy_fraction_max``/``_mean`` (rounded to 3 places) and the sample count."""
    if not fractions:
        return {
            "busy_fraction_max": None,
            "busy_fraction_mean": None,
            "busy_fraction_p90": None,
            "samples": 0,
        }
    return {
        "busy_fraction_max": round(max(fractions), 3),
        "busy_fraction_mean": round(sum(fractions) / len(fractions), 3),
        "busy_fraction_p90": round(percentile(fractions, 90) or 0.0, 3),
        "samples": len(fractions),
    }


class CpuSampler:
    """Samples /proc/stat (and the CPU seconds of the processes of each role) in a thread.

    ``roles`` maps a role ("moto", "sidecars", ...) to a callable giving its PIDs now; the
    CPU of a role is the growth of its processes' utime+stime between the first and the
    last sample that saw them (a process that exits keeps its last value, so up to one
    interval of its CPU can be missed).
    """

    def __init__(
        self,
        roles: Mapping[str, Callable[[], Sequence[int]]] | None = None,
        interval_s: float = 0.5,
        read: Callable[[], Stat] = read_stat,
    ) -> None:
        self.interval_s = interval_s
        self.roles = dict(roles or {})
        self._read = read
        self.fractions: list[float] = []
        self._edges: list[Stat] = []
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._role_of: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _sample_pids(self) -> None:
        for role, pids in self.roles.items():
            for pid in pids():
                cpu = cpu_seconds(pid, with_children=False)
                if cpu <= 0 and pid not in self._first:
                    continue
                self._first.setdefault(pid, cpu)
                self._last[pid] = max(cpu, self._last.get(pid, 0.0))
                self._role_of[pid] = role

    def _run(self) -> None:
        prev = self._read()
        self._edges = [prev, prev]
        self._sample_pids()
        while True:
            stopped = self._stop.wait(self.interval_s)
            cur = self._read()
            # the last interval is cut short by stop(): it still counts (a phase shorter than
            # one interval gets one sample), unless no tick of time passed at all
            f = busy_fraction(prev, cur)
            if f is not None:
                self.fractions.append(f)
            prev = cur
            self._edges[1] = cur
            self._sample_pids()
            if stopped:
                return

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def by_role_s(self) -> dict[str, float]:
        """CPU seconds each role used while sampled."""
        out = {role: 0.0 for role in self.roles}
        for pid, role in self._role_of.items():
            out[role] += self._last[pid] - self._first[pid]
        return {k: round(v, 2) for k, v in out.items()}

    def summary(self) -> dict[str, Any]:
        return {
            **summarize(self.fractions),
            "by_role_s": self.by_role_s(),
            "shares": breakdown(*self._edges) if self._edges else {},
            "interval_s": self.interval_s,
            "series": [round(f, 2) for f in self.fractions],
        }

    def __enter__(self) -> CpuSampler:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def wait_idle(max_wait_s: float, below: float = 0.4, interval_s: float = 0.5) -> float:
    """Wait (at most ``max_wait_s``) until one interval's busy fraction is under ``below``;
    return the last fraction seen (so a pull starts once the start-up of its processes has
    settled; N idle pullers polling their start file every 10 ms keep it above zero: about
    a third of both cores at N = 40)."""
    end = time.monotonic() + max_wait_s
    prev = read_stat()
    last = 1.0
    while time.monotonic() < end:
        time.sleep(interval_s)
        cur = read_stat()
        last = busy_fraction(prev, cur) or 0.0
        prev = cur
        if last < below:
            break
    return last
