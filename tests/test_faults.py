"""S3 faults between the sidecar and the bucket, injected by a real proxy (tests/rig/faultproxy.py).

The sidecar runs as a real process whose S3 endpoint is a :class:`FaultProxy` in front of moto;
images are seeded straight into moto (never through the proxy). Each scenario is bounded in
time and ends by checking the cache: every file under ``<data_dir>/cache/blobs/`` hashes to
its name and nothing is left under ``cache/tmp/``.

The first section is the proxy's own self-test (the rig, not the sidecar), with plain
http.client / boto3 clients against moto through it.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from regsidecar.oci import mediatypes
from regsidecar.storage import layout
from tests.conftest import require
from tests.pullcheck import assert_cache_verified, get_digest, proxied_sidecar, seed_layout
from tests.rig.dockerd import Dockerd
from tests.rig.faultproxy import FaultProxy
from tests.rig.images import build_oci_layout
from tests.rig.moto import MotoServer
from tests.s3tree import BucketWriter, digest_of
from tests.sidecar import Sidecar

pytestmark = pytest.mark.rig

KiB = 1024
MiB = 1024 * 1024
ACCEPT = ", ".join(
    [
        mediatypes.OCI_MANIFEST,
        mediatypes.OCI_INDEX,
        mediatypes.DOCKER_SCHEMA2,
        mediatypes.DOCKER_LIST,
    ]
)


# -- helpers --------------------------------------------------------------------------------


def _sidecar(
    proxy: FaultProxy, bucket: str, data_dir: Path, env: dict[str, str] | None = None
) -> Sidecar:
    """A sidecar whose S3 endpoint is the proxy."""
    return proxied_sidecar(proxy, bucket, data_dir, env)


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


async def _pull(base_url: str, repo: str, ref: str) -> tuple[str, list[str]]:
    """What a client does: the manifest by tag (or digest), then its config and layers, every
    digest checked. Returns (manifest digest, blob digests)."""
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        url = f"{base_url}/v2/{repo}/manifests/{ref}"
        async with session.get(url, headers={"Accept": ACCEPT}) as r:
            body = await r.read()
            assert r.status == 200, (r.status, body[:500])
            digest = digest_of(body)
            assert r.headers["Docker-Content-Digest"] == digest
        manifest = json.loads(body)
        blobs = [manifest["config"]["digest"], *(d["digest"] for d in manifest["layers"])]
        for d in blobs:
            status, got, _, _ = await get_digest(session, f"{base_url}/v2/{repo}/blobs/{d}")
            assert (status, got) == (200, d), f"blob {d}"
    return digest, blobs


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def _is_retry_after(value: str | None) -> bool:
    """A valid Retry-After: delay-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if value is None:
        return False
    if value.isdigit():
        return True
    try:
        return email.utils.parsedate_to_datetime(value) is not None
    except (TypeError, ValueError):
        return False


def _sidecar_5xx(sc: Sidecar) -> list[dict[str, Any]]:
    return [e for e in sc.logs() if e.get("msg") == "request" and int(e.get("status", 0)) >= 500]


# == FaultProxy self-test (the rig, not the sidecar) ========================================

#: moto refuses unsigned reads of private objects: the plain-HTTP self-tests read public ones.
PUBLIC = "public-read"


def _conn(proxy: FaultProxy, timeout_s: float = 10.0) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(proxy.host, proxy.port, timeout=timeout_s)


def _get(
    proxy: FaultProxy, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, dict[str, str]]:
    conn = _conn(proxy)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), dict(resp.getheaders())
    finally:
        conn.close()


