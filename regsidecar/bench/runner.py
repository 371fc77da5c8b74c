"""N pull clients in one process: targets, ramp, start barrier, deadline, result JSON.

Client ``i`` pulls from ``targets[i % len(targets)]`` (one URL for all: a central registry;
one per client: the sidecar of each host) and starts ``i * ramp_s / clients`` after the
first. Every client has ``timeout_s`` from its own start to have the image pulled and
verified; the run as a whole ends by ``ramp_s + timeout_s``. For runs spread over several
processes (one per simulated host), ``ready_file`` is created once the clients are set up
and ``start_file`` is polled every 10 ms before the first request, so they all start
together.

>>> params = PullParams("app:v1", ("http://127.0.0.1:5000",), clients=4)
>>> asyncio.run(run_pull(params))["summary"]["ok"]  # doctest: +SKIP
4
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from yarl import URL

from regsidecar.bench import report
from regsidecar.bench.puller import (
    ClientPull,
    ClientResult,
    Options,
    PullFailure,
    Totals,
    classify,
    new_session,
)
from regsidecar.config import format_size
from regsidecar.warm import parse_image

MAX_CLIENTS = 10_000
POLL_S = 0.01  # how often the start file is looked for
REDRAW_S = 0.1  # the progress line is redrawn at most 10 times a second


@dataclass(frozen=True)
class PullParams:
    """What one ``bench pull`` does. ``to_json`` gives the ``params`` object of the result."""

    image: str
    targets: tuple[str, ...]
    clients: int = 1
    ramp_s: float = 0.0
    concurrency: int = 3
    platform: str = "linux/amd64"
    timeout_s: float = 600.0
    label: str = ""
    connect_timeout_s: float = 30.0
    attempts: int = 5
    retry_delay_s: float = 5.0
    keep_alive: bool = False

    def validate(self) -> None:
        """Raise ValueError naming the first bad value."""
        if not 1 <= self.clients <= MAX_CLIENTS:
            raise ValueError(f"--clients must be between 1 and {MAX_CLIENTS}")
        if not self.targets:
            raise ValueError("no target: give --url URL or --targets FILE")
        for target in self.targets:
            check_url(target)
        parse_image(self.image)
        for name, value in (
            ("--ramp", self.ramp_s),
            ("--retry-delay", self.retry_delay_s),
        ):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number of seconds >= 0")
        for name, value in (
            ("--timeout", self.timeout_s),
            ("--connect-timeout", self.connect_timeout_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a number of seconds > 0")
        if self.concurrency < 1:
            raise ValueError("--concurrency must be at least 1")
        if self.attempts < 1:
            raise ValueError("--attempts must be at least 1")
        parts = self.platform.split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise ValueError(f"--platform must be OS/ARCH[/VARIANT], not {self.platform!r}")

    def target(self, client: int) -> str:
        return self.targets[client % len(self.targets)]

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "clients": self.clients,
            "targets": list(self.targets),
            "ramp_s": self.ramp_s,
            "concurrency": self.concurrency,
            "platform": self.platform,
            "timeout_s": self.timeout_s,
            "label": self.label,
        }


def check_url(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host, else ValueError."""
    try:
        parsed = URL(url)
    except ValueError as exc:
        raise ValueError(f"not a URL: {url!r}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"target must be an http:// or https:// URL: {url!r}")
    return url


def read_targets(lines: Iterable[str]) -> list[str]:
    """Target URLs, one per line; blank lines and ``#`` comments are skipped."""
    out = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line.rstrip("/"))
    return out


def render_line(totals: Totals, elapsed: float) -> str:
    """The progress line: clients done / failed / running, bytes, rate, elapsed.

    >>> render_line(Totals(clients=10, running=3, ok=6, failed=1, bytes=3 << 20), 2.0)
    'clients 7/10 done (6 ok, 1 failed, 3 running)    3.0 MiB    1.5 MiB/s  2.0 s'
    """
    rate = totals.bytes / elapsed if elapsed > 0 else 0.0
    done = totals.ok + totals.failed
    return (
        f"clients {done}/{totals.clients} done ({totals.ok} ok, {totals.failed} failed, "
        f"{totals.running} running) {format_size(totals.bytes):>10} "
        f"{format_size(rate):>10}/s  {elapsed:.1f} s"
    )


async def _progress(stream: TextIO, totals: Totals, started: float) -> None:
    while True:
        _draw(stream, totals, started)
        await asyncio.sleep(REDRAW_S)


