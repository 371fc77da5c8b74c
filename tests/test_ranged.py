"""Cold blobs fetched as parallel ranged GETs into the verified cache.

The sidecar runs as a real process whose S3 endpoint is a FaultProxy in front of moto; blobs
are seeded straight into moto. Most tests use 1 MiB parts from the first request
(``download.part_bytes`` 1MiB, ``download.parallel_after_s`` 0) so a few MiB make many parts;
the proxy's log shows every GET of the blob's data with its Range header.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path

import aiohttp
import pytest

from regsidecar.storage import layout
from tests.conftest import require
from tests.pullcheck import (
    assert_cache_verified,
    assert_no_span_asked_twice,
    get_digest,
    proxied_sidecar,
    seed_layout,
    span_of,
)
from tests.rig import skopeo
from tests.rig.dockerd import Dockerd
from tests.rig.faultproxy import FaultProxy
from tests.rig.images import build_oci_layout
from tests.rig.moto import MotoServer
from tests.rig.registry import Distribution
from tests.s3tree import BucketWriter, digest_of
from tests.sidecar import Sidecar, wait_for

pytestmark = pytest.mark.rig

KiB = 1024
MiB = 1024 * 1024
RANGED = {
    "REGSIDECAR_DOWNLOAD_PART_BYTES": "1MiB",
    "REGSIDECAR_DOWNLOAD_PARALLEL_AFTER_S": "0",
}


def _sidecar(
    proxy: FaultProxy, bucket: str, data_dir: Path, env: dict[str, str] | None = None
) -> Sidecar:
    return proxied_sidecar(proxy, bucket, data_dir, {**RANGED, **(env or {})})


def _parts(size: int, part: int = MiB) -> list[tuple[int, int]]:
    return [(s, min(s + part, size)) for s in range(0, size, part)]


async def _metrics(sc: Sidecar) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{sc.url}/metrics") as r:
        return await r.text()


def _metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert m is not None, f"{name}{labels} not in /metrics"
    return float(m.group(1))


def _most_at_once(gets: list[object]) -> int:
    """The most GETs that were in progress at the same moment, from the proxy's timings."""
    events = []
    for g in gets:
        events.append((g.started, 1))  # type: ignore[attr-defined]
        events.append((g.finished or time.monotonic(), -1))  # type: ignore[attr-defined]
    most = now = 0
    for _, delta in sorted(events):
        now += delta
        most = max(most, now)
    return most


async def _body(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.get(url, headers=headers or {}) as r,
    ):
        return r.status, await r.read()