@pytest.mark.timeout(60)
def test_faultproxy_forwards_verbatim(moto: MotoServer, bucket: str, proxy: FaultProxy) -> None:
    """[rig self-test] A boto3 client through the proxy: odd keys, query strings, Range, HEAD,
    a multi-MiB PUT body; the log records what passed, moto saw the same requests."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=proxy.url,
        aws_access_key_id=moto.access_key,
        aws_secret_access_key=moto.secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 0}),
    )
    key = "dir with space/ü+plus=eq&amp.bin"
    data = os.urandom(3 * MiB + 5)
    moto_mark = moto.mark()
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="dir with space/ü+")
    assert [o["Key"] for o in listed["Contents"]] == [key]
    got = s3.get_object(Bucket=bucket, Key=key, Range="bytes=100-199")
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["Body"].read() == data[100:200]
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(data)
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data

    # The client has its last byte before the proxy's handler records the end: wait for it.
    log = proxy.wait_for(lambda reqs: all(r.finished is not None for r in reqs))
    assert [(r.method, r.status) for r in log] == [
        ("PUT", 200),
        ("GET", 200),
        ("GET", 206),
        ("HEAD", 200),
        ("GET", 200),
    ]
    assert all(r.completed and r.fault is None for r in log)
    assert proxy.ranges(key) == ["bytes=100-199", None]
    assert [r.bytes_sent for r in proxy.select("GET", key)] == [100, len(data)]
    assert proxy.count("HEAD", key) == 1
    assert "%20" in log[0].path, "the raw, percent-encoded path is logged"
    assert "list-type=2" in log[1].query
    # moto answered exactly these five (nothing added, nothing lost).
    assert [(r.method, r.status) for r in moto.requests(since=moto_mark)] == [
        (r.method, r.status) for r in log
    ]
    assert moto.get(bucket, key) == data


@pytest.mark.timeout(60)
def test_faultproxy_fail_ratio_filters_and_counts(
    moto: MotoServer, bucket: str, proxy: FaultProxy
) -> None:
    """[rig self-test] S3-style XML errors at the given ratio (seeded, so repeatable), limited
    by method, path substring and count; failed requests never reach moto."""
    client = moto.client()
    client.put_object(Bucket=bucket, Key="k1", Body=b"one", ACL=PUBLIC)
    client.put_object(Bucket=bucket, Key="k2", Body=b"two", ACL=PUBLIC)

    proxy.fail_ratio(0.3, seed=7)
    mark = moto.mark()
    outcomes = []
    for _ in range(200):
        status, body, headers = _get(proxy, f"/{bucket}/k1")
        if status == 200:
            assert body == b"one"
        else:
            assert status in (500, 503)
            code = ET.fromstring(body).findtext("Code")
            assert code == {500: "InternalError", 503: "SlowDown"}[status]
            assert headers["Content-Type"] == "application/xml"
        outcomes.append(status)
    failed = [s for s in outcomes if s != 200]
    assert 35 <= len(failed) <= 85, len(failed)
    assert {500, 503} <= set(failed)
    assert proxy.count("GET", "k1", fault="fail") == len(failed)
    assert moto.count("GET", "/k1", since=mark) == 200 - len(failed)

    # Same seed, same request sequence: the same faults.
    proxy.clear()
    proxy.fail_ratio(0.3, seed=7)
    again = [_get(proxy, f"/{bucket}/k1")[0] for _ in range(200)]
    assert again == outcomes
    # ... whatever the interleaving with requests for other paths.
    proxy.clear()
    proxy.fail_ratio(0.5, seed=3)
    alone = [_get(proxy, f"/{bucket}/k2")[0] for _ in range(20)]
    proxy.clear()
    proxy.fail_ratio(0.5, seed=3)
    mixed = []
    for _ in range(20):
        _get(proxy, f"/{bucket}/k1")
        mixed.append(_get(proxy, f"/{bucket}/k2")[0])
    assert mixed == alone and 0 < alone.count(200) < 20

    # Filters: only GETs of k2, only twice.
    proxy.clear()
    fault = proxy.fail(503, method="GET", path_contains="k2", times=2)
    assert _get(proxy, f"/{bucket}/k1")[0] == 200
    conn = _conn(proxy)
    conn.request("HEAD", f"/{bucket}/k2")
    head = conn.getresponse()
    head.read()
    conn.close()
    assert head.status == 200
    assert [_get(proxy, f"/{bucket}/k2")[0] for _ in range(3)] == [503, 503, 200]
    assert fault.applied == 2 and fault.times == 0


@pytest.mark.timeout(60)
def test_faultproxy_reset_after_sends_exactly_n_bytes(
    moto: MotoServer, bucket: str, proxy: FaultProxy
) -> None:
    """[rig self-test] Headers + the first N bytes, then the connection dies short of
    Content-Length; ``times`` bounds it; ``rst=True`` is a TCP reset."""
    data = os.urandom(4 * MiB)
    moto.client().put_object(Bucket=bucket, Key="big", Body=data, ACL=PUBLIC)
    proxy.reset_after(1 * MiB + 3, times=2, method="GET", path_contains="big")
    for _ in range(2):
        conn = _conn(proxy)
        conn.request("GET", f"/{bucket}/big")
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Length") == str(len(data))
        with pytest.raises(http.client.IncompleteRead) as exc:
            resp.read()
        assert exc.value.partial == data[: 1 * MiB + 3]
        conn.close()
    assert _get(proxy, f"/{bucket}/big")[1] == data
    # The client can have every byte before the proxy thread records the request as finished.
    proxy.wait_for(
        lambda reqs: (
            sum(1 for r in reqs if r.method == "GET" and "big" in r.path and r.finished is not None)
            == 3
        )
    )
    gets = proxy.select("GET", "big")
    # A body that ends before the cut is not "reset": the rule stays available.
    moto.client().put_object(Bucket=bucket, Key="small", Body=b"tiny", ACL=PUBLIC)
    short = proxy.reset_after(1 * MiB, times=1, path_contains="small")
    assert _get(proxy, f"/{bucket}/small")[:2] == (200, b"tiny")
    proxy.wait_for(  # the hand-back happens as the proxy finishes the request
        lambda reqs: any("small" in r.path and r.finished is not None for r in reqs)
    )
    assert (short.times, short.applied) == (1, 0)
    assert proxy.select("GET", "small")[0].fault is None
    proxy.remove(short)
    assert [(r.fault, r.bytes_sent, r.completed) for r in gets] == [
        ("reset", 1 * MiB + 3, False),
        ("reset", 1 * MiB + 3, False),
        (None, len(data), True),
    ]

    proxy.reset_after(64 * KiB, times=1, rst=True)
    conn = _conn(proxy)
    conn.request("GET", f"/{bucket}/big")
    resp = conn.getresponse()
    with pytest.raises((http.client.IncompleteRead, ConnectionResetError)):
        resp.read()
    conn.close()


@pytest.mark.timeout(60)
def test_faultproxy_stall_before_and_mid_body(
    moto: MotoServer, bucket: str, proxy: FaultProxy
) -> None:
    """[rig self-test] A stall holds the request; a mid-body stall holds after N bytes until
    it times out or is released."""
    data = os.urandom(2 * MiB)
    moto.client().put_object(Bucket=bucket, Key="s", Body=data, ACL=PUBLIC)
    proxy.stall(0.5, times=1)
    t0 = time.monotonic()
    assert _get(proxy, f"/{bucket}/s")[1] == data
    assert time.monotonic() - t0 >= 0.5
    t0 = time.monotonic()
    assert _get(proxy, f"/{bucket}/s")[1] == data
    assert time.monotonic() - t0 < 0.5

    proxy.stall(60, after_bytes=1 * MiB, times=1, path_contains="/s")
    conn = _conn(proxy)
    conn.request("GET", f"/{bucket}/s")
    resp = conn.getresponse()
    assert resp.read(1 * MiB) == data[: 1 * MiB]
    proxy.wait_for(lambda log: log[-1].bytes_sent == 1 * MiB and log[-1].finished is None)
    time.sleep(0.2)
    assert proxy.requests()[-1].bytes_sent == 1 * MiB, "held after 1 MiB"
    t0 = time.monotonic()
    proxy.release_stalls()
    assert resp.read() == data[1 * MiB :]
    assert time.monotonic() - t0 < 5
    conn.close()
    assert proxy.requests()[-1].fault == "stall"


@pytest.mark.timeout(60)
def test_faultproxy_down_refuses_and_cuts_keepalive_then_up(
    moto: MotoServer, bucket: str, proxy: FaultProxy
) -> None:
    """[rig self-test] down(): new connections refused, an idle keep-alive connection is cut;
    up(): served again on the same port."""
    moto.client().put_object(Bucket=bucket, Key="d", Body=b"data", ACL=PUBLIC)
    conn = _conn(proxy)
    conn.request("GET", f"/{bucket}/d")
    assert conn.getresponse().read() == b"data"
    proxy.down()
    assert not proxy.is_up
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((proxy.host, proxy.port), timeout=2).close()
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        conn.request("GET", f"/{bucket}/d")
        conn.getresponse().read()
    conn.close()
    proxy.up()
    assert _get(proxy, f"/{bucket}/d")[:2] == (200, b"data")


@pytest.mark.timeout(60)
def test_faultproxy_stops_cleanly_with_a_request_stalled(moto: MotoServer, bucket: str) -> None:
    """[rig self-test] Leaving the context with a request held mid-stall ends it at once,
    closes the port and joins the thread."""
    moto.client().put_object(Bucket=bucket, Key="x", Body=b"x", ACL=PUBLIC)
    p = FaultProxy(moto.endpoint_url).start()
    thread = p._thread
    assert thread is not None and thread.is_alive()
    p.stall(300)
    result: list[BaseException | int] = []

    def client() -> None:
        try:
            result.append(_get(p, f"/{bucket}/x")[0])
        except (OSError, http.client.HTTPException) as exc:
            result.append(exc)

    t = threading.Thread(target=client)
    t.start()
    p.wait_for(lambda log: len(log) == 1)
    t0 = time.monotonic()
    p.stop()
    assert time.monotonic() - t0 < 5
    t.join(10)
    assert not t.is_alive() and len(result) == 1
    assert not thread.is_alive()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((p.host, p.port), timeout=2).close()


# == Fault scenarios =========================================================================


@pytest.mark.timeout(120)
def test_docker_pull_succeeds_when_30_percent_of_s3_requests_fail(
    moto: MotoServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    """(1) 30 % of S3 requests answer 500/503: a real ``docker pull`` of a multi-layer image
    through the sidecar succeeds with the pushed digest, and the sidecar's retries hide every
    fault from docker (dockerd retries layers itself, so success alone would not show it).

    Faults are drawn per (method, path, n-th request): with a fixed bucket name and a seeded
    image the run is repeatable. (Each S3 call has 6 attempts at 30 %: about one call in 1,400
    fails all six. Should a change of paths make one of them do so, the failure repeats on
    every run; pick another seed.)"""
    require("dockerd")
    bucket = "faults-docker-5xx"
    moto.create_bucket(bucket)
    writer = BucketWriter(moto.client(), bucket)
    image = build_oci_layout(
        tmp_path / "layout",
        "v1",
        [("linux", "amd64")],
        [512 * KiB, 256 * KiB, 128 * KiB, 64 * KiB],
        seed="faults-5xx",
    )
    seed_layout(writer, "faults/app", "v1", image)
    proxy.fail_ratio(0.3, statuses=(500, 503), seed=2026)
    with _sidecar(proxy, bucket, tmp_path / "data") as sc, Dockerd() as dockerd:
        digest = dockerd.pull(f"localhost:{sc.port}/faults/app:v1", timeout_s=100)
        print(
            f"S3 requests {proxy.count()}, failed by the proxy {proxy.count(fault='fail')}, "
            f"sidecar 5xx answers {len(_sidecar_5xx(sc))}"
        )
        assert digest == image.digest
        assert proxy.count(fault="fail") > 0, "faults were injected"
        assert _sidecar_5xx(sc) == [], "a fault reached the client"
        files = assert_cache_verified(sc)
        plat = image.platforms[0]
        wanted = {_hex(b.digest) for b in (plat.config, *plat.layers)}
        assert wanted <= {f.name for f in files}


@pytest.mark.timeout(120)
async def test_reset_blob_download_resumes_with_range(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """(2) The connection is reset after 1 MiB, three times, while a 64 MiB blob downloads:
    the client gets one uninterrupted 200 with the right bytes; each cut request was resumed
    by a ranged request from exactly the byte it stopped at, never from 0."""
    data = os.urandom(64 * MiB)
    digest = writer.blob("app", data)
    hexd = _hex(digest)
    key = layout.blob_data(digest)  # not the _layers link, whose path holds the digest too
    proxy.reset_after(1 * MiB, times=3, method="GET", path_contains=key)
    with _sidecar(proxy, bucket, tmp_path / "data") as sc:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=100)) as session:
            status, got, n, headers = await get_digest(session, f"{sc.url}/v2/app/blobs/{digest}")
        assert status == 200
        assert int(headers["Content-Length"]) == len(data)
        assert (got, n) == (digest, len(data)), "one uninterrupted stream of the right bytes"

        gets = proxy.select("GET", key)
        resets = [g for g in gets if g.fault == "reset"]
        assert len(resets) == 3
        assert gets[0].range is None or gets[0].range_start == 0
        ranges = [g.range for g in gets[1:]]
        assert all(r is not None and re.fullmatch(r"bytes=\d+-\d*", r) for r in ranges), ranges
        assert all((g.range_start or 0) > 0 for g in gets[1:]), f"a retry began at 0: {ranges}"
        for cut in resets:
            stopped = (cut.range_start or 0) + cut.bytes_sent
            assert any(g.seq > cut.seq and g.range_start == stopped for g in gets), (
                f"nothing resumed at {stopped}: {ranges}"
            )
        # The first (whole-blob) response is dropped where ranged parts took over: what was
        # in flight then is all that is fetched twice.
        total = sum(g.bytes_sent for g in gets)
        assert total <= len(data) + 3 * MiB + 8 * MiB, f"{total} bytes fetched for {len(data)}"
        files = assert_cache_verified(sc)
        assert [f.name for f in files] == [hexd]


@pytest.mark.timeout(120)
async def test_s3_down_serves_known_tags_stale_and_fails_fast_for_unknown(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """(3) S3 stops answering after an image was pulled once: pulling it by tag still works
    once the tag's TTL has passed (stale-if-error serves the last known digest); an image
    never pulled fails with 503 UNAVAILABLE and Retry-After well within the deadline."""
    app, app_blobs = writer.image("app", "v1", [os.urandom(1 * MiB), os.urandom(300 * KiB)])
    other, _ = writer.image("other", "v1", [os.urandom(200 * KiB)])
    env = {"REGSIDECAR_CACHE_TAG_TTL_S": "1", "REGSIDECAR_RETRY_DEADLINE_S": "3"}
    with _sidecar(proxy, bucket, tmp_path / "data", env) as sc:
        digest, blobs = await _pull(sc.url, "app", "v1")
        assert digest == app and set(app_blobs) <= set(blobs)
        # The 1 s tag TTL is honoured: past it, the tag is read from S3 again.
        tag_link = layout.tag_current_link("app", "v1")
        mark = proxy.mark()
        await asyncio.sleep(1.5)
        assert (await _pull(sc.url, "app", "v1"))[0] == app
        assert proxy.count("GET", tag_link, since=mark) >= 1, "tag not re-resolved after TTL"

        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{sc.url}/v2/app/tags/list") as r,
        ):
            assert (r.status, await r.json()) == (200, {"name": "app", "tags": ["v1"]})

        proxy.down()
        await asyncio.sleep(1.5)  # past the tag TTL: the tag must be resolved again
        # The tag list served minutes ago is served again (stale-if-error), not a 503.
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.get(f"{sc.url}/v2/app/tags/list") as r,
        ):
            assert (r.status, await r.json()) == (200, {"name": "app", "tags": ["v1"]})
        t0 = time.monotonic()
        digest, _ = await _pull(sc.url, "app", "v1")
        stale_s = time.monotonic() - t0
        assert digest == app
        assert stale_s < 10, f"stale pull took {stale_s:.1f}s"

        t0 = time.monotonic()
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.get(f"{sc.url}/v2/other/manifests/v1", headers={"Accept": ACCEPT}) as r,
        ):
            body = await r.read()
            elapsed = time.monotonic() - t0
            assert r.status == 503, (r.status, body[:500])
            assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
            assert _is_retry_after(r.headers.get("Retry-After")), r.headers
        assert elapsed < 10, f"503 took {elapsed:.1f}s"

        proxy.up()
        digest, _ = await _pull(sc.url, "other", "v1")
        assert digest == other, "recovers once S3 is back"
        assert_cache_verified(sc)
        print(f"stale pull {stale_s:.2f}s, unavailable answer {elapsed:.2f}s")


@pytest.mark.timeout(120)
async def test_kill_9_mid_download_leaves_no_partial_entry(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """(6) kill -9 of the sidecar in the middle of a large blob download, restart on the same
    data dir: the next pull succeeds and the cache holds no corrupt or partial entry."""
    big = os.urandom(24 * MiB)
    manifest, (big_digest, small_digest) = writer.image("app", "v1", [big, os.urandom(256 * KiB)])
    hexd = _hex(big_digest)
    key = layout.blob_data(big_digest)
    proxy.stall(60, after_bytes=4 * MiB, times=1, method="GET", path_contains=key)
    sc = _sidecar(proxy, bucket, tmp_path / "data")
    try:
        sc.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            resp = await session.get(f"{sc.url}/v2/app/blobs/{big_digest}")
            try:
                assert resp.status == 200
                assert await resp.content.readexactly(2 * MiB) == big[: 2 * MiB]

                def partial() -> bool:
                    tmp = sc.temp_files()
                    return len(tmp) == 1 and tmp[0].stat().st_size == 4 * MiB

                for _ in range(500):
                    if partial():
                        break
                    await asyncio.sleep(0.02)
                assert partial(), f"no 4 MiB temp file: {sc.temp_files()}"
                assert hexd not in {p.name for p in sc.cache_files()}
                sc.kill()
            finally:
                resp.close()
        proxy.clear()
        assert len(sc.temp_files()) == 1, "the crash left its temp file"

        sc.start()
        assert sc.temp_files() == [], "start-up removes leftover temp files"
        digest, blobs = await _pull(sc.url, "app", "v1")
        assert digest == manifest and blobs[1:] == [big_digest, small_digest]
        files = assert_cache_verified(sc)
        assert {hexd, _hex(small_digest)} <= {f.name for f in files}
    finally:
        sc.close()


@pytest.mark.timeout(120)
async def test_corrupted_cache_file_is_detected_and_refetched(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """(7) One byte of a cached blob flipped on disk while the sidecar was stopped: after a
    restart a GET returns the right bytes, the blob was fetched again from S3, and the cache
    file hashes to its name again."""
    data = os.urandom(4 * MiB)
    digest = writer.blob("app", data)
    hexd = _hex(digest)
    url_path = f"/v2/app/blobs/{digest}"
    sc = _sidecar(proxy, bucket, tmp_path / "data")
    try:
        with sc:
            async with aiohttp.ClientSession() as session:
                status, got, _, _ = await get_digest(session, sc.url + url_path)
            assert (status, got) == (200, digest)
            assert [f.name for f in assert_cache_verified(sc)] == [hexd]
        cached = sc.data_dir / "cache" / "blobs" / "sha256" / hexd
        _flip_byte(cached, len(data) // 2)
        assert _sha256_file(cached) != hexd

        sc.start()
        mark = proxy.mark()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            try:
                status, got, n, _ = await get_digest(session, sc.url + url_path)
            except aiohttp.ClientPayloadError as exc:
                pytest.fail(f"the first GET after the restart was cut short: {exc!r}")
            assert (status, got, n) == (200, digest, len(data)), "served the corrupted file"
            refetched = proxy.count("GET", layout.blob_data(digest), since=mark)
            assert refetched >= 1, "the blob's data was not fetched again from S3"
            status, got, _, _ = await get_digest(session, sc.url + url_path)
            assert (status, got) == (200, digest)
        assert [f.name for f in assert_cache_verified(sc)] == [hexd]
    finally:
        sc.close()


@pytest.mark.timeout(60)
async def test_one_deadline_bounds_all_upstream_calls_of_a_request(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """A manifest by tag takes several S3 calls (tag link, revision link, data); with every S3
    answer slowed to 1.3 s and the first attempt of each failing, the client is still answered
    within its one 3 s deadline, not 3 s per call."""
    manifest, _ = writer.image("app", "v1", [os.urandom(100 * KiB)])
    env = {"REGSIDECAR_RETRY_DEADLINE_S": "3"}
    with _sidecar(proxy, bucket, tmp_path / "data", env) as sc:
        proxy.stall(1.3, method="GET")
        # One failure per call: each call alone would finish inside 3 s (1.3 + backoff + 1.3).
        for key in (
            layout.tag_current_link("app", "v1"),
            layout.revision_link("app", manifest),
            layout.blob_data(manifest),
        ):
            proxy.fail(503, times=1, method="GET", path_contains=key)
        t0 = time.monotonic()
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
            session.get(f"{sc.url}/v2/app/manifests/v1", headers={"Accept": ACCEPT}) as r,
        ):
            body = await r.read()
            elapsed = time.monotonic() - t0
        assert r.status in (200, 503), (r.status, body[:300])
        if r.status == 503:
            assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
        assert elapsed < 3 + 1.5, f"answered after {elapsed:.1f}s with a 3 s deadline"
        proxy.clear()


@pytest.mark.timeout(180)
async def test_200_concurrent_pulls_with_a_download_limit_of_8(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """(8) 200 clients each want a different cold blob; at most 8 download at once and 16 may
    wait: the rest get 429 with Retry-After and succeed when they retry. /v2/ stays quick."""
    blobs = [os.urandom(256 * KiB) for _ in range(200)]
    digests = [writer.blob("app", b) for b in blobs]
    env = {
        "REGSIDECAR_LIMITS_MAX_UPSTREAM_DOWNLOADS": "8",
        "REGSIDECAR_LIMITS_MAX_QUEUED_DOWNLOADS": "16",
    }
    with _sidecar(proxy, bucket, tmp_path / "data", env) as sc:
        proxy.stall(0.2, method="GET", path_contains="/blobs/")  # keep downloads in flight
        refused = 0
        base_latency: list[float] = []

        async def pull(session: aiohttp.ClientSession, digest: str) -> str:
            nonlocal refused
            for _ in range(100):
                async with session.get(f"{sc.url}/v2/app/blobs/{digest}") as r:
                    if r.status == 429:
                        refused += 1
                        assert _is_retry_after(r.headers.get("Retry-After"))
                        assert (await r.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
                        await asyncio.sleep(float(r.headers["Retry-After"]) / 4)
                        continue
                    assert r.status == 200
                    return "sha256:" + hashlib.sha256(await r.read()).hexdigest()
            raise AssertionError("never admitted")

        async def probe(session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
            while not stop.is_set():
                t0 = time.monotonic()
                async with session.get(f"{sc.url}/v2/") as r:
                    assert r.status == 200
                base_latency.append(time.monotonic() - t0)
                await asyncio.sleep(0.05)

        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            stop = asyncio.Event()
            prober = asyncio.create_task(probe(session, stop))
            got = await asyncio.gather(*(pull(session, d) for d in digests))
            stop.set()
            await prober
        proxy.clear()
        assert got == digests
        assert refused > 0, "the limit was never reached: the test did not test it"
        assert base_latency and max(base_latency) < 1.0, max(base_latency)
        assert_cache_verified(sc)
        print(f"429s: {refused}, /v2/ max latency {max(base_latency) * 1000:.0f} ms")


@pytest.fixture
def tiny_cache_disk(tmp_path: Path) -> Iterator[Path]:
    """A data dir whose cache/ is an 8 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    data_dir = tmp_path / "data"
    cache_dir = data_dir / "cache"
    cache_dir.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(cache_dir)], check=True)
    try:
        yield data_dir
    finally:
        subprocess.run(["umount", str(cache_dir)], check=False)


