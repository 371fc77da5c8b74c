"""Peak RSS of regsidecar while clients stream cold blobs: S3 (moto) -> sidecar -> client.

The blobs are generated and uploaded one at a time (this process never holds more than one);
the clients are aiohttp in this process, reading, hashing and discarding; VmRSS of the sidecar
is sampled from /proc in a thread. With fewer distinct blobs than clients (upload budget, or
the disk: moto spools each object to a temp file and the sidecar caches it), client i reads
blob i mod k. The sidecar's cache bound is raised to hold every distinct blob, so the run
measures streaming, not eviction.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import shutil
import time
from typing import Any

import aiohttp

from benchmarks.common import (
    RSS_REPO,
    Env,
    log,
    mib,
    s3_args,
    start_sidecar,
    wait_quiet,
)
from benchmarks.loadgen import MiB
from benchmarks.procstat import RssSampler, cpu_seconds, machine_busy_s, status_kib
from tests.s3tree import BucketWriter


async def stream_one(session: aiohttp.ClientSession, url: str, digest: str) -> dict[str, Any]:
    """GET one blob, reading and discarding it while hashing; never holds more than a chunk."""
    t0 = time.monotonic()
    async with session.get(url) as resp:
        h = hashlib.sha256()
        n = 0
        async for chunk in resp.content.iter_chunked(1 << 20):
            h.update(chunk)
            n += len(chunk)
        return {
            "status": resp.status,
            "x_cache": resp.headers.get("X-Cache", ""),
            "bytes": n,
            "sha256_ok": "sha256:" + h.hexdigest() == digest,
            "seconds": round(time.monotonic() - t0, 3),
        }


async def stream_all(urls: list[tuple[str, str]], timeout_s: float) -> list[dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=120)
    connector = aiohttp.TCPConnector(limit=0)  # every client on its own connection, at once
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        return await asyncio.gather(*(stream_one(session, u, d) for u, d in urls))


def timed_get(
    url: str, digest: str, timeout_s: float, pids: list[int]
) -> tuple[dict[str, Any], dict[int, float], float, float]:
    """One streamed GET (:func:`stream_one`) and the CPU seconds meanwhile of each of
    ``pids``, of this client, and of the rest of the machine."""
    cpu0 = {p: cpu_seconds(p) for p in pids}
    me0, busy0 = self_cpu_s(), machine_busy_s()
    [r] = asyncio.run(stream_all([(url, digest)], timeout_s))
    cpu = {p: cpu_seconds(p) - cpu0[p] for p in pids}
    me = self_cpu_s() - me0
    other = machine_busy_s() - busy0 - sum(cpu.values()) - me
    return r, cpu, me, other


def upload_cold_blobs(env: Env) -> dict[str, Any]:
    """Generate and PUT --rss-blobs random blobs to the moto bucket ``rss``, one at a time (the
    process never holds more than one); stop early when the next one would pass the budget."""
    assert env.moto is not None
    cfg = env.cfg
    env.moto.create_bucket("rss")
    writer = BucketWriter(env.moto.client(), "rss")
    digests: list[str] = []
    t0 = time.monotonic()
    per_blob: list[float] = []
    # each blob is on disk twice (moto's spool file, the sidecar's cache): use at most 40% of
    # the free space
    free = shutil.disk_usage(env.root).free
    want = max(1, min(cfg.rss_blobs, int(0.4 * free) // (2 * cfg.rss_size)))
    while len(digests) < want:
        t = time.monotonic()
        data = os.urandom(cfg.rss_size)
        digests.append(writer.blob(RSS_REPO, data))
        del data
        per_blob.append(time.monotonic() - t)
        elapsed = time.monotonic() - t0
        avg = elapsed / len(digests)
        if len(digests) < want and elapsed + avg > cfg.upload_budget_s:
            break
    upload_s = time.monotonic() - t0
    avg = upload_s / len(digests)
    info = {
        "distinct_blobs": len(digests),
        "upload_s": round(upload_s, 1),
        "upload_mib_s": round(len(digests) * cfg.rss_size / MiB / upload_s, 1),
        "per_blob_s": round(avg, 2),
        "estimated_full_upload_s": round(avg * cfg.rss_blobs, 1),
        "reduced": len(digests) < cfg.rss_blobs,
        "reduced_by": (
            "disk space"
            if len(digests) == want < cfg.rss_blobs
            else "upload budget"
            if len(digests) < cfg.rss_blobs
            else ""
        ),
    }
    log(
        f"rss: generated and uploaded {len(digests)} x {cfg.rss_size} bytes to moto in "
        f"{upload_s:.1f} s ({avg:.2f} s per blob)"
        + (" -- budget reached, clients share blobs" if info["reduced"] else "")
    )
    return {"digests": digests, **info}


def self_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def bench_rss(env: Env) -> dict[str, Any]:
    assert env.moto is not None
    cfg = env.cfg
    up = upload_cold_blobs(env)
    digests: list[str] = up.pop("digests")
    cache_bytes = len(digests) * cfg.rss_size + (1 << 30)
    sc = start_sidecar(
        env, [*s3_args(env.moto, "rss"), "--cache-max-bytes", str(cache_bytes)], "sidecar-rss"
    )
    time.sleep(1.0)  # let start-up settle before the baseline
    baseline = status_kib(sc.pid, "VmRSS")
    hwm_before = status_kib(sc.pid, "VmHWM")
    urls = [
        (f"{sc.url}/v2/{RSS_REPO}/blobs/{digests[i % len(digests)]}", digests[i % len(digests)])
        for i in range(cfg.rss_blobs)
    ]
    mark = env.moto.mark()
    moto_pid = env.moto.pid
    waited = wait_quiet(cfg.quiet_wait_s)
    log(f"rss: {len(urls)} clients streaming {len(digests)} cold blobs of {cfg.rss_size} bytes")
    cpu0, moto0, me0 = cpu_seconds(sc.pid), cpu_seconds(moto_pid), self_cpu_s()
    busy0 = machine_busy_s()
    t0 = time.monotonic()
    with RssSampler(sc.pid, cfg.rss_interval_s) as sampler:
        clients = asyncio.run(stream_all(urls, cfg.stream_timeout_s))
    wall = time.monotonic() - t0
    cpu = cpu_seconds(sc.pid) - cpu0
    moto_cpu = cpu_seconds(moto_pid) - moto0
    me = self_cpu_s() - me0
    other = machine_busy_s() - busy0 - cpu - moto_cpu - me
    hwm = status_kib(sc.pid, "VmHWM")
    s3_gets = sum(
        1 for r in env.moto.requests(since=mark) if r.method == "GET" and r.key.endswith("/data")
    )
    total_bytes = sum(c["bytes"] for c in clients)
    ok = sum(1 for c in clients if c["status"] == 200 and c["sha256_ok"])
    cached = len(sc.cache_files())
    left_tmp = len(sc.temp_files())
    result = {
        **up,
        "clients": len(clients),
        "blob_bytes": cfg.rss_size,
        "baseline_rss_mib": mib(baseline),
        "vmhwm_before_stream_mib": mib(hwm_before),
        "peak_rss_sampled_mib": mib(sampler.peak_kib),
        "vmhwm_after_stream_mib": mib(hwm),
        "samples": len(sampler.samples),
        "interval_s": cfg.rss_interval_s,
        "stream_wall_s": round(wall, 1),
        "aggregate_mib_s": round(total_bytes / MiB / wall, 1),
        "client_seconds_min_max": [
            min(c["seconds"] for c in clients),
            max(c["seconds"] for c in clients),
        ],
        "server_cpu_s": round(cpu, 2),
        "server_cpu_pct_of_core": round(100 * cpu / wall, 1),
        "moto_cpu_s": round(moto_cpu, 1),
        "client_cpu_s": round(me, 1),
        "other_cpu_s": round(max(0.0, other), 1),
        "waited_for_quiet_s": waited,
        "verified_ok": ok,
        "x_cache": sorted({c["x_cache"] for c in clients}),
        "s3_blob_gets": s3_gets,
        "cache_files_after": cached,
        "temp_files_after": left_tmp,
        "rss_timeline_mib": [
            (round(t, 2), round(k / 1024, 1))
            for t, k in sampler.samples[:: max(1, len(sampler.samples) // 200)]
        ],
    }
    if ok != len(clients):
        log(f"  WARNING only {ok}/{len(clients)} clients got verified content: {clients}")
    log(
        f"  baseline {result['baseline_rss_mib']} MiB, peak sampled "
        f"{result['peak_rss_sampled_mib']} MiB, VmHWM {result['vmhwm_after_stream_mib']} MiB, "
        f"{wall:.1f} s, {result['aggregate_mib_s']} MiB/s, sidecar CPU {cpu:.1f} s"
    )
    sc.stop()
    return result
