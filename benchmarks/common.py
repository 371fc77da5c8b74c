"""What the benchmarks share: the run's settings, fixtures (image, servers) and one measured load.

>>> row = loaded("blob", "nginx", ngx.pid, url, concurrency=8, duration_s=10)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import http.client
import os
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.loadgen import HeyResult, run_hey
from benchmarks.procstat import cpu_seconds, machine_busy_s, status_kib
from regsidecar.storage.filesystem import FilesystemDriver
from tests.rig.moto import MotoServer
from tests.rig.ports import assert_loopback
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
TARGET_COLD_VS_DIRECT = 1.3  # cold GET through a fresh sidecar / direct S3 GET, at most
TARGET_CAPPED_SPEEDUP = 5.0  # capped stand-in: direct single GET s / through the sidecar, at least
TARGET_PUSH_VS_DISTRIBUTION = 1.25  # image push to regsidecar / to distribution, at most


def log(msg: str) -> None:
    print(f"[micro {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Config:
    benches: tuple[str, ...]
    duration_s: float
    blob_size: int
    rounds: int
    quiet_wait_s: float
    blob_concurrency: int
    manifest_concurrency: int
    cold_size: int
    capped_size: int
    capped_rate: str
    fanout_clients: int
    fanout_size: int
    rss_blobs: int
    rss_size: int
    rss_interval_s: float
    upload_budget_s: float
    stream_timeout_s: float
    push_mib: int
    json_out: str | None
    quick: bool


# -- small helpers --------------------------------------------------------------------------


class _DirClient:
    """``put_object`` over a directory, so tests.s3tree.BucketWriter writes a registry:2 tree
    on disk with exactly the bytes (and so the digests) it writes into the bucket."""

    def __init__(self, root: Path) -> None:
        self.driver = FilesystemDriver(str(root))

    def put_object(self, *, Bucket: str, Key: str, Body: bytes) -> None:
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
    child processes) measured around it, and what the rest of the machine used meanwhile."""
    log(f"{bench}: hey -c {concurrency} -z {duration_s:g}s against {server}")
    cpu0, busy0 = cpu_seconds(pid), machine_busy_s()
    r: HeyResult = run_hey(url, concurrency=concurrency, duration_s=duration_s, headers=headers)
    server_cpu = cpu_seconds(pid) - cpu0
    other_cpu = machine_busy_s() - busy0 - server_cpu - r.client_cpu_s
    row = {
        "bench": bench,
        "server": server,
        "url": url,
        "concurrency": concurrency,
        **r.as_dict(),
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_pct_of_core": round(100 * server_cpu / r.total_s, 1) if r.total_s else None,
        "other_cpu_s": round(max(0.0, other_cpu), 2),
        "server_rss_mib_after": mib(status_kib(pid, "VmRSS")),
    }
    if r.bad:
        log(f"  WARNING {r.bad} non-200 responses or errors: {r.statuses} {r.error_lines}")
    log(
        f"  {r.req_s:.1f} req/s, {r.mib_s:.1f} MiB/s, p50 {r.p50_ms:.2f} ms, "
        f"p99 {r.p99_ms:.2f} ms, server CPU {server_cpu:.2f} s, hey CPU {r.client_cpu_s:.2f} s, "
        f"rest of the machine {other_cpu:.2f} s"
    )
    return row


def wait_quiet(max_wait_s: float, threshold: float = 0.10, window_s: float = 0.5) -> float:
    """Wait (at most ``max_wait_s``) until the machine's busy CPU over ``window_s`` is below
    ``threshold`` of one core; return the seconds waited. Our own idle servers use ~nothing."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait_s:
        busy0 = machine_busy_s()
        time.sleep(window_s)
        if (machine_busy_s() - busy0) / window_s < threshold:
            break
    return round(time.monotonic() - t0, 1)


def fanout_most_gets(fanout: dict[str, Any]) -> int:
    """The fan-out target: one GET per part of the sidecar's default part size at most (a
    run from before ranged downloads recorded no part size: one GET)."""
    part = fanout.get("part_bytes")
    return -(-fanout["blob_bytes"] // part) if part else 1


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


# -- fixtures -------------------------------------------------------------------------------


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
