"""A cold blob from an S3 stand-in that caps each connection, as S3 does.

``capped``: one client GETs a blob (256 MiB) nobody has cached, in interleaved rounds, three
ways over the same stand-in (:class:`tests.rig.cappeds3.CappedS3`: nginx ``limit_rate`` per
connection, 40 MiB/s by default, serving a registry:2 tree path-style as the bucket):

* **direct**: one GET of the object, as any single-stream client (or a one-connection
  sidecar) gets it;
* **regsidecar**: through a freshly started sidecar with its default download settings
  (parallel ranged parts once one connection proves too slow);
* **distribution**: through distribution 2.8 (``docker-registry``) on the same stand-in, as
  a central registry would serve a cold pull.

Every body is sha256-checked by the client. nginx's access log gives, per round, the GETs of
the blob's data, their Range headers, the connections they used and the bytes sent; the
sidecar's "blob cached" log line gives its parts, requests and most connections at once.

What the stand-in does not model (see its module docstring): time to first byte, SlowDown or
request-rate limits, per-prefix limits; the cap is nginx's pacing (within ~7%).
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from typing import Any

from benchmarks.coldstream import timed_get
from benchmarks.common import Env, _DirClient, log, ratio, wait_quiet
from benchmarks.loadgen import MiB
from regsidecar.storage import layout
from tests.rig.cappeds3 import CappedS3
from tests.rig.registry import Distribution
from tests.s3tree import BucketWriter
from tests.sidecar import Sidecar

CAPPED_REPO = "bench/capped"


def _seed(env: Env) -> tuple[str, str, Any]:
    """A random blob of ``capped_size`` in a registry:2 tree on disk: (digest, key, store)."""
    store = env.root / "capped-store"
    data = os.urandom(env.cfg.capped_size)
    digest = BucketWriter(_DirClient(store), "-").blob(CAPPED_REPO, data)
    del data
    return digest, layout.blob_data(digest), store


def _data_requests(s3: CappedS3, mark: int, key: str) -> dict[str, Any]:
    gets = [r for r in s3.requests(since=mark) if r.method == "GET" and r.key == key]
    heads = [r for r in s3.requests(since=mark) if r.method == "HEAD" and r.key == key]
    return {
        "s3_data_gets": len(gets),
        "s3_data_heads": len(heads),
        "s3_ranged_gets": sum(1 for g in gets if g.range),
        "s3_connections": len({g.connection for g in gets}),
        "s3_bytes_sent": sum(g.bytes_sent for g in gets),
        "s3_ranges": [g.range or "-" for g in gets],
    }


def _timed(
    env: Env, s3: CappedS3, label: str, url: str, digest: str, key: str, pid: int | None
) -> dict[str, Any]:
    waited = wait_quiet(env.cfg.quiet_wait_s)
    mark = s3.mark()
    pids = [p for p in (pid, s3.nginx_pid) if p is not None]
    r, cpu, me, other = timed_get(url, digest, env.cfg.stream_timeout_s, pids)
    row = {
        "path": label,
        **r,
        "mib_s": round(r["bytes"] / MiB / r["seconds"], 1) if r["seconds"] else None,
        "server_cpu_s": round(cpu[pid], 2) if pid is not None else None,
        "nginx_cpu_s": round(cpu[s3.nginx_pid], 2),
        "client_cpu_s": round(me, 2),
        "other_cpu_s": round(max(0.0, other), 2),
        "waited_for_quiet_s": waited,
        **_data_requests(s3, mark, key),
    }
    log(
        f"capped: {label}: {r['seconds']:.2f} s ({row['mib_s']} MiB/s), status {r['status']}, "
        f"sha256 {'ok' if r['sha256_ok'] else 'BAD'}, {row['s3_data_gets']} GETs of the data "
        f"({row['s3_ranged_gets']} ranged) on {row['s3_connections']} connections"
    )
    return row


def _cached_line(sc: Sidecar, digest: str) -> dict[str, Any]:
    for e in sc.logs():
        if e.get("msg") == "blob cached" and e.get("digest") == digest:
            return {k: e.get(k) for k in ("parts", "part_bytes", "requests", "connections")}
    return {}


def bench_capped(env: Env) -> dict[str, Any]:
    cfg = env.cfg
    t0 = time.monotonic()
    digest, key, store = _seed(env)
    log(f"capped: {cfg.capped_size} bytes written in {time.monotonic() - t0:.1f} s")
    s3 = env.stack.enter_context(CappedS3(store, bucket="capped", rate=cfg.capped_rate))
    dist = env.stack.enter_context(Distribution(s3_endpoint=s3.url, bucket=s3.bucket))
    s3_args = [
        "--storage", f"s3://{s3.bucket}",
        "--s3-endpoint-url", s3.url,
        "--s3-path-style",
        "--s3-region", "us-east-1",
    ]  # fmt: skip
    direct_url = f"{s3.url}/{s3.bucket}/{key}"
    rows: dict[str, list[dict[str, Any]]] = {"direct": [], "sidecar": [], "distribution": []}

    for n in range(cfg.rounds):

        def run_direct() -> None:
            rows["direct"].append(
                _timed(env, s3, "direct single GET", direct_url, digest, key, None)
            )

        def run_sidecar(n: int = n) -> None:
            sc = Sidecar(s3_args, data_dir=env.root / f"sidecar-capped-{n}")
            with sc:
                url = f"{sc.url}/v2/{CAPPED_REPO}/blobs/{digest}"
                row = _timed(env, s3, "through a fresh regsidecar", url, digest, key, sc.pid)
                row.update(_cached_line(sc, digest))
                rows["sidecar"].append(row)
            shutil.rmtree(sc.data_dir, ignore_errors=True)

        def run_distribution() -> None:
            url = f"{dist.url}/v2/{CAPPED_REPO}/blobs/{digest}"
            rows["distribution"].append(
                _timed(env, s3, "through distribution 2.8", url, digest, key, dist.pid)
            )

        steps = [run_direct, run_sidecar, run_distribution]
        for step in steps[n % 3 :] + steps[: n % 3]:  # the order rotates between rounds
            step()
        for kind in rows:
            rows[kind][-1]["round"] = n + 1

    med = {k: statistics.median(r["seconds"] for r in v) for k, v in rows.items()}
    every = [r for v in rows.values() for r in v]
    return {
        "blob_bytes": cfg.capped_size,
        "rate": cfg.capped_rate,
        "rate_bytes_s": s3.rate_bytes,
        **rows,
        "median_s": med,
        "speedup_vs_direct": ratio(med["direct"], med["sidecar"]),
        "speedup_vs_distribution": ratio(med["distribution"], med["sidecar"]),
        "verified_ok": sum(1 for r in every if r["status"] == 200 and r["sha256_ok"]),
        "gets": len(every),
    }