@pytest.mark.timeout(120)
async def test_tiny_cache_disk_still_serves_every_pull(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tiny_cache_disk: Path
) -> None:
    """(5) The cache sits on an 8 MiB tmpfs: a 12 MiB blob that can never fit streams through
    uncached; a 6 MiB download whose disk fills up mid-way fails that one response (the client
    retries, as docker does) and is then streamed uncached. No partial file stays behind."""
    big, mid = os.urandom(12 * MiB), os.urandom(6 * MiB)
    big_d, mid_d = writer.blob("app", big), writer.blob("app", mid)
    data_dir = tiny_cache_disk
    cache_dir = data_dir / "cache"
    env = {"REGSIDECAR_CACHE_MAX_BYTES": "100MiB"}
    with _sidecar(proxy, bucket, data_dir, env) as sc:
        async with aiohttp.ClientSession() as session:
            status, got, *_ = await get_digest(session, f"{sc.url}/v2/app/blobs/{big_d}")
            assert (status, got) == (200, big_d)
            assert sc.cache_files() == [] and sc.temp_files() == []

            proxy.stall(30, after_bytes=1 * MiB, times=1, path_contains=layout.blob_data(mid_d))
            first = asyncio.create_task(get_digest(session, f"{sc.url}/v2/app/blobs/{mid_d}"))

            def stalled_at_1mib() -> bool:  # the proxy holds the body after 1 MiB
                files = sc.temp_files()
                return bool(files) and files[0].stat().st_size >= 1 * MiB

            for _ in range(1000):
                if stalled_at_1mib():
                    break
                await asyncio.sleep(0.01)
            assert stalled_at_1mib(), "the download did not reach the stall"
            (cache_dir / "filler").write_bytes(b"\0" * (4 * MiB))  # the disk fills up
            proxy.release_stalls()
            with pytest.raises(aiohttp.ClientPayloadError):
                await first
            status, got, *_ = await get_digest(session, f"{sc.url}/v2/app/blobs/{mid_d}")
            assert (status, got) == (200, mid_d)
        assert sc.temp_files() == []
        assert_cache_verified(sc)
        logs = sc.logs()
    assert any(
        e.get("msg") == "cache disk full or failing; streaming without caching" for e in logs
    )