def _draw(stream: TextIO, totals: Totals, started: float, end: str = "") -> None:
    stream.write("\r\x1b[K" + render_line(totals, time.monotonic() - started) + end)
    stream.flush()


def raise_fd_limit(clients: int, concurrency: int) -> None:
    """Each client holds up to ``concurrency + 1`` connections: lift the soft open-file
    limit towards the hard one so that a large run is not cut short by EMFILE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = clients * (concurrency + 1) + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, new), hard))


async def wait_for_file(path: Path, deadline_s: float) -> bool:
    """Poll every 10 ms until ``path`` exists (True) or ``deadline_s`` passed (False)."""
    end = time.monotonic() + deadline_s
    # A stat of a local file takes microseconds: not worth a thread per poll.
    while not path.exists():  # noqa: ASYNC240
        if time.monotonic() >= end:
            return False
        await asyncio.sleep(POLL_S)
    return True


async def run_pull(
    params: PullParams,
    *,
    ready_file: Path | None = None,
    start_file: Path | None = None,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Run the clients; return the result object (``benchmarks/FORMATS.md`` section 1)."""
    params.validate()
    name, reference = parse_image(params.image)
    options = Options(
        platform=params.platform,
        concurrency=params.concurrency,
        attempts=params.attempts,
        retry_delay_s=params.retry_delay_s,
    )
    raise_fd_limit(params.clients, params.concurrency)
    totals = Totals(clients=params.clients)
    results = [ClientResult(i, params.target(i)) for i in range(params.clients)]
    sessions = [
        new_session(connect_timeout_s=params.connect_timeout_s, keep_alive=params.keep_alive)
        for _ in range(params.clients)
    ]
    try:
        if ready_file is not None:
            ready_file.touch()  # noqa: ASYNC240 (one local file, once)
        if start_file is not None and not await wait_for_file(start_file, params.timeout_s):
            for r in results:
                r.error, r.error_detail = "timeout", f"{start_file} did not appear in time"
            return _result(params, time.time(), results)
        started_wall, started = time.time(), time.monotonic()
        drawer = None
        if progress is not None:
            drawer = asyncio.create_task(_progress(progress, totals, started))
        try:
            await _run_clients(params, name, reference, options, sessions, results, totals, started)
        finally:
            if drawer is not None and progress is not None:
                drawer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drawer
                _draw(progress, totals, started, "\n")
        return _result(params, started_wall, results)
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)


async def _run_clients(
    params: PullParams,
    name: str,
    reference: str,
    options: Options,
    sessions: list[aiohttp.ClientSession],
    results: list[ClientResult],
    totals: Totals,
    t0: float,
) -> None:
    async def client(i: int) -> None:
        delay = i * params.ramp_s / params.clients
        if delay > 0:
            await asyncio.sleep(max(0.0, t0 + delay - time.monotonic()))
        result = results[i]
        begin = time.monotonic()
        result.offset_s = begin - t0
        totals.running += 1
        pull = ClientPull(sessions[i], result.target, name, reference, result, options, totals)
        deadline = asyncio.timeout(params.timeout_s)
        try:
            async with deadline:
                await pull.run()
            result.ready_s = time.monotonic() - begin
            totals.ok += 1
        except Exception as exc:
            failure = classify(exc)
            if deadline.expired():
                # the whole-pull deadline: say what the client was still waiting for
                waiting = ", ".join(sorted(pull.in_flight)) or "nothing"
                failure = PullFailure(
                    "timeout", f"not pulled after {params.timeout_s:g} s; waiting for {waiting}"
                )
            _fail(result, failure, totals)
        finally:
            totals.running -= 1

    # A safety net over the per-client deadlines (which end every client on their own).
    try:
        async with asyncio.timeout(params.ramp_s + params.timeout_s + 10.0):
            await asyncio.gather(*(client(i) for i in range(params.clients)))
    except TimeoutError:
        for r in results:
            if r.ready_s is None and r.error is None:
                r.error, r.error_detail = "timeout", "the run's deadline passed"


def _fail(result: ClientResult, failure: PullFailure, totals: Totals) -> None:
    result.error, result.error_detail = failure.kind, failure.detail[:500]
    totals.failed += 1


def _result(params: PullParams, started_at: float, results: list[ClientResult]) -> dict[str, Any]:
    clients = [r.to_json() for r in results]
    return {
        "kind": report.KIND,
        "version": report.VERSION,
        "params": params.to_json(),
        "started_at": round(started_at, 6),
        "clients": clients,
        "summary": report.summarize(clients),
    }
