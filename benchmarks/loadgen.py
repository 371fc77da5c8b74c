"""Run ``hey`` (the HTTP load generator) against a loopback URL, bounded, and parse its summary.

>>> r = run_hey("http://127.0.0.1:5000/v2/", concurrency=16, duration_s=10)  # doctest: +SKIP
>>> r.req_s, r.p99_ms  # doctest: +SKIP
"""

from __future__ import annotations

import re
import resource
import subprocess
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.rig.ports import assert_loopback
from tests.rig.proc import child_env, stop_process, which

MiB = 1024 * 1024

#: Extra time hey gets beyond its -z duration (connection drain, slow last responses).
SLACK_S = 60.0


@dataclass
class HeyResult:
    """hey's summary for one run; latencies in milliseconds."""

    argv: list[str]
    total_s: float
    requests: int
    req_s: float
    bytes_total: int
    p50_ms: float | None
    p99_ms: float | None
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    error_lines: list[str] = field(default_factory=list)
    client_cpu_s: float = 0.0

    @property
    def mib_s(self) -> float:
        return self.bytes_total / MiB / self.total_s if self.total_s else 0.0

    @property
    def bad(self) -> int:
        """Responses that were not 200, plus transport errors."""
        return self.errors + sum(n for code, n in self.statuses.items() if code != 200)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mib_s"] = round(self.mib_s, 1)
        d["bad"] = self.bad
        return d


_TOTAL = re.compile(r"Total:\s+([\d.]+) secs")
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_DATA = re.compile(r"Total data:\s+(\d+) bytes")
_PCT = re.compile(r"(\d+)%+ in ([\d.]+) secs")
_STATUS = re.compile(r"\[(\d{3})\]\s+(\d+) responses")
_ERROR = re.compile(r"^\s+\[(\d+)\]\s+(.*)$", re.M)


def parse(text: str, argv: Sequence[str] = ()) -> HeyResult:
    """hey's default (summary) output -> HeyResult. Raises ValueError if it has no summary."""
    total = _TOTAL.search(text)
    rps = _RPS.search(text)
    if total is None or rps is None:
        raise ValueError(f"no hey summary in output:\n{text[-2000:]}")
    pct = {int(p): float(s) * 1000 for p, s in _PCT.findall(text)}
    statuses = {int(c): int(n) for c, n in _STATUS.findall(text)}
    errors = 0
    error_lines: list[str] = []
    if "Error distribution:" in text:
        tail = text.split("Error distribution:", 1)[1]
        for n, msg in _ERROR.findall(tail):
            errors += int(n)
            error_lines.append(f"[{n}] {msg.strip()}"[:300])
    data = _DATA.search(text)
    return HeyResult(
        argv=list(argv),
        total_s=float(total.group(1)),
        requests=sum(statuses.values()) + errors,
        req_s=float(rps.group(1)),
        bytes_total=int(data.group(1)) if data else 0,
        p50_ms=pct.get(50),
        p99_ms=pct.get(99),
        statuses=statuses,
        errors=errors,
        error_lines=error_lines[:5],
    )


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_hey(
    url: str,
    *,
    concurrency: int,
    duration_s: float,
    headers: Sequence[str] = (),
    request_timeout_s: int = 30,
) -> HeyResult:
    """``hey -c C -z Ds [-H ...] URL`` against a loopback URL; stopped by PID if it overruns.

    ``client_cpu_s`` is hey's own user+system CPU time (from the rusage of reaped children:
    hey is the only child this process reaps while it runs).
    """
    host = urllib.parse.urlsplit(url).hostname or ""
    assert_loopback(host)
    argv = [which("hey"), "-c", str(concurrency), "-z", f"{duration_s:g}s"]
    argv += ["-t", str(request_timeout_s)]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    cpu0 = _children_cpu_s()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
        start_new_session=True,  # Ctrl-C reaches us, and we stop hey by its PID
    )
    try:
        out, err = proc.communicate(timeout=duration_s + SLACK_S)
    finally:
        stop_process(proc)  # no-op when it has exited; SIGTERM/SIGKILL by PID otherwise
    if proc.returncode != 0:
        raise RuntimeError(f"hey exited {proc.returncode}: {err.decode(errors='replace')[-2000:]}")
    result = parse(out.decode(errors="replace"), argv)
    result.client_cpu_s = round(_children_cpu_s() - cpu0, 2)
    return result