@pytest.mark.timeout(180)
def test_primary_s3_down_pulls_through_a_fallback_registry(
    moto: MotoServer, bucket: str, proxy: FaultProxy, tmp_path: Path
) -> None:
    """(4) The sidecar's S3 is unreachable; a central registry (distribution, serving the same
    images) is configured as fallback: docker pull succeeds through it, verified and cached."""
    require("dockerd", "docker-registry", "skopeo")
    from tests.rig import skopeo
    from tests.rig.registry import Distribution

    layout_dir = tmp_path / "layout"
    image = build_oci_layout(
        layout_dir, "v1", [("linux", "amd64")], [1 * MiB, 300 * KiB], seed="fallback"
    )
    with Distribution(moto=moto, bucket=bucket) as central:
        pushed = skopeo.push(layout_dir, "v1", central.host, "fb/app:v1", fmt="oci")
        assert pushed == image.digest
        env = {
            "REGSIDECAR_UPSTREAMS": central.url,
            "REGSIDECAR_BREAKER_FAILURES": "2",
            "REGSIDECAR_RETRY_DEADLINE_S": "5",
        }
        proxy.down()  # the sidecar's S3 is gone; the central registry reaches moto directly
        with _sidecar(proxy, bucket, tmp_path / "data", env) as sc, Dockerd() as dockerd:
            t0 = time.monotonic()
            assert dockerd.pull(f"localhost:{sc.port}/fb/app:v1") == image.digest
            elapsed = time.monotonic() - t0
            logs = sc.logs()
            assert any(e.get("msg") == "served from a fallback upstream" for e in logs)
            assert not [e for e in logs if e.get("msg") == "request" and e["status"] >= 500]
            assert_cache_verified(sc)
            assert len(sc.cache_files()) >= 4  # manifest, config, two layers
        proxy.up()
    print(f"pull through the fallback: {elapsed:.2f}s")