@pytest.mark.timeout(60)
async def test_a_cold_blob_arrives_as_parallel_parts_each_fetched_once(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """A cold 8 MiB + 12345 byte blob comes as nine 1 MiB ranged GETs, several at once, each
    part asked for once; the client gets one 200 of the exact bytes and the cache holds it."""
    data = os.urandom(8 * MiB + 12345)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    with _sidecar(proxy, bucket, tmp_path / "data") as sc:
        async with aiohttp.ClientSession() as session:
            status, got, n, _ = await get_digest(session, f"{sc.url}/v2/app/blobs/{digest}")
        assert (status, got, n) == (200, digest, len(data))
        gets = proxy.select("GET", key)
        assert sorted(span_of(g, len(data)) for g in gets) == _parts(len(data))
        assert all(g.status == 206 and g.completed for g in gets)
        assert _most_at_once(gets) >= 2, "parts were fetched one after another"
        cached = [e for e in sc.logs() if e.get("msg") == "blob cached"]
        assert [(e["parts"], e["requests"]) for e in cached] == [(9, 9)]
        assert cached[0]["connections"] >= 2
        assert [f.name for f in assert_cache_verified(sc)] == [digest.split(":")[1]]


@pytest.mark.timeout(60)
async def test_a_slow_first_connection_is_joined_by_ranged_parts(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """The start is one plain GET: when that one connection stalls after its first part,
    the rest of the blob is fetched as ranged parts meanwhile, and the stalled response is
    dropped once every byte is in; the pull does not wait for it."""
    data = os.urandom(8 * MiB)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    proxy.stall(20.0, after_bytes=1 * MiB, times=1, method="GET", path_contains=key)
    env = {"REGSIDECAR_DOWNLOAD_PARALLEL_AFTER_S": "0.5"}
    with _sidecar(proxy, bucket, tmp_path / "data", env) as sc:
        t0 = time.monotonic()
        async with aiohttp.ClientSession() as session:
            status, got, n, _ = await get_digest(session, f"{sc.url}/v2/app/blobs/{digest}")
        elapsed = time.monotonic() - t0
        assert (status, got, n) == (200, digest, len(data))
        assert elapsed < 10, f"the pull waited for the stalled connection ({elapsed:.1f} s)"
        gets = proxy.select("GET", key)
        assert gets[0].range is None, "the download starts as one plain GET"
        assert not gets[0].completed
        assert sorted(span_of(g, len(data)) for g in gets[1:]) == _parts(len(data))[1:]
        assert_no_span_asked_twice(gets, len(data))
        assert_cache_verified(sc)


@pytest.mark.timeout(60)
async def test_a_small_blob_is_one_plain_get(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """With the default download settings a blob that one connection fetches quickly costs
    exactly one GET and no Range."""
    data = os.urandom(3 * MiB)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    with proxied_sidecar(proxy, bucket, tmp_path / "data") as sc:
        async with aiohttp.ClientSession() as session:
            status, got, _, _ = await get_digest(session, f"{sc.url}/v2/app/blobs/{digest}")
        assert (status, got) == (200, digest)
        assert [g.range for g in proxy.select("GET", key)] == [None]


@pytest.mark.timeout(60)
async def test_a_reset_part_is_fetched_again_by_itself_from_where_it_stopped(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """Part 3's connection is cut after 300 KiB: only that part is asked for again, from
    byte 3 MiB + 300 KiB to its end; every other part once; the bytes are exact."""
    data = os.urandom(8 * MiB)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    part3 = f"bytes={3 * MiB}-{4 * MiB - 1}"
    proxy.reset_after(300 * KiB, times=1, method="GET", path_contains=key, range_header=part3)
    with _sidecar(proxy, bucket, tmp_path / "data") as sc:
        async with aiohttp.ClientSession() as session:
            status, got, n, _ = await get_digest(session, f"{sc.url}/v2/app/blobs/{digest}")
        assert (status, got, n) == (200, digest, len(data))
        gets = proxy.select("GET", key)
        assert [g.range for g in gets if g.fault == "reset"] == [part3]
        again = [g.range for g in gets if g.fault is None and g.range_start != 3 * MiB]
        resumed = f"bytes={3 * MiB + 300 * KiB}-{4 * MiB - 1}"
        assert resumed in again
        assert len(gets) == 9, [g.range for g in gets]
        assert_no_span_asked_twice([g for g in gets if g.fault is None], len(data))
        assert_cache_verified(sc)


@pytest.mark.timeout(60)
async def test_flipped_bytes_in_one_part_are_never_published_and_the_next_pull_is_exact(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """One byte of part 5 is flipped on the way: the digest does not match, the client's
    response is cut short of its Content-Length, nothing is cached; the next GET fetches the
    blob again and is exact."""
    data = os.urandom(8 * MiB)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    part5 = f"bytes={5 * MiB}-{6 * MiB - 1}"
    proxy.corrupt(1000, times=1, method="GET", path_contains=key, range_header=part5)
    with _sidecar(proxy, bucket, tmp_path / "data") as sc:
        url = f"{sc.url}/v2/app/blobs/{digest}"
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientPayloadError):
                await get_digest(session, url)
        assert [g.fault for g in proxy.select("GET", key) if g.range == part5] == ["corrupt"]
        wait_for(lambda: sc.temp_files() == [], 10, "the failed download's temp file removed")
        assert sc.cache_files() == [], "nothing unverified is published"
        assert _metric(await _metrics(sc), "regsidecar_download_corrupt_total") == 1
        async with aiohttp.ClientSession() as session:
            status, got, n, _ = await get_digest(session, url)
        assert (status, got, n) == (200, digest, len(data))
        assert [f.name for f in assert_cache_verified(sc)] == [digest.split(":")[1]]


@pytest.mark.timeout(60)
async def test_a_range_request_of_a_cold_blob_never_completes_with_unverified_bytes(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """Bytes 0-99 of a cold blob are on disk long before the blob is verified: the 206 still
    waits for the whole blob's digest (a later part is held 2 s: so does the response), and
    when a later part is corrupt the range response is cut short, never completed."""
    data = os.urandom(4 * MiB)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    last = f"bytes={3 * MiB}-{4 * MiB - 1}"
    proxy.stall(2.0, after_bytes=10, times=1, method="GET", path_contains=key, range_header=last)
    with _sidecar(proxy, bucket, tmp_path / "data") as sc:
        url = f"{sc.url}/v2/app/blobs/{digest}"
        t0 = time.monotonic()
        status, body = await _body(url, {"Range": "bytes=0-99"})
        assert (status, body) == (206, data[:100])
        assert time.monotonic() - t0 >= 1.9, "the last byte did not wait for verification"

    data2 = os.urandom(4 * MiB)
    digest2 = writer.blob("app", data2)
    key2 = layout.blob_data(digest2)
    proxy.corrupt(5, times=1, method="GET", path_contains=key2, range_header=last)
    with _sidecar(proxy, bucket, tmp_path / "data2") as sc:
        url = f"{sc.url}/v2/app/blobs/{digest2}"
        with pytest.raises(aiohttp.ClientPayloadError):
            await _body(url, {"Range": "bytes=0-99"})
        wait_for(lambda: sc.temp_files() == [], 10, "the failed download's temp file removed")
        assert await _body(url, {"Range": "bytes=0-99"}) == (206, data2[:100])


@pytest.mark.timeout(90)
async def test_a_range_request_passed_through_waits_for_the_whole_blobs_digest(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """A blob larger than the cache is streamed without caching; a Range request of it is
    still answered only after the whole blob hashed right: corrupt -> cut short; clean ->
    exact."""
    data = os.urandom(6 * MiB)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    proxy.corrupt(5 * MiB, times=1, method="GET", path_contains=key)
    env = {"REGSIDECAR_CACHE_MAX_BYTES": str(2 * MiB)}
    with _sidecar(proxy, bucket, tmp_path / "data", env) as sc:
        url = f"{sc.url}/v2/app/blobs/{digest}"
        with pytest.raises(aiohttp.ClientPayloadError):
            await _body(url, {"Range": "bytes=100-199"})
        assert await _body(url, {"Range": "bytes=100-199"}) == (206, data[100:200])
        assert sc.cache_files() == []
        assert _metric(await _metrics(sc), "regsidecar_pass_through_serves_total") == 2


@pytest.mark.timeout(90)
async def test_kill_9_mid_ranged_download_then_a_restart_is_clean_and_exact(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """SIGKILL while parts are half fetched (three stalled mid-body): the restarted sidecar
    leaves no temp file and no cache entry behind, and the next pull is exact."""
    data = os.urandom(8 * MiB)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    proxy.stall(60.0, after_bytes=100 * KiB, times=3, method="GET", path_contains=key)
    data_dir = tmp_path / "data"
    sc = _sidecar(proxy, bucket, data_dir).start()
    try:
        url = f"{sc.url}/v2/app/blobs/{digest}"
        session = aiohttp.ClientSession()
        pending = asyncio.create_task(get_digest(session, url))
        end = time.monotonic() + 20
        while proxy.count("GET", key, fault="stall") < 3:  # the client's GET runs meanwhile
            assert time.monotonic() < end, "three parts never stalled"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert sc.temp_files(), "a download is in progress"
        sc.kill()
        with pytest.raises(aiohttp.ClientError):
            await pending
        await session.close()
    finally:
        sc.stop()
    proxy.clear()
    with _sidecar(proxy, bucket, data_dir) as again:
        assert again.temp_files() == [] and again.cache_files() == []
        async with aiohttp.ClientSession() as s:
            status, got, n, _ = await get_digest(s, f"{again.url}/v2/app/blobs/{digest}")
        assert (status, got, n) == (200, digest, len(data))
        assert_cache_verified(again)


@pytest.mark.timeout(120)
async def test_100_concurrent_cold_clients_fetch_each_part_once(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """100 clients ask for one cold 16 MiB blob at once: every one gets the exact bytes, and
    S3 sees sixteen ranged GETs, one per part, and one HEAD."""
    data = os.urandom(16 * MiB)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    with _sidecar(proxy, bucket, tmp_path / "data") as sc:
        url = f"{sc.url}/v2/app/blobs/{digest}"
        timeout = aiohttp.ClientTimeout(total=100)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            results = await asyncio.gather(*[get_digest(session, url) for _ in range(100)])
        assert {r[:3] for r in results} == {(200, digest, len(data))}
        gets = proxy.select("GET", key)
        assert sorted(span_of(g, len(data)) for g in gets) == _parts(len(data))
        assert proxy.count("HEAD", key) == 1
        assert_cache_verified(sc)


@pytest.mark.timeout(120)
async def test_slowdown_on_some_parts_backs_the_window_off_and_the_pull_completes(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """Part GETs answer 503 SlowDown (the first 6, then 30 % of the rest: the seed takes the
    path, which holds a random digest and bucket, so a ratio alone could draw no failure at
    all among the blob's 12 parts, 1.4 % of runs): the pull still completes exactly, and the
    download window over S3 has shrunk below where it started."""
    data = os.urandom(24 * MiB)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    proxy.fail(503, code="SlowDown", method="GET", path_contains=key, times=6)
    proxy.fail_ratio(0.3, (503,), code="SlowDown", seed=7, method="GET", path_contains=key)
    env = {"REGSIDECAR_DOWNLOAD_MAX_CONNECTIONS": "8"}
    with _sidecar(proxy, bucket, tmp_path / "data", env) as sc:
        async with aiohttp.ClientSession() as session:
            status, got, n, _ = await get_digest(session, f"{sc.url}/v2/app/blobs/{digest}")
        assert (status, got, n) == (200, digest, len(data))
        assert proxy.count("GET", key, fault="fail") > 0
        text = await _metrics(sc)
        assert _metric(text, "regsidecar_download_throttles_total", '{source="primary"}') > 0
        assert _metric(text, "regsidecar_download_window", '{source="primary"}') < 8
        assert_cache_verified(sc)


def test_docker_and_skopeo_pull_multi_part_layers_digest_exact(
    moto: MotoServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    """A real ``docker pull`` and ``skopeo copy`` of an image whose layers are fetched in 1 MiB
    ranged parts get the pushed digests; the proxy saw the ranged GETs."""
    require("dockerd", "skopeo")
    bucket = "ranged-clients"
    moto.create_bucket(bucket)
    writer = BucketWriter(moto.client(), bucket)
    image = build_oci_layout(
        tmp_path / "layout", "v1", [("linux", "amd64")], [6 * MiB, 3 * MiB], seed="ranged"
    )
    seed_layout(writer, "ranged/app", "v1", image)
    layers = image.platforms[0].layers
    with _sidecar(proxy, bucket, tmp_path / "data") as sc, Dockerd() as dockerd:
        assert dockerd.pull(f"localhost:{sc.port}/ranged/app:v1", timeout_s=100) == image.digest
        for blob in layers:
            gets = proxy.select("GET", layout.blob_data(blob.digest))
            assert len(gets) == -(-blob.size // MiB) and all(g.range for g in gets)
        out = tmp_path / "skopeo"
        skopeo.copy_to_dir(sc.host, "ranged/app:v1", out)
        for blob in layers:
            assert (out / blob.digest.split(":")[1]).read_bytes() == image.read_blob(blob.digest)
        assert_cache_verified(sc)


@pytest.mark.timeout(120)
def test_ranged_parts_from_a_fallback_registry_when_s3_is_down(
    moto: MotoServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    """S3 (the proxy) is down: the blob comes from the fallback registry (distribution 2.8 on
    the same bucket) as ranged parts over the OCI API, digest-exact."""
    require("docker-registry")
    bucket = "ranged-fallback"
    moto.create_bucket(bucket)
    writer = BucketWriter(moto.client(), bucket)
    data = os.urandom(6 * MiB)
    digest = writer.blob("app", data)
    with Distribution(moto=moto, bucket=bucket) as dist:
        env = {"REGSIDECAR_UPSTREAMS": dist.url, "REGSIDECAR_BREAKER_FAILURES": "1"}
        with _sidecar(proxy, bucket, tmp_path / "data", env) as sc:
            proxy.down()
            status, body = asyncio.run(_body(f"{sc.url}/v2/app/blobs/{digest}"))
            assert status == 200 and body == data
            text = asyncio.run(_metrics(sc))
            fallback = f'{{kind="range",source="{dist.host.split(":")[0]}"}}'
            assert _metric(text, "regsidecar_download_requests_total", fallback) >= 2
            assert_cache_verified(sc)


@pytest.mark.timeout(60)
async def test_parts_follow_the_part_size_of_a_multipart_upload(
    moto: MotoServer, writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """A blob uploaded to S3 in 5 MiB parts (its ETag says "-6"): the sidecar's ranged GETs
    follow those parts (AWS: GETs aligned with the upload's parts perform best), not its own
    1 MiB setting."""
    data = os.urandom(28 * MiB)
    digest = digest_of(data)
    key = layout.blob_data(digest)
    writer.put(layout.layer_link("app", digest), digest.encode())
    s3 = moto.client()
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
    etags = []
    for i, start in enumerate(range(0, len(data), 5 * MiB), start=1):
        part = s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=i,
            Body=data[start : start + 5 * MiB],
        )
        etags.append({"PartNumber": i, "ETag": part["ETag"]})
    s3.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": etags}
    )
    assert s3.head_object(Bucket=bucket, Key=key)["ETag"].endswith('-6"')
    with _sidecar(proxy, bucket, tmp_path / "data") as sc:
        async with aiohttp.ClientSession() as session:
            status, got, n, _ = await get_digest(session, f"{sc.url}/v2/app/blobs/{digest}")
        assert (status, got, n) == (200, digest, len(data))
        gets = proxy.select("GET", key)
        assert sorted(span_of(g, len(data)) for g in gets) == _parts(len(data), 5 * MiB)
        assert_cache_verified(sc)


@pytest.mark.timeout(60)
async def test_a_part_that_goes_silent_is_resumed_on_a_new_connection(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """Part 2's response stops sending after 100 KiB (held 30 s): after
    ``download.stall_s`` (1 s here) that request is given up and the part resumed from byte
    2 MiB + 100 KiB on a new connection; the pull does not wait out the stall."""
    data = os.urandom(4 * MiB)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    part2 = f"bytes={2 * MiB}-{3 * MiB - 1}"
    proxy.stall(30.0, after_bytes=100 * KiB, times=1, path_contains=key, range_header=part2)
    with _sidecar(proxy, bucket, tmp_path / "data", {"REGSIDECAR_DOWNLOAD_STALL_S": "1"}) as sc:
        t0 = time.monotonic()
        async with aiohttp.ClientSession() as session:
            status, got, n, _ = await get_digest(session, f"{sc.url}/v2/app/blobs/{digest}")
        elapsed = time.monotonic() - t0
        assert (status, got, n) == (200, digest, len(data))
        assert elapsed < 10, f"waited out the stall: {elapsed:.1f} s"
        ranges = [g.range for g in proxy.select("GET", key)]
        assert f"bytes={2 * MiB + 100 * KiB}-{3 * MiB - 1}" in ranges, ranges
        proxy.release_stalls()
        assert_cache_verified(sc)
