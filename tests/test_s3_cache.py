"""The pull-through cache over S3 (moto server), with the sidecar as a real process.

Upstream traffic is counted on the S3 side, from moto's own request log.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from regsidecar.storage import layout
from tests.conftest import s3_args
from tests.rig.moto import MotoServer
from tests.s3tree import BucketWriter, digest_of
from tests.sidecar import Sidecar

MiB = 1024 * 1024


@pytest.fixture
def sidecar(moto: MotoServer, bucket: str, tmp_path: Path) -> Iterator[Sidecar]:
    sc = Sidecar(
        s3_args(moto.endpoint_url, bucket),
        data_dir=tmp_path / "data",
        env={"REGSIDECAR_CACHE_MIN_FREE_BYTES": "0"},
    )
    with sc:
        yield sc


async def _get_digest(session: aiohttp.ClientSession, url: str) -> tuple[int, str, int]:
    """(status, sha256 of body, length), streaming so 100 clients do not hold 3 GiB."""
    async with session.get(url) as resp:
        h = hashlib.sha256()
        n = 0
        async for chunk in resp.content.iter_chunked(1 << 20):
            h.update(chunk)
            n += len(chunk)
        return resp.status, "sha256:" + h.hexdigest(), n


async def test_100_concurrent_cold_gets_make_one_download(
    moto: MotoServer, writer: BucketWriter, sidecar: Sidecar
) -> None:
    """100 clients ask for one cold 32 MiB blob at once: all get the right bytes, S3 sees one
    HEAD for its size and at most one GET per 16 MiB part (the first plain GET, joined by a
    ranged one when this busy machine makes it slow; tests/test_ranged.py checks the ranges)."""
    data = os.urandom(32 * MiB)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    mark = moto.mark()
    url = f"{sidecar.url}/v2/app/blobs/{digest}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=240)) as session:
        results = await asyncio.gather(*[_get_digest(session, url) for _ in range(100)])
    assert all(r == (200, digest, len(data)) for r in results), set(results)
    assert 1 <= moto.count("GET", key, since=mark) <= 2
    assert moto.count("HEAD", key, since=mark) == 1
    assert [p.name for p in sidecar.cache_files()] == [digest.split(":")[1]]
    assert sidecar.temp_files() == []


async def test_followers_stream_before_the_download_finishes(
    moto: MotoServer, writer: BucketWriter, sidecar: Sidecar
) -> None:
    """A second client receives bytes while the first download is still running."""
    data = os.urandom(64 * MiB)
    digest = writer.blob("app", data)
    url = f"{sidecar.url}/v2/app/blobs/{digest}"
    async with (
        aiohttp.ClientSession() as session,
        session.get(url) as first,
        session.get(url) as second,
    ):
        assert first.status == second.status == 200
        chunk = await second.content.readexactly(1 * MiB)
        assert chunk == data[: 1 * MiB]
        # The blob is not committed yet: the follower got bytes from the growing file.
        assert sidecar.cache_files() == []
        rest = await second.content.read()
        body = await first.read()
    assert chunk + rest == data
    assert body == data


async def test_range_requests_on_cold_and_cached_blob(
    writer: BucketWriter, sidecar: Sidecar
) -> None:
    """Single ranges answer 206 with Content-Range, cold (streaming) and cached (sendfile)."""
    data = os.urandom(3 * MiB + 17)
    digest = writer.blob("app", data)
    url = f"{sidecar.url}/v2/app/blobs/{digest}"
    async with aiohttp.ClientSession() as session:
        for _ in ("cold", "cached"):
            async with session.get(url, headers={"Range": "bytes=1000-2999999"}) as resp:
                assert resp.status == 206
                assert resp.headers["Content-Range"] == f"bytes 1000-2999999/{len(data)}"
                assert await resp.read() == data[1000:3000000]
            async with session.get(url, headers={"Range": f"bytes={len(data)}-"}) as resp:
                assert resp.status == 416
                assert resp.headers["Content-Range"] == f"bytes */{len(data)}"
                assert (await resp.json())["errors"][0]["code"] == "RANGE_INVALID"
            async with session.get(url) as resp:  # complete the download for the second round
                assert await resp.read() == data
    assert len(Sidecar.cache_files(sidecar)) == 1


async def test_corrupt_upstream_is_never_cached_and_recovers(
    moto: MotoServer, writer: BucketWriter, sidecar: Sidecar
) -> None:
    """Bytes that do not match their digest fail every client and leave nothing in the cache."""
    good = os.urandom(4 * MiB)
    digest = digest_of(good)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    writer.put(layout.blob_data(digest), bytes(bad))
    writer.put(layout.layer_link("app", digest), digest.encode())
    url = f"{sidecar.url}/v2/app/blobs/{digest}"

    async def fetch() -> bytes:
        async with aiohttp.ClientSession() as session, session.get(url) as resp:
            return await resp.read()

    outcomes = await asyncio.gather(*[fetch() for _ in range(5)], return_exceptions=True)
    assert all(isinstance(o, aiohttp.ClientPayloadError) for o in outcomes), outcomes
    assert sidecar.cache_files() == []
    assert sidecar.temp_files() == []
    assert any(e.get("msg") == "blob download failed" for e in sidecar.logs())

    writer.put(layout.blob_data(digest), good)  # the store is repaired
    assert await fetch() == good
    assert [p.name for p in sidecar.cache_files()] == [digest.split(":")[1]]


async def test_restart_serves_cache_hits_without_reading_s3_blob_data(
    moto: MotoServer, bucket: str, writer: BucketWriter, tmp_path: Path
) -> None:
    """A restarted sidecar rebuilds its index from disk and drops leftover temp files."""
    manifest, layers = writer.image("app", "v1", [os.urandom(2 * MiB), os.urandom(1 * MiB)])
    data_dir = tmp_path / "data"
    args = s3_args(moto.endpoint_url, bucket)
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    with Sidecar(args, data_dir=data_dir) as sc:
        async with aiohttp.ClientSession() as session:
            for d in layers:
                assert (await _get_digest(session, f"{sc.url}/v2/app/blobs/{d}"))[1] == d
            async with session.get(f"{sc.url}/v2/app/manifests/v1", headers=accept) as r:
                assert r.status == 200
    leftover = data_dir / "cache" / "tmp" / "deadbeef.partial"
    leftover.write_bytes(b"half a blob")

    mark = moto.mark()
    with Sidecar(args, data_dir=data_dir) as sc:
        assert not leftover.exists()
        async with aiohttp.ClientSession() as session:
            for d in layers:
                status, got, _ = await _get_digest(session, f"{sc.url}/v2/app/blobs/{d}")
                assert (status, got) == (200, d)
            async with session.get(f"{sc.url}/v2/app/manifests/{manifest}", headers=accept) as r:
                assert r.status == 200
                assert digest_of(await r.read()) == manifest
    data_reads = [r for r in moto.requests(since=mark) if "/blobs/" in r.path]
    assert data_reads == [], "cache hits must not read blob or manifest data from S3"


async def test_eviction_keeps_cache_under_max_bytes_while_pulling(
    moto: MotoServer, bucket: str, writer: BucketWriter, tmp_path: Path
) -> None:
    """Pull 12 MiB of distinct blobs, 3 at a time, through a 4 MiB cache: never over 4 MiB."""
    blobs = [os.urandom(1 * MiB) for _ in range(12)]
    digests = [writer.blob("app", b) for b in blobs]
    max_bytes = 4 * MiB
    data_dir = tmp_path / "data"
    sc = Sidecar(
        s3_args(moto.endpoint_url, bucket),
        data_dir=data_dir,
        env={"REGSIDECAR_CACHE_MAX_BYTES": str(max_bytes), "REGSIDECAR_CACHE_MIN_FREE_BYTES": "0"},
    )
    peak = 0
    stop = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, sum(p.stat().st_size for p in sc.cache_files() if p.exists()))
            stop.wait(0.005)

    with sc:
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            sem = asyncio.Semaphore(3)

            async def pull(d: str) -> tuple[int, str, int]:
                async with sem, aiohttp.ClientSession() as session:
                    return await _get_digest(session, f"{sc.url}/v2/app/blobs/{d}")

            results = await asyncio.gather(*[pull(d) for d in digests])
        finally:
            stop.set()
            watcher.join()
        assert [r[1] for r in results] == digests
        final = sum(p.stat().st_size for p in sc.cache_files())
        assert 0 < final <= max_bytes
        assert peak <= max_bytes
        # The most recently pulled blob survives; the first ones were evicted.
        names = {p.name for p in sc.cache_files()}
        assert digests[-1].split(":")[1] in names
        assert digests[0].split(":")[1] not in names


async def test_head_of_a_cold_blob_does_not_download_it(
    moto: MotoServer, writer: BucketWriter, sidecar: Sidecar
) -> None:
    """HEAD answers size and digest from S3 metadata; the blob is not fetched or cached."""
    data = os.urandom(2 * MiB)
    digest = writer.blob("app", data)
    mark = moto.mark()
    url = f"{sidecar.url}/v2/app/blobs/{digest}"
    async with aiohttp.ClientSession() as session, session.head(url) as r:
        assert r.status == 200
        assert int(r.headers["Content-Length"]) == len(data)
        assert r.headers["Docker-Content-Digest"] == digest
    key = layout.blob_data(digest)
    assert moto.count("GET", key, since=mark) == 0
    assert moto.count("HEAD", key, since=mark) == 1
    assert sidecar.cache_files() == []


async def test_client_that_disconnects_mid_stream_does_not_stop_the_download(
    moto: MotoServer, writer: BucketWriter, sidecar: Sidecar
) -> None:
    """The download is detached from the request: it completes, is verified and cached."""
    data = os.urandom(48 * MiB)
    digest = writer.blob("app", data)
    url = f"{sidecar.url}/v2/app/blobs/{digest}"
    async with aiohttp.ClientSession() as session:
        resp = await session.get(url)
        assert resp.status == 200
        await resp.content.readexactly(256 * 1024)
        resp.close()  # hang up mid-blob
    name = digest.split(":")[1]
    for _ in range(500):
        if [p.name for p in sidecar.cache_files()] == [name]:
            break
        await asyncio.sleep(0.02)
    assert [p.name for p in sidecar.cache_files()] == [name]
    async with aiohttp.ClientSession() as session:
        status, got, n = await _get_digest(session, url)
    assert (status, got, n) == (200, digest, len(data))
    logs = sidecar.logs()
    assert not [e for e in logs if e.get("level") == "error"]


async def test_a_cached_file_that_vanished_is_fetched_again_not_a_404(
    moto: MotoServer, writer: BucketWriter, sidecar: Sidecar
) -> None:
    """A cached blob's file removed behind the running sidecar's back (a clean-up run on the
    directory, an operator): the next GET is a miss that fetches it again and answers 200
    with the exact bytes, and the file is back; HEAD too answers 200, not 404."""
    data = os.urandom(3 * MiB + 5)
    digest = writer.blob("app", data)
    url = f"{sidecar.url}/v2/app/blobs/{digest}"
    async with aiohttp.ClientSession() as session:
        assert await _get_digest(session, url) == (200, digest, len(data))
        (cached,) = sidecar.cache_files()
        cached.unlink()
        async with session.head(url) as r:
            assert r.status == 200
            assert r.content_length == len(data)
        assert await _get_digest(session, url) == (200, digest, len(data))
    assert [p.name for p in sidecar.cache_files()] == [cached.name]
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest.split(":")[1]
