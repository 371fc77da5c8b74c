"""Slow request heads against a running sidecar: does ``/v2/`` keep answering?

An attacker opens ``--connections`` connections, at most ``--rate`` new ones a second, and
sends each a request head one header line at a time, a line every ``--trickle-s`` seconds,
never finishing it (slowloris). Meanwhile a prober GETs ``/v2/`` on a fresh connection every
``--probe-every-s`` seconds. The sidecar runs with a low file-descriptor limit
(``--nofile``: prlimit), so without a bound on connections the attack exhausts its
descriptors. Reported: probes answered 200 and their latency (p50 / p99 / max), the
attacker's connections the sidecar closed (and how long each stayed open), the sidecar's
log lines about accept errors, its RSS. Loopback only, bounded in count and time::

    python -m benchmarks.slowloris --connections 2000 --duration-s 60 --nofile 1024
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from yarl import URL

PREFIX_LINE = b"GET /v2/ HTTP/1.1\r\n"


@dataclass
class Attack:
    """What the attacker saw."""

    opened: int = 0
    refused: int = 0  # connect() failed (the listen queue or the process out of descriptors)
    closed_by_server: int = 0
    lifetimes: list[float] = field(default_factory=list)  # seconds open, of those closed


@dataclass
class Probes:
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float | int]:
        lat = sorted(self.latencies) or [0.0]
        return {
            "ok": self.ok,
            "failed": self.failed,
            "p50_ms": round(statistics.median(lat) * 1000, 1),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1),
            "max_ms": round(lat[-1] * 1000, 1),
        }


async def _one(host: str, port: int, trickle_s: float, until: float, attack: Attack) -> None:
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, TimeoutError):
        attack.refused += 1
        return
    attack.opened += 1
    try:
        writer.write(PREFIX_LINE)
        n = 0
        while time.monotonic() < until:
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(1024), trickle_s)
            except TimeoutError:
                data = None
            if data is not None:  # b"": closed; bytes: an answer (the head was refused)
                attack.closed_by_server += 1
                attack.lifetimes.append(time.monotonic() - t0)
                return
            writer.write(f"X-Slow-{n}: {'a' * 8}\r\n".encode())
            n += 1
    except (ConnectionError, OSError):
        attack.closed_by_server += 1
        attack.lifetimes.append(time.monotonic() - t0)
    finally:
        writer.close()


async def attack_and_probe(
    url: str,
    *,
    connections: int,
    rate: float,
    duration_s: float,
    trickle_s: float = 1.0,
    probe_every_s: float = 0.1,
    linger_s: float = 0.0,
) -> tuple[Attack, Probes]:
    """Run the attack on ``url`` (the sidecar's base URL) for ``duration_s`` while probing;
    each attacking connection goes on trickling ``linger_s`` longer (to see it closed)."""
    parsed = URL(url)
    host, port = parsed.host or "127.0.0.1", parsed.port or 80
    attack, probes = Attack(), Probes()
    until = time.monotonic() + duration_s
    tasks: list[asyncio.Task[None]] = []

    async def launch() -> None:
        for _ in range(connections):
            if time.monotonic() >= until:
                return
            tasks.append(
                asyncio.ensure_future(_one(host, port, trickle_s, until + linger_s, attack))
            )
            await asyncio.sleep(1 / rate if rate > 0 else 0)

    async def probe() -> None:
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as s:
            while time.monotonic() < until:
                t = time.monotonic()
                try:
                    async with s.get(f"{url}/v2/") as r:
                        await r.read()
                        good = r.status == 200
                except (aiohttp.ClientError, TimeoutError, OSError):
                    good = False
                if good:
                    probes.ok += 1
                    probes.latencies.append(time.monotonic() - t)
                else:
                    probes.failed += 1
                await asyncio.sleep(probe_every_s)

    await asyncio.gather(launch(), probe())
    await asyncio.gather(*tasks, return_exceptions=True)
    return attack, probes


def _main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=500.0, help="new connections per second")
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--trickle-s", type=float, default=1.0)
    ap.add_argument("--nofile", type=int, default=1024, help="the sidecar's fd limit")
    ap.add_argument("--header-timeout-s", type=float, default=10.0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    if args.connections > 20000 or args.duration_s > 600:
        ap.error("bounded: at most 20000 connections and 600 s")
    from benchmarks.procstat import status_kib
    from tests.sidecar import Sidecar  # the rig's process wrapper (loopback, own data dir)

    env = {"REGSIDECAR_LIMITS_HEADER_TIMEOUT_S": str(args.header_timeout_s)}
    sc = Sidecar([], env=env)  # the embedded default store
    sc.argv = ["prlimit", f"--nofile={args.nofile}:{args.nofile}", "--", *sc.argv]
    with sc:
        attack, probes = asyncio.run(
            attack_and_probe(
                sc.url,
                connections=args.connections,
                rate=args.rate,
                duration_s=args.duration_s,
                trickle_s=args.trickle_s,
                linger_s=args.header_timeout_s + 2,
            )
        )
        pid = sc.pid
        rss_kib = status_kib(pid, "VmHWM") if pid is not None else None
        logs = sc.logs()
    accept_lines = [e for e in logs if "accept" in str(e.get("msg", ""))]
    lifetimes = sorted(attack.lifetimes) or [0.0]
    figures = {
        "connections": args.connections,
        "duration_s": args.duration_s,
        "nofile": args.nofile,
        "header_timeout_s": args.header_timeout_s,
        "probes": probes.summary(),
        "attack": {
            "opened": attack.opened,
            "refused": attack.refused,
            "closed_by_server": attack.closed_by_server,
            "open_s_p50": round(statistics.median(lifetimes), 2),
            "open_s_max": round(lifetimes[-1], 2),
        },
        "accept_error_log_lines": len(accept_lines),
        "log_lines": len(logs),
        "rss_peak_mib": round(rss_kib / 1024, 1) if rss_kib else None,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    _main()
