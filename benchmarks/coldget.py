"""Cold blob GETs through regsidecar on S3 (moto): against a direct S3 GET, and fanned out.

``cold``   one client GETs a blob (256 MiB) the sidecar has never seen, through a freshly
           started sidecar, vs the same client GETting the same object straight from moto;
           ``--rounds`` interleaved rounds (the order alternates), medians compared.
``fanout`` 100 clients GET one cold blob through a fresh sidecar at once: moto's request
           log must show at most one GET of the blob's data per part (16 MiB by default), and
           every body must hash right.

The client is the same code for every GET: aiohttp on loopback, a fresh connection, reading
in 1 MiB chunks while hashing (as docker verifies a layer), discarding the bytes.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from collections import Counter
from typing import Any

from benchmarks.coldstream import stream_all, timed_get
from benchmarks.common import Env, log, mib, ratio, s3_args, start_sidecar, wait_quiet
from benchmarks.loadgen import MiB
from benchmarks.procstat import RssSampler, cpu_seconds, status_kib
from regsidecar.config import DownloadSettings
from regsidecar.storage import layout
from tests.s3tree import BucketWriter
from tests.sidecar import Sidecar

COLD_REPO = "bench/cold"


def _upload(env: Env, bucket: str, size: int) -> tuple[str, str, float]:
    """One random blob of ``size`` bytes in ``bucket`` (linked to COLD_REPO): (digest, data key,
    seconds the upload took)."""
    assert env.moto is not None
    env.moto.create_bucket(bucket)
    t0 = time.monotonic()
    data = os.urandom(size)
    digest = BucketWriter(env.moto.client(), bucket).blob(COLD_REPO, data)
    del data
    return digest, layout.blob_data(digest), round(time.monotonic() - t0, 1)


def _fresh_sidecar(env: Env, bucket: str, name: str) -> Sidecar:
    assert env.moto is not None
    return start_sidecar(env, s3_args(env.moto, bucket), name)


def _discard(sc: Sidecar) -> None:
    """Stop a sidecar and remove its data dir (its cache holds the blob)."""
    sc.close()
    shutil.rmtree(sc.data_dir, ignore_errors=True)


def _timed_get(env: Env, label: str, url: str, digest: str, pid: int) -> dict[str, Any]:
    """One GET with the CPU of the server process, moto, this client and the rest meanwhile."""
    assert env.moto is not None
    moto_pid = env.moto.pid
    waited = wait_quiet(env.cfg.quiet_wait_s)
    mark = env.moto.mark()
    r, cpu, me, other = timed_get(url, digest, env.cfg.stream_timeout_s, sorted({pid, moto_pid}))
    reqs = env.moto.requests(since=mark)
    row = {
        "path": label,
        **r,
        "mib_s": round(r["bytes"] / MiB / r["seconds"], 1) if r["seconds"] else None,
        "server_cpu_s": round(cpu[pid], 2) if pid != moto_pid else None,
        "moto_cpu_s": round(cpu[moto_pid], 2),
        "client_cpu_s": round(me, 2),
        "other_cpu_s": round(max(0.0, other), 2),
        "s3_requests": len(reqs),
        "s3_data_gets": sum(1 for q in reqs if q.method == "GET" and q.key.endswith("/data")),
        "waited_for_quiet_s": waited,
    }
    log(
        f"cold: {label}: {r['seconds']:.2f} s ({row['mib_s']} MiB/s), status {r['status']}, "
        f"sha256 {'ok' if r['sha256_ok'] else 'BAD'}, moto CPU {row['moto_cpu_s']} s, "
        f"rest of the machine {row['other_cpu_s']} s"
    )
    return row


def bench_cold(env: Env) -> dict[str, Any]:
    assert env.moto is not None
    cfg = env.cfg
    digest, key, upload_s = _upload(env, "cold", cfg.cold_size)
    # presigned (moto refuses anonymous GETs of a private object): a plain URL for the client
    direct_url = env.moto.client().generate_presigned_url(
        "get_object", Params={"Bucket": "cold", "Key": key}, ExpiresIn=3600
    )
    log(f"cold: {cfg.cold_size} bytes uploaded in {upload_s} s; {cfg.rounds} rounds")
    direct: list[dict[str, Any]] = []
    via: list[dict[str, Any]] = []
    for n in range(cfg.rounds):

        def run_direct() -> None:
            assert env.moto is not None
            direct.append(_timed_get(env, "direct S3 GET (moto)", direct_url, digest, env.moto.pid))

        def run_sidecar(n: int = n) -> None:
            sc = _fresh_sidecar(env, "cold", f"sidecar-cold-{n}")
            url = f"{sc.url}/v2/{COLD_REPO}/blobs/{digest}"
            via.append(_timed_get(env, "through a fresh regsidecar", url, digest, sc.pid))
            _discard(sc)

        order = (run_direct, run_sidecar) if n % 2 == 0 else (run_sidecar, run_direct)
        for step in order:
            step()
        via[-1]["round"] = direct[-1]["round"] = n + 1
    med_direct = statistics.median(r["seconds"] for r in direct)
    med_via = statistics.median(r["seconds"] for r in via)
    return {
        "blob_bytes": cfg.cold_size,
        "upload_s": upload_s,
        "direct": direct,
        "sidecar": via,
        "median_direct_s": med_direct,
        "median_sidecar_s": med_via,
        "ratio": ratio(med_via, med_direct),
        "verified_ok": sum(1 for r in direct + via if r["status"] == 200 and r["sha256_ok"]),
        "gets": len(direct) + len(via),
    }


def bench_fanout(env: Env) -> dict[str, Any]:
    assert env.moto is not None
    cfg = env.cfg
    digest, key, upload_s = _upload(env, "fanout", cfg.fanout_size)
    sc = _fresh_sidecar(env, "fanout", "sidecar-fanout")
    url = f"{sc.url}/v2/{COLD_REPO}/blobs/{digest}"
    baseline = status_kib(sc.pid, "VmRSS")
    waited = wait_quiet(cfg.quiet_wait_s)
    mark = env.moto.mark()
    log(f"fanout: {cfg.fanout_clients} clients GET one cold blob of {cfg.fanout_size} bytes")
    cpu0, t0 = cpu_seconds(sc.pid), time.monotonic()
    with RssSampler(sc.pid, cfg.rss_interval_s) as sampler:
        clients = asyncio.run(
            stream_all([(url, digest)] * cfg.fanout_clients, cfg.stream_timeout_s)
        )
    wall, cpu = time.monotonic() - t0, cpu_seconds(sc.pid) - cpu0
    reqs = env.moto.requests(since=mark)
    data = [q for q in reqs if q.key == key]

    def kind(k: str) -> str:
        return "blob data" if k == key else "link" if k.endswith("/link") else k or "bucket"

    kinds = Counter(f"{q.method} {kind(q.key)}" for q in reqs)
    result = {
        "clients": len(clients),
        "blob_bytes": cfg.fanout_size,
        "part_bytes": DownloadSettings().part_bytes,
        "upload_s": upload_s,
        "s3_data_gets": sum(1 for q in data if q.method == "GET"),
        "s3_requests": dict(sorted(kinds.items())),
        "verified_ok": sum(1 for c in clients if c["status"] == 200 and c["sha256_ok"]),
        "x_cache": dict(Counter(c["x_cache"] for c in clients)),
        "statuses": dict(Counter(str(c["status"]) for c in clients)),
        "wall_s": round(wall, 2),
        "client_seconds_min_max": [
            min(c["seconds"] for c in clients),
            max(c["seconds"] for c in clients),
        ],
        "aggregate_mib_s": round(sum(c["bytes"] for c in clients) / MiB / wall, 1),
        "server_cpu_s": round(cpu, 2),
        "baseline_rss_mib": mib(baseline),
        "peak_rss_sampled_mib": mib(sampler.peak_kib),
        "waited_for_quiet_s": waited,
        "cache_files_after": len(sc.cache_files()),
        "temp_files_after": len(sc.temp_files()),
    }
    log(
        f"  S3 GETs of the blob data {result['s3_data_gets']}, verified "
        f"{result['verified_ok']}/{len(clients)}, X-Cache {result['x_cache']}, {wall:.1f} s"
    )
    _discard(sc)
    return result