@pytest.fixture
def htpasswd_file(tmp_path: Path) -> Path:
    """An htpasswd file (bcrypt) for user puller, password s3cret."""
    require("htpasswd")
    path = tmp_path / "htpasswd"
    cmd = ["htpasswd", "-Bbn", "puller", "s3cret"]
    path.write_text(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    return path


@pytest.mark.timeout(120)
async def test_fallback_registry_with_basic_auth(
    moto: MotoServer,
    bucket: str,
    writer: BucketWriter,
    proxy: FaultProxy,
    tmp_path: Path,
    htpasswd_file: Path,
) -> None:
    """A fallback that requires a login (distribution with htpasswd auth) is used with the
    credentials given in its URL; with a wrong password it is refused and the client gets 503."""
    require("docker-registry")
    from tests.rig.registry import Distribution

    manifest, layers = writer.image("fb2/app", "v1", [os.urandom(200 * KiB)])
    auth = {"auth": {"htpasswd": {"realm": "central", "path": str(htpasswd_file)}}}
    proxy.down()
    with Distribution(moto=moto, bucket=bucket, extra_config=auth) as central:
        host = central.url.removeprefix("http://")
        for password, expect in (("s3cret", 200), ("wrong", 503)):
            env = {
                "REGSIDECAR_UPSTREAMS": f"http://puller:{password}@{host}",
                "REGSIDECAR_RETRY_DEADLINE_S": "5",
            }
            with _sidecar(proxy, bucket, tmp_path / f"data-{password}", env) as sc:
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(
                        f"{sc.url}/v2/fb2/app/manifests/v1",
                        headers={"Accept": mediatypes.OCI_MANIFEST},
                    ) as r,
                ):
                    body = await r.read()
                    assert r.status == expect, body[:300]
                    if expect == 200:
                        assert r.headers["Docker-Content-Digest"] == manifest
                        status, got, *_ = await get_digest(
                            session, f"{sc.url}/v2/fb2/app/blobs/{layers[0]}"
                        )
                        assert (status, got) == (200, layers[0])
                    else:
                        assert json.loads(body)["errors"][0]["code"] == "UNAVAILABLE"
    proxy.up()


