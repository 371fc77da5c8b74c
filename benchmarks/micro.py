"""Micro benchmarks: each regsidecar number as a ratio against a peer measured in the same run.

1. ``blob``     cache-hit GET of one blob (16 MiB) at c=8: regsidecar (S3 store on moto, served
                from its disk cache with sendfile) vs nginx (sendfile) serving the very same
                cached file vs distribution (filesystem driver) serving the same blob.
2. ``manifest`` manifest GET by tag at c=16: regsidecar vs distribution over the same registry:2
                tree on disk, regsidecar over S3 (moto, default 30 s tag TTL), and a bare
                aiohttp handler (the framework's ceiling).
3. ``rss``      peak RSS of regsidecar while 20 clients stream cold 256 MiB blobs
                (moto S3 -> sidecar -> aiohttp client here, sha256 verified).

hey is the load generator, always against 127.0.0.1. Every process started here is stopped by
PID and every temp dir removed, also on Ctrl-C or an error. Run from the repository root::

    python -m benchmarks.micro --json benchmarks/results/micro.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import http.client
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

from benchmarks.loadgen import MiB, HeyResult, run_hey
from benchmarks.peers import BareAiohttp, Nginx
from benchmarks.procstat import RssSampler, cpu_seconds, status_kib
from regsidecar.config import parse_size
from regsidecar.storage.filesystem import FilesystemDriver
from tests.rig.moto import MotoServer
from tests.rig.ports import assert_loopback
from tests.rig.proc import which
from tests.rig.registry import Distribution
from tests.s3tree import BucketWriter, digest_of
from tests.sidecar import Sidecar

REPO = "bench/app"
TAG = "v1"
RSS_REPO = "bench/rss"
MANIFEST_ACCEPT = (
    "Accept: application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json"
)
TARGET_BLOB_VS_NGINX = 0.9
TARGET_MANIFEST_VS_DISTRIBUTION = 4.0
TARGET_RSS_MIB = 150.0
BENCHES = ("blob", "manifest", "rss")

# (full, --quick) defaults; an explicit flag wins over both
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "duration": (10.0, 1.0),
    "blob_size": ("16MiB", "1MiB"),
    "rss_blobs": (20, 3),
    "rss_size": ("256MiB", "8MiB"),
    "upload_budget": (180.0, 30.0),
}


def log(msg: str) -> None:
    print(f"[micro {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.micro",
        description=(
            "Measure regsidecar against peers in one run on this machine: cache-hit blob GET "
            "(vs nginx sendfile and distribution), manifest GET by tag (vs distribution and a "
            "bare aiohttp handler), and peak RSS while streaming cold blobs from S3 (moto). "
            "Prints a Markdown table; hey, nginx, docker-registry and moto_server must be on "
            "PATH. Run from the repository root."
        ),
    )
    p.add_argument(
        "--only",
        metavar="LIST",
        default=",".join(BENCHES),
        help=f"comma-separated subset of {','.join(BENCHES)} (default: all)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny smoke run: 1 s loads, 1 MiB blob, 3 x 8 MiB cold blobs (explicit flags win)",
    )
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="hey -z duration of each load, in seconds (default 10; --quick 1)",
    )
    p.add_argument(
        "--blob-size",
        metavar="SIZE",
        help="size of the cache-hit blob, e.g. 16MiB (default 16MiB; --quick 1MiB)",
    )
    p.add_argument(
        "--blob-concurrency",
        type=int,
        default=8,
        metavar="N",
        help="hey -c for the blob GET (default 8)",
    )
    p.add_argument(
        "--manifest-concurrency",
        type=int,
        default=16,
        metavar="N",
        help="hey -c for the manifest GET (default 16)",
    )
    p.add_argument(
        "--rss-blobs",
        type=int,
        metavar="N",
        help="concurrent clients, each reading one distinct cold blob (default 20; --quick 3); "
        "fewer distinct blobs are uploaded if the upload would exceed --upload-budget",
    )
    p.add_argument(
        "--rss-size",
        metavar="SIZE",
        help="size of each cold blob, e.g. 256MiB (default 256MiB; --quick 8MiB)",
    )
    p.add_argument(
        "--rss-interval",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="VmRSS sampling interval (default 0.05)",
    )
    p.add_argument(
        "--upload-budget",
        type=float,
        metavar="SECONDS",
        help="max time to spend generating and uploading the cold blobs to moto; past it, "
        "upload fewer distinct blobs and share each among several clients (default 180)",
    )
    p.add_argument(
        "--stream-timeout",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="bound on the whole cold-stream phase (default 900)",
    )
    p.add_argument("--json", metavar="OUT", help="also write every result as JSON to OUT")
    return p


@dataclass(frozen=True)
class Config:
    benches: tuple[str, ...]
    duration_s: float
    blob_size: int
    blob_concurrency: int
    manifest_concurrency: int
    rss_blobs: int
    rss_size: int
    rss_interval_s: float
    upload_budget_s: float
    stream_timeout_s: float
    json_out: str | None
    quick: bool


def resolve(args: argparse.Namespace) -> Config:
    def pick(name: str) -> Any:
        value = getattr(args, name)
        return value if value is not None else DEFAULTS[name][1 if args.quick else 0]

    benches = tuple(b.strip() for b in args.only.split(",") if b.strip())
    unknown = set(benches) - set(BENCHES)
    if unknown or not benches:
        raise SystemExit(f"--only: expected a subset of {','.join(BENCHES)}, got {args.only!r}")
    return Config(
        benches=benches,
        duration_s=float(pick("duration")),
        blob_size=parse_size(pick("blob_size")),
        blob_concurrency=args.blob_concurrency,
        manifest_concurrency=args.manifest_concurrency,
        rss_blobs=int(pick("rss_blobs")),
        rss_size=parse_size(pick("rss_size")),
        rss_interval_s=args.rss_interval,
        upload_budget_s=float(pick("upload_budget")),
        stream_timeout_s=args.stream_timeout,
        json_out=args.json,
        quick=args.quick,
    )


# -- small helpers --------------------------------------------------------------------------


class _DirClient:
    """``put_object`` over a directory, so tests.s3tree.BucketWriter writes a registry:2 tree
    on disk with exactly the bytes (and so the digests) it writes into the bucket."""

    def __init__(self, root: Path) -> None:
        self.driver = FilesystemDriver(str(root))

    def put_object(self, *, Bucket: str, Key: str, Body: bytes) -> None:  # noqa: N803 (boto3)
        self.driver.put(Key, Body)


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One GET on loopback: (status, headers, body)."""
    u = urllib.parse.urlsplit(url)
    assert u.hostname is not None
    assert_loopback(u.hostname)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.request("GET", u.path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def expect(url: str, digest: str, headers: dict[str, str] | None = None) -> dict[str, str]:
    """GET ``url`` and check it answers 200 with content of ``digest``; return the headers."""
    status, hdrs, body = http_get(url, headers)
    if status != 200 or digest_of(body) != digest:
        raise RuntimeError(f"GET {url}: status {status}, got {digest_of(body)}, want {digest}")
    return hdrs


def s3_args(moto: MotoServer, bucket: str) -> list[str]:
    return [
        "--storage", f"s3://{bucket}",
        "--s3-endpoint-url", moto.endpoint_url,
        "--s3-path-style",
        "--s3-region", "us-east-1",
    ]  # fmt: skip


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def loaded(
    bench: str,
    server: str,
    pid: int,
    url: str,
    concurrency: int,
    duration_s: float,
    headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One hey load against ``url`` with the server's CPU time (utime+stime, all threads and
    child processes) measured around it."""
    log(f"{bench}: hey -c {concurrency} -z {duration_s:g}s against {server}")
    cpu0 = cpu_seconds(pid)
    r: HeyResult = run_hey(url, concurrency=concurrency, duration_s=duration_s, headers=headers)
    server_cpu = cpu_seconds(pid) - cpu0
    row = {
        "bench": bench,
        "server": server,
        "url": url,
        "concurrency": concurrency,
        **r.as_dict(),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_pct_of_core": round(100 * server_cpu / r.total_s, 1) if r.total_s else None,
        "server_rss_mib_after": mib(status_kib(pid, "VmRSS")),
    }
    if r.bad:
        log(f"  WARNING {r.bad} non-200 responses or errors: {r.statuses} {r.error_lines}")
    log(
        f"  {r.req_s:.1f} req/s, {r.mib_s:.1f} MiB/s, p50 {r.p50_ms} ms, p99 {r.p99_ms} ms, "
        f"server CPU {server_cpu:.2f} s, hey CPU {r.client_cpu_s:.2f} s"
    )
    return row


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


# -- the benchmarks -------------------------------------------------------------------------


@dataclass
class Env:
    """Shared fixtures: the registry:2 tree, the bucket with the same objects, the servers."""

    stack: contextlib.ExitStack
    root: Path
    cfg: Config
    moto: MotoServer | None = None
    tree: Path | None = None
    manifest_digest: str = ""
    blob_digest: str = ""
    distribution: Distribution | None = None
    sidecar_s3: Sidecar | None = None


def setup_image(env: Env) -> None:
    """One image (a blob of --blob-size + config + OCI manifest, tagged) written identically to
    a registry:2 tree on disk and to the moto bucket ``bench``."""
    assert env.moto is not None
    blob = os.urandom(env.cfg.blob_size)
    env.tree = env.root / "tree"
    m_fs, layers_fs = BucketWriter(_DirClient(env.tree), "-").image(REPO, TAG, [blob])
    env.moto.create_bucket("bench")
    m_s3, layers_s3 = BucketWriter(env.moto.client(), "bench").image(REPO, TAG, [blob])
    assert (m_fs, layers_fs) == (m_s3, layers_s3), "tree and bucket must hold the same image"
    env.manifest_digest, env.blob_digest = m_fs, layers_fs[0]
    env.distribution = env.stack.enter_context(Distribution(root_dir=env.tree))
    log(f"image {REPO}:{TAG} = {m_fs}; blob {layers_fs[0]} ({env.cfg.blob_size} bytes)")


def start_sidecar(env: Env, args: list[str], name: str) -> Sidecar:
    sc = Sidecar(args, data_dir=env.root / name)
    env.stack.callback(sc.close)
    sc.start()
    log(f"sidecar {name} pid {sc.pid} on {sc.url}")
    return sc


def bench_blob(env: Env) -> dict[str, Any]:
    cfg, d = env.cfg, env.blob_digest
    assert env.moto is not None and env.distribution is not None
    if env.sidecar_s3 is None:
        env.sidecar_s3 = start_sidecar(env, s3_args(env.moto, "bench"), "sidecar-s3")
    sc = env.sidecar_s3
    path = f"/v2/{REPO}/blobs/{d}"
    first = expect(sc.url + path, d).get("X-Cache")
    second = expect(sc.url + path, d).get("X-Cache")
    if (first, second) != ("miss", "hit"):
        raise RuntimeError(f"expected a miss then a hit, got X-Cache {first}, {second}")
    cached = sc.data_dir / "cache" / "blobs" / "sha256" / d.split(":")[1]
    if not cached.is_file():
        raise RuntimeError(f"warmed blob not found at {cached}")
    ngx_path = f"/sha256/{cached.name}"
    ngx = env.stack.enter_context(Nginx(cached.parent.parent, ready_path=ngx_path))
    expect(ngx.url + ngx_path, d)
    expect(env.distribution.url + path, d)

    c, t = cfg.blob_concurrency, cfg.duration_s
    rows = [
        loaded("blob", "regsidecar (S3 on moto, cache hit)", sc.pid, sc.url + path, c, t),
        loaded("blob", "nginx sendfile (same cached file)", ngx.pid, ngx.url + ngx_path, c, t),
        loaded(
            "blob",
            "distribution (filesystem driver)",
            env.distribution._proc.pid if env.distribution._proc else 0,
            env.distribution.url + path,
            c,
            t,
        ),
    ]
    ngx.stop()
    return {
        "blob_bytes": cfg.blob_size,
        "cached_file": str(cached),
        "rows": rows,
        "ratios": {
            "sidecar/nginx req/s": ratio(rows[0]["req_s"], rows[1]["req_s"]),
            "sidecar/distribution req/s": ratio(rows[0]["req_s"], rows[2]["req_s"]),
        },
    }


def bench_manifest(env: Env) -> dict[str, Any]:
    cfg, md = env.cfg, env.manifest_digest
    assert env.moto is not None and env.distribution is not None and env.tree is not None
    accept = {"Accept": MANIFEST_ACCEPT.split(": ", 1)[1]}
    path = f"/v2/{REPO}/manifests/{TAG}"
    sc_fs = start_sidecar(env, ["--storage", str(env.tree)], "sidecar-fs")
    if env.sidecar_s3 is None:
        env.sidecar_s3 = start_sidecar(env, s3_args(env.moto, "bench"), "sidecar-s3")
    sc_s3 = env.sidecar_s3
    bare = env.stack.enter_context(BareAiohttp(None))
    dist = env.distribution
    for url in (sc_fs.url, sc_s3.url, dist.url):
        h = expect(url + path, md, accept)  # also warms the sidecars' tag and manifest caches
        if h.get("Docker-Content-Digest") != md:
            raise RuntimeError(f"{url}: Docker-Content-Digest {h.get('Docker-Content-Digest')}")

    c, t, hh = cfg.manifest_concurrency, cfg.duration_s, (MANIFEST_ACCEPT,)
    dist_pid = dist._proc.pid if dist._proc else 0
    rows = [loaded("manifest", "bare aiohttp handler (small JSON)", bare.pid, bare.url + "/", c, t)]
    rows.append(loaded("manifest", "regsidecar (filesystem tree)", sc_fs.pid, sc_fs.url + path, c, t, hh))
    mark = env.moto.mark()
    rows.append(loaded("manifest", "regsidecar (S3 on moto, tag TTL 30 s)", sc_s3.pid, sc_s3.url + path, c, t, hh))
    rows[-1]["s3_requests_during_load"] = len(env.moto.requests(since=mark))
    rows.append(loaded("manifest", "distribution (filesystem driver, same tree)", dist_pid, dist.url + path, c, t, hh))
    bare.stop()
    sc_fs.stop()
    by = {r["server"]: r["req_s"] for r in rows}
    fs, s3, dr, ba = (by[r["server"]] for r in rows[1:]), None, None, None  # placeholder
    del fs, s3, dr, ba
    bare_rps, fs_rps, s3_rps, dist_rps = (r["req_s"] for r in rows)
    return {
        "rows": rows,
        "ratios": {
            "sidecar-fs/distribution req/s": ratio(fs_rps, dist_rps),
            "sidecar-s3/distribution req/s": ratio(s3_rps, dist_rps),
            "sidecar-fs/bare aiohttp req/s": ratio(fs_rps, bare_rps),
        },
    }
