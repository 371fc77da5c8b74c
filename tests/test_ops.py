"""Host-service behaviour of a real sidecar process: /metrics, /readyz, systemd notify, the
access log, the cache admin endpoints and ``regsidecar warm``/``cache`` against it.

The S3 store is moto behind a :class:`FaultProxy`, so a test can take the store away.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import require, s3_args
from tests.rig.faultproxy import FaultProxy
from tests.rig.ports import free_port
from tests.rig.skopeo import copy_to_dir
from tests.s3tree import BucketWriter
from tests.sidecar import Sidecar, wait_for

pytestmark = pytest.mark.rig


def _sidecar(proxy: FaultProxy, bucket: str, **kw: Any) -> Sidecar:
    env = {"REGSIDECAR_CACHE_MIN_FREE_BYTES": "0", **kw.pop("env", {})}
    return Sidecar(s3_args(proxy.url, bucket), env=env, **kw)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers


def _pull(sc: Sidecar, repo: str, tag: str) -> list[str]:
    """GET the manifest and every blob (a client pull); the X-Cache of each answer."""
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    status, body, headers = _get(f"{sc.url}/v2/{repo}/manifests/{tag}", accept)
    assert status == 200, body
    outcomes = [headers["X-Cache"]]
    doc = json.loads(body)
    for d in [doc["config"], *doc["layers"]]:
        status, data, headers = _get(f"{sc.url}/v2/{repo}/blobs/{d['digest']}")
        assert status == 200
        assert "sha256:" + hashlib.sha256(data).hexdigest() == d["digest"]
        outcomes.append(headers["X-Cache"])
    return outcomes


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body, headers = _get(url + "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _regsidecar(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGSIDECAR_")}
    env.update(AWS_ACCESS_KEY_ID="rigtestaccesskey", AWS_SECRET_ACCESS_KEY="rigtestsecretkey")
    return subprocess.run(
        [sys.executable, "-m", "regsidecar", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# -- /metrics -------------------------------------------------------------------------------


def test_metrics_parse_and_move_after_a_pull(
    proxy: FaultProxy, bucket: str, writer: BucketWriter
) -> None:
    """Request, cache and upstream series exist, parse with prometheus-client's parser, and a
    cold pull then a warm pull move exactly the counters they should."""
    layers = [os.urandom(300_000), os.urandom(50_000)]
    writer.image("ops/metrics", "v1", layers)
    with _sidecar(proxy, bucket) as sc:
        before = _samples(sc.url)
        assert _value(before, "regsidecar_cache_entries") == 0
        assert _value(before, "regsidecar_cache_max_bytes") == 10 * 1024**3
        cold = _pull(sc, "ops/metrics", "v1")
        warm = _pull(sc, "ops/metrics", "v1")
        after = _samples(sc.url)
    assert cold == ["miss", "miss", "miss", "miss"]
    assert warm == ["hit", "hit", "hit", "hit"]
    req = "regsidecar_http_requests_total"
    assert _value(after, req, route="manifest", method="GET", status="200") == 2
    assert _value(after, req, route="blob", method="GET", status="200") == 6
    assert _value(after, req, route="ops", method="GET", status="200") >= 1  # the first scrape
    hits = "regsidecar_cache_requests_total"
    assert _value(after, hits, kind="blob", outcome="miss") == 3
    assert _value(after, hits, kind="blob", outcome="hit") == 3
    assert _value(after, hits, kind="manifest", outcome="miss") == 1
    assert _value(after, hits, kind="manifest", outcome="hit") == 1
    served = "regsidecar_cache_served_bytes_total"
    layer_bytes = sum(len(x) for x in layers)
    assert _value(after, served, kind="blob", outcome="hit") > layer_bytes
    # Cold blobs go out with sendfile from the growing download: counted too (they were
    # counted as their headers alone).
    assert _value(after, served, kind="blob", outcome="miss") > layer_bytes
    assert _value(after, "regsidecar_cache_entries") == 4  # manifest, config, 2 layers
    assert _value(after, "regsidecar_cache_size_bytes") > layer_bytes
    up = "regsidecar_upstream_requests_total"
    ok = sum(v for (n, labels), v in after.items() if n == up and ("outcome", "ok") in labels)
    assert ok >= 5  # tag link, revision link, manifest, blob links, sizes, downloads
    assert _value(after, up, source="primary", method="GET", outcome="ok") > 0
    hist = "regsidecar_upstream_request_duration_seconds_count"
    assert _value(after, hist, source="primary", method="GET") == _value(
        after, up, source="primary", method="GET", outcome="ok"
    ) + _value(after, up, source="primary", method="GET", outcome="not_found") + _value(
        after, up, source="primary", method="GET", outcome="error"
    )
    assert _value(after, "regsidecar_http_request_duration_seconds_count", route="blob") == 6
    assert ("regsidecar_clock_offset_seconds", ()) in after


def test_access_log_has_route_status_bytes_duration_and_cache_and_no_secrets(
    proxy: FaultProxy, bucket: str, writer: BucketWriter
) -> None:
    writer.image("ops/log", "v1", [os.urandom(10_000)])
    with _sidecar(proxy, bucket) as sc:
        _pull(sc, "ops/log", "v1")
        _get(
            f"{sc.url}/v2/ops/log/manifests/v1?token=s3cr3t",
            {"Authorization": "Bearer s3cr3t", "Accept": "application/json"},
        )
        sc.stop()
        lines = [x for x in sc.logs() if x.get("logger") == "regsidecar.access"]
        raw = sc.log_path.read_text()
    blobs = [x for x in lines if x["route"] == "blob"]
    assert len(blobs) == 2
    for line in blobs:
        assert line["status"] == 200 and line["cache"] == "miss" and line["method"] == "GET"
        assert line["bytes_sent"] > 0 and line["ms"] >= 0
    # The 10,000-byte layer, sent with sendfile while it downloaded, is in its line.
    assert max(x["bytes_sent"] for x in blobs) > 10_000
    assert {x["route"] for x in lines} >= {"manifest", "blob"}
    assert "s3cr3t" not in raw


# -- /readyz --------------------------------------------------------------------------------


def _ready(url: str) -> tuple[int, dict[str, Any]]:
    status, body, _ = _get(url + "/readyz")
    return status, json.loads(body)


def test_readyz_flips_with_the_store_while_the_cache_is_empty(
    proxy: FaultProxy, bucket: str, writer: BucketWriter
) -> None:
    writer.image("ops/ready", "v1", [os.urandom(20_000)])
    with _sidecar(proxy, bucket) as sc:
        assert _ready(sc.url)[0] == 200
        assert _ready(sc.url)[1]["reason"] == "store"
        assert _get(sc.url + "/healthz")[0] == 200
        proxy.down()
        wait_for(lambda: _ready(sc.url)[0] == 503, 15, "readyz 503 with the store down")
        _, detail = _ready(sc.url)
        assert detail["ready"] is False and detail["store"]["reachable"] is False
        assert detail["cache_entries"] == 0
        assert _get(sc.url + "/healthz")[0] == 200  # alive, just not ready
        proxy.up()
        wait_for(lambda: _ready(sc.url)[0] == 200, 15, "readyz 200 with the store back")
        _pull(sc, "ops/ready", "v1")
        proxy.down()
        # The store is gone again, but now the cache can serve.
        wait_for(lambda: _ready(sc.url)[1]["reason"] == "cache", 15, "ready from the cache")
        assert _ready(sc.url)[0] == 200


def test_ops_endpoints_move_to_ops_listen(proxy: FaultProxy, bucket: str) -> None:
    ops_port = free_port()
    with _sidecar(proxy, bucket, env={"REGSIDECAR_OPS_LISTEN": f"127.0.0.1:{ops_port}"}) as sc:
        ops = f"http://127.0.0.1:{ops_port}"
        wait_for(lambda: _get(ops + "/healthz")[0] == 200, 10, "ops listener")
        assert _get(ops + "/readyz")[0] == 200
        assert _get(ops + "/metrics")[0] == 200
        status, body, _ = _get(sc.url + "/metrics")
        assert status == 404 and json.loads(body)["errors"][0]["code"] == "UNSUPPORTED"
        assert _get(sc.url + "/v2/")[0] == 200


# -- systemd notify -------------------------------------------------------------------------


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> list[str]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return [m for _, m in self.messages]
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)


def test_ready_is_notified_only_once_it_serves(
    proxy: FaultProxy, bucket: str, writer: BucketWriter, tmp_path: Path
) -> None:
    """Store down at start: no READY=1 (STATUS says why); store back: READY=1, and at that
    moment a pull works. WATCHDOG=1 pings follow WATCHDOG_USEC; SIGTERM sends STOPPING=1."""
    writer.image("ops/notify", "v1", [os.urandom(5_000)])
    notify = NotifySocket(tmp_path / "notify.sock")
    proxy.down()
    env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"}
    try:
        with _sidecar(proxy, bucket, env=env) as sc:
            # It listens (healthz and /v2/ answer) but cannot serve a pull yet.
            time.sleep(2.5)
            early = notify.drain()
            assert not any("READY=1" in m for m in early), early
            assert any(m.startswith("STATUS=waiting") for m in early), early
            assert _ready(sc.url)[0] == 503
            proxy.up()
            wait_for(lambda: any("READY=1" in m for m in notify.drain()), 15, "READY=1")
            assert _pull(sc, "ops/notify", "v1")[0] == "miss"
            pings = [m for m in notify.drain() if m == "WATCHDOG=1"]
            assert len(pings) >= 5  # every 0.2 s for > 3 s
            assert sc._proc is not None
            os.kill(sc._proc.proc.pid, signal.SIGTERM)
            sc._proc.proc.wait(15)
            assert any(m.startswith("STOPPING=1") for m in notify.drain())
            ready_msgs = [m for m in notify.drain() if "READY=1" in m]
            assert len(ready_msgs) == 1
    finally:
        notify.close()


# -- warm and the cache through the running sidecar ------------------------------------------


def test_warm_fills_the_cache_so_a_pull_works_with_s3_gone(
    proxy: FaultProxy, bucket: str, writer: BucketWriter, tmp_path: Path
) -> None:
    require("skopeo")
    layers = [os.urandom(2 * 1024 * 1024), os.urandom(100_000)]
    digest, _ = writer.image("ops/warm", "v1", layers)
    with _sidecar(proxy, bucket) as sc:
        cp = _regsidecar("warm", "ops/warm:v1", "--json", "--listen", sc.host)
        assert cp.returncode == 0, cp.stderr
        summary = json.loads(cp.stdout)
        assert summary["failed"] == 0 and summary["blobs"] == 3
        assert summary["bytes"] > sum(len(x) for x in layers)
        assert summary["images"][0]["digest"] == digest
        # Human output of a second run: everything was cached already.
        again = _regsidecar("warm", f"localhost:{sc.port}/ops/warm:v1", "--listen", sc.host)
        assert again.returncode == 0, again.stderr
        assert "(3 already cached)" in again.stdout
        proxy.down()
        hits = "regsidecar_cache_requests_total"
        before = _samples(sc.url)
        out = tmp_path / "pulled"
        copy_to_dir(sc.host, "ops/warm:v1", out)
        pulled = sorted(p.stat().st_size for p in out.iterdir() if len(p.name) == 64)
        assert pulled[-2:] == sorted(len(x) for x in layers)
        after = _samples(sc.url)
        # Every blob of the pull came from the cache; nothing needed S3.
        miss = {"kind": "blob", "outcome": "miss"}
        assert _value(after, hits, **miss) == _value(before, hits, **miss)
        gained = _value(after, hits, kind="blob", outcome="hit") - _value(
            before, hits, kind="blob", outcome="hit"
        )
        assert gained >= 3


def test_warm_reports_a_missing_image_and_exits_1(proxy: FaultProxy, bucket: str) -> None:
    with _sidecar(proxy, bucket) as sc:
        cp = _regsidecar("warm", "ops/absent:v9", "--listen", sc.host)
    assert cp.returncode == 1
    assert "FAIL  ops/absent:v9" in cp.stdout and "MANIFEST_UNKNOWN" in cp.stdout


def test_cache_stats_and_gc_go_through_the_running_sidecar(
    proxy: FaultProxy, bucket: str, writer: BucketWriter
) -> None:
    """gc trims to the low watermark through the sidecar (its index stays true: a pull after
    the trim refetches what went); --dry-run removes nothing."""
    layers = [os.urandom(400_000) for _ in range(4)]
    writer.image("ops/gc", "v1", layers)
    env = {"REGSIDECAR_CACHE_MAX_BYTES": "4MiB", "REGSIDECAR_CACHE_LOW_WATERMARK": "0.25"}
    with _sidecar(proxy, bucket, env=env) as sc:
        _pull(sc, "ops/gc", "v1")
        flags = ["--listen", sc.host, "--data-dir", str(sc.data_dir), "--json"]
        stats = json.loads(_regsidecar("cache", "stats", *flags).stdout)
        assert stats["where"] == "sidecar" and stats["entries"] == 6
        files_before = sc.cache_files()
        dry = json.loads(_regsidecar("cache", "gc", "--dry-run", *flags).stdout)
        assert dry["dry_run"] and dry["bytes_freed"] > 0, (stats, dry)
        assert sc.cache_files() == files_before
        gc = json.loads(_regsidecar("cache", "gc", *flags).stdout)
        assert gc["where"] == "sidecar"
        assert [r["digest"] for r in gc["removed"]] == [r["digest"] for r in dry["removed"]]
        assert gc["bytes"] <= 0.25 * 4 * 1024 * 1024
        assert len(sc.cache_files()) == 6 - len(gc["removed"])
        assert _pull(sc, "ops/gc", "v1").count("miss") >= 1  # trimmed blobs come back
        verify = _regsidecar("cache", "verify", *flags)
        assert verify.returncode == 0 and json.loads(verify.stdout)["where"] == "sidecar"