@pytest.mark.timeout(120)
async def test_fallback_registry_with_bearer_token_auth(
    moto: MotoServer, bucket: str, writer: BucketWriter, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A fallback behind distribution's token auth: the sidecar follows the Bearer challenge
    to the token server with its basic credentials and pulls with the token it gets."""
    require("docker-registry")
    from tests.rig.registry import Distribution
    from tests.rig.tokenserver import TokenServer

    manifest, layers = writer.image("fb3/app", "v1", [os.urandom(150 * KiB)])
    proxy.down()
    with (
        TokenServer(tmp_path, {"puller": "s3cret"}) as tokens,
        Distribution(moto=moto, bucket=bucket, extra_config=tokens.distribution_auth()) as central,
    ):
        host = central.url.removeprefix("http://")
        env = {
            "REGSIDECAR_UPSTREAMS": f"http://puller:s3cret@{host}",
            "REGSIDECAR_RETRY_DEADLINE_S": "5",
        }
        with _sidecar(proxy, bucket, tmp_path / "data", env) as sc:
            async with aiohttp.ClientSession() as session:
                async with session.get(
                    f"{sc.url}/v2/fb3/app/manifests/v1", headers={"Accept": mediatypes.OCI_MANIFEST}
                ) as r:
                    assert r.status == 200, (await r.read())[:300]
                    assert r.headers["Docker-Content-Digest"] == manifest
                status, got, *_ = await get_digest(
                    session, f"{sc.url}/v2/fb3/app/blobs/{layers[0]}"
                )
                assert (status, got) == (200, layers[0])
        assert tokens.issued >= 1, "the bearer flow was not used"
    proxy.up()


@pytest.mark.timeout(120)
async def test_restart_during_an_outage_still_serves_known_tags(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """(3b) The sidecar restarts while S3 is down (an instance reboot in an outage): the last
    known tags and links were saved in its data dir, so a pulled image still pulls by tag from
    the cache; an image never pulled still gets 503. A damaged state file never stops start-up."""
    app, _ = writer.image("app", "v1", [os.urandom(300 * KiB)])
    writer.image("other", "v1", [os.urandom(100 * KiB)])
    data_dir = tmp_path / "data"
    env = {"REGSIDECAR_RETRY_DEADLINE_S": "3"}
    with _sidecar(proxy, bucket, data_dir, env) as sc:
        assert (await _pull(sc.url, "app", "v1"))[0] == app
    assert (data_dir / "state" / "known-names.json").is_file(), "saved at shutdown"

    proxy.down()
    with _sidecar(proxy, bucket, data_dir, env) as sc:
        assert (await _pull(sc.url, "app", "v1"))[0] == app
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{sc.url}/v2/other/manifests/v1", headers={"Accept": ACCEPT}) as r,
        ):
            assert r.status == 503
        assert any(e.get("msg") == "store unavailable; serving last known state" for e in sc.logs())
    proxy.up()

    (data_dir / "state" / "known-names.json").write_bytes(b'{"tags": [["broken"')
    with _sidecar(proxy, bucket, data_dir, env) as sc:
        assert (await _pull(sc.url, "app", "v1"))[0] == app
        assert any(e.get("msg") == "ignoring unreadable state file" for e in sc.logs())


async def test_a_slow_size_answer_is_waited_for_not_taken_as_missing(
    proxy: FaultProxy, bucket: str, writer: BucketWriter, tmp_path: Path
) -> None:
    """S3 takes 4 s to answer the blob's size HEAD (longer than the 3 s window for
    eventual-consistency retries): the pull waits for it and succeeds; it is not a 404."""
    data = os.urandom(200 * KiB)
    digest = writer.blob("slow/app", data)
    key = layout.blob_data(digest)
    proxy.stall(4.0, times=1, method="HEAD", path_contains=key)
    with _sidecar(proxy, bucket, tmp_path / "d") as sc:
        async with aiohttp.ClientSession() as session:
            status, got, n, _ = await get_digest(session, f"{sc.url}/v2/slow/app/blobs/{digest}")
    assert (status, got, n) == (200, digest, len(data))
    assert [r for r in proxy.requests() if r.method == "HEAD" and key in r.path]
