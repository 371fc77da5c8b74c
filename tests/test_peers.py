"""Peer fetch: sidecars on loopback fetch each part of a blob from one another, S3 about once.

Every sidecar is a real process with its own data dir, pull port and peer listener
(``peer_listen`` 127.0.0.1:<port>); all list each other in ``peers.urls``. Their S3 endpoint
is one FaultProxy in front of moto, whose log is the S3 side's record of every GET of the
blob's data. Parts of 1 MiB from the first request, so a few MiB make many parts, each with
its own rendezvous tree (:mod:`regsidecar.peers.ring`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from regsidecar.peers.ring import Member, ancestors, part_key
from regsidecar.peers.source import VERIFIED_HEADER
from regsidecar.storage import layout
from tests.pullcheck import assert_cache_verified, get_digest, proxied_sidecar, span_of
from tests.rig.faultproxy import FaultProxy
from tests.rig.ports import free_port
from tests.s3tree import BucketWriter, digest_of
from tests.sidecar import Sidecar

pytestmark = pytest.mark.rig

MiB = 1024 * 1024
RANGED = {
    "REGSIDECAR_DOWNLOAD_PART_BYTES": "1MiB",
    "REGSIDECAR_DOWNLOAD_PARALLEL_AFTER_S": "0",
}


class Fleet:
    """``n`` sidecars that know each other; ``urls[i]`` is sidecar i's peer URL as the
    others list it (a proxy's URL for a sidecar behind one)."""

    def __init__(self, sidecars: list[Sidecar], urls: list[str], peer_ports: list[int]):
        self.sidecars = sidecars
        self.urls = urls
        self.peer_ports = peer_ports

    def root_of(self, digest: str, offset: int) -> int:
        return root_of(self.urls, digest, offset)


def root_of(urls: list[str], digest: str, offset: int) -> int:
    """Which of ``urls`` fetches the part of ``digest`` at ``offset`` from S3 (its root)."""
    members = [Member(u) for u in urls]
    chain = ancestors(members, members[0], part_key(digest, offset), fanout=2)
    return urls.index(chain[-1].url) if chain else 0


def blob_rooted_at(urls: list[str], host: int, size: int) -> bytes:
    """Random bytes of ``size`` whose part 0 has ``host`` as its tree's root."""
    for _ in range(200):
        data = os.urandom(size)
        if root_of(urls, digest_of(data), 0) == host:
            return data
    raise AssertionError("no blob rooted there in 200 tries")


@contextlib.contextmanager
def fleet(
    proxy: FaultProxy,
    bucket: str,
    tmp_path: Path,
    n: int = 3,
    *,
    env: dict[str, str] | None = None,
    urls: list[str] | None = None,
    peer_ports: list[int] | None = None,
    start: int | None = None,
    advertise: bool = True,
) -> Iterator[Fleet]:
    """The fleet, its first ``start`` sidecars started (None: all; the test starts the
    rest with ``.start()``)."""
    ports = peer_ports or [free_port() for _ in range(n)]
    listed = urls or [f"http://127.0.0.1:{p}" for p in ports]
    with contextlib.ExitStack() as stack:
        sidecars = []
        for i, port in enumerate(ports):
            e = {
                **RANGED,
                "REGSIDECAR_PEER_LISTEN": f"127.0.0.1:{port}",
                "REGSIDECAR_PEERS_URLS": ",".join(listed),
                **({"REGSIDECAR_PEERS_ADVERTISE": listed[i]} if advertise else {}),
                **(env or {}),
            }
            sc = proxied_sidecar(proxy, bucket, tmp_path / f"host{i}", e)
            stack.callback(sc.close)
            if start is None or i < start:
                sc.start()
            sidecars.append(sc)
        yield Fleet(sidecars, listed, ports)


@contextlib.contextmanager
def lying_fleet(
    proxy: FaultProxy,
    bucket: str,
    tmp_path: Path,
    writer: BucketWriter,
    size: int,
    *,
    start: int | None = None,
) -> Iterator[tuple[Fleet, FaultProxy, bytes, str]]:
    """Three sidecars; host 0 is listed at a proxy that flips byte 100 of every peer response
    and is the root of the blob's first part. Yields (fleet, the liar, the blob, its digest)."""
    ports = [free_port() for _ in range(3)]
    with FaultProxy(f"http://127.0.0.1:{ports[0]}") as liar:
        liar.corrupt(at_byte=100, path_contains="/peer/v1/blobs/")
        urls = [liar.url, *(f"http://127.0.0.1:{p}" for p in ports[1:])]
        data = blob_rooted_at(urls, 0, size)
        digest = writer.blob("app", data)
        with fleet(proxy, bucket, tmp_path, urls=urls, peer_ports=ports, start=start) as f:
            yield f, liar, data, digest


async def _pull_all(
    sidecars: list[Sidecar], repo: str, digest: str
) -> list[tuple[int, str, int, dict[str, str]]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        return await asyncio.gather(
            *(get_digest(session, f"{sc.url}/v2/{repo}/blobs/{digest}") for sc in sidecars)
        )


async def _metrics(sc: Sidecar) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"{sc.url}/metrics") as r:
        return await r.text()


def _metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def _s3_bytes(proxy: FaultProxy, key: str, size: int) -> int:
    """Bytes of the blob's data S3 sent (the proxy's count of body bytes per GET)."""
    return sum(r.bytes_sent for r in proxy.select("GET", key))


@pytest.mark.timeout(120)
async def test_three_sidecars_pull_one_blob_and_s3_sends_it_about_once(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """A concurrent pull of a 6 MiB + 777 byte blob through three sidecars: each client gets
    the exact bytes; S3 sends each part once (its tree's root asks), the others come from
    peers; every cache holds only verified files."""
    data = os.urandom(6 * MiB + 777)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    with fleet(proxy, bucket, tmp_path) as f:
        results = await _pull_all(f.sidecars, "app", digest)
        assert [(s, d, n) for s, d, n, _ in results] == [(200, digest, len(data))] * 3
        gets = proxy.select("GET", key)
        spans = sorted(span_of(g, len(data)) for g in gets)
        assert sum(e - s for s, e in spans) == len(data), f"S3 asked for {spans}"
        assert _s3_bytes(proxy, key, len(data)) == len(data)
        peer_bytes = [
            _metric(await _metrics(sc), "regsidecar_upstream_blob_bytes_total", '{source="peer"}')
            for sc in f.sidecars
        ]
        # Each host gets from peers what it is not the root of: 2 of 3 copies, in all.
        assert sum(peer_bytes) == 2 * len(data), peer_bytes
        for sc in f.sidecars:
            assert [p.name for p in assert_cache_verified(sc)] == [digest.split(":")[1]]


@pytest.mark.timeout(120)
async def test_a_peer_asked_first_fetches_and_serves_the_blob_its_host_never_pulled(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """Only one host pulls: the parts whose tree root is another host are fetched by that
    host (a peer's request starts its download) and streamed on; S3 still sends each byte
    once, and the other hosts end up holding the verified blob too."""
    data = os.urandom(5 * MiB + 3)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    with fleet(proxy, bucket, tmp_path) as f:
        (result,) = await _pull_all(f.sidecars[:1], "app", digest)
        assert result[:3] == (200, digest, len(data))
        assert _s3_bytes(proxy, key, len(data)) == len(data)
        roots = {f.root_of(digest, off) for off in range(0, len(data), MiB)}
        for i in roots - {0}:
            assert [p.name for p in assert_cache_verified(f.sidecars[i])] == [digest.split(":")[1]]


@pytest.mark.timeout(120)
async def test_killing_a_parent_mid_transfer_does_not_fail_the_pull(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """S3 holds each part's bytes back after its first 64 KiB for 3 s; meanwhile the host that
    is the root of part 0 is killed (SIGKILL). The other two still deliver the exact blob:
    their requests to it break, and each part goes on from the byte it reached, from the
    store."""
    data = os.urandom(4 * MiB + 5)
    digest = writer.blob("app", data)
    key = layout.blob_data(digest)
    proxy.stall(3.0, after_bytes=64 * 1024, method="GET", path_contains=key)
    with fleet(proxy, bucket, tmp_path) as f:
        victim = f.root_of(digest, 0)
        rest = [sc for i, sc in enumerate(f.sidecars) if i != victim]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as session:
            pulls = [
                asyncio.ensure_future(get_digest(session, f"{sc.url}/v2/app/blobs/{digest}"))
                for sc in rest
            ]
            # Wait until the victim is serving peers, then kill it.
            for _ in range(200):
                text = await _metrics(f.sidecars[victim])
                if _metric(text, "regsidecar_peer_uploads_total", '{outcome="served"}') >= 1:
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the victim never served a peer")
            f.sidecars[victim].kill()
            results = await asyncio.gather(*pulls)
        assert [(s, d, n) for s, d, n, _ in results] == [(200, digest, len(data))] * 2
        for sc in rest:
            assert [p.name for p in assert_cache_verified(sc)] == [digest.split(":")[1]]
            logs = [
                e
                for e in sc.logs()
                if e.get("msg") == "peer part interrupted; asking the next source"
            ]
            assert logs, "no part was moved off the killed peer"


@pytest.mark.timeout(120)
async def test_a_peer_serving_wrong_bytes_is_quarantined_and_the_blob_fetched_elsewhere(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """Host 0 is listed by the others at a proxy that flips byte 100 of every peer response,
    and it is the root of the blob's first part. It pulls (and verifies) the blob alone
    first, so it serves it as verified. Host 1's download then fails verification: what
    peers sent is fetched again from S3 and compared, host 0 (whose bytes differ) is
    quarantined, the repaired blob is published; the client, which had already been sent
    a wrong byte 100, is cut short (never a complete wrong body) and its retry is exact."""
    size = 3 * MiB + 11
    with lying_fleet(proxy, bucket, tmp_path, writer, size, start=1) as (f, liar, data, digest):
        first = await _pull_all(f.sidecars[:1], "app", digest)
        assert first[0][:3] == (200, digest, len(data))
        f.sidecars[1].start()
        f.sidecars[2].start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
            url = f"{f.sidecars[1].url}/v2/app/blobs/{digest}"
            with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
                await get_digest(s, url)
            status, got, n, _ = await get_digest(s, url)
        assert (status, got, n) == (200, digest, len(data))
        text = await _metrics(f.sidecars[1])
        assert _metric(text, "regsidecar_peer_quarantines_total") == 1
        assert _metric(text, "regsidecar_download_corrupt_total") == 1
        logs = f.sidecars[1].logs()
        quarantined = [e for e in logs if e.get("msg") == "peer quarantined"]
        assert [e["peer"] for e in quarantined] == [liar.url]
        repaired = [e for e in logs if e.get("msg") == "blob repaired from the store"]
        assert [e["peers"] for e in repaired] == [[liar.url]]
        # Byte 100 of each part host 0 was asked for (the parts it is the root of; the
        # last part, 11 bytes, has no byte 100).
        lied = sum(
            f.root_of(digest, off) == 0 and len(data) - off > 100
            for off in range(0, len(data), MiB)
        )
        assert [e["damaged_bytes"] for e in repaired] == [lied]
        async with aiohttp.ClientSession() as s, s.get(f"{f.sidecars[1].url}/healthz") as r:
            health = await r.json()
        assert health["peers"]["quarantined"] == [liar.url]
        for sc in f.sidecars:
            assert_cache_verified(sc)


@pytest.mark.timeout(120)
async def test_a_small_blob_from_a_lying_peer_reaches_the_client_whole_and_exact(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """A blob of one part (a config, 200 KiB here) that comes from peers is released to a
    client only once verified: when the peer lied, the repair from S3 happens before the
    client gets a byte, so even the first pull is exact (a client may not retry a config)."""
    with lying_fleet(proxy, bucket, tmp_path, writer, 200 * 1024) as (f, liar, data, digest):
        for i in (1, 2):
            (result,) = await _pull_all(f.sidecars[i : i + 1], "app", digest)
            assert result[:3] == (200, digest, len(data))
        text = await _metrics(f.sidecars[1])
        assert _metric(text, "regsidecar_download_corrupt_total") == 1
        repaired = [
            e for e in f.sidecars[1].logs() if e.get("msg") == "blob repaired from the store"
        ]
        assert [e["peers"] for e in repaired] == [[liar.url]]
        for sc in f.sidecars:
            assert_cache_verified(sc)


@pytest.mark.timeout(60)
async def test_the_peer_listener_wants_the_token_and_serves_blobs_by_digest_only(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """With peers.token set: no token or a wrong one is 401 (OCI JSON), the right one gets the
    blob; tags, manifests, /v2/ and anything else are 404 on the peer port; a bad digest is
    400; the sidecars still share the blob (they send the token)."""
    data = os.urandom(2 * MiB + 1)
    digest = writer.blob("app", data)
    token_file = tmp_path / "peer-token"
    token_file.write_text("s3cret-peer-token\n")
    env = {"REGSIDECAR_PEERS_TOKEN_FILE": str(token_file)}
    with fleet(proxy, bucket, tmp_path, 2, env=env) as f:
        base = f"http://127.0.0.1:{f.peer_ports[0]}/peer/v1"
        async with aiohttp.ClientSession() as s:
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with s.get(f"{base}/blobs/{digest}", headers=headers) as r:
                    assert r.status == 401
                    body = await r.json()
                    assert body["errors"][0]["code"] == "UNAUTHORIZED"
            good = {"Authorization": "Bearer s3cret-peer-token"}
            async with s.get(f"{base}/blobs/{digest}", headers=good) as r:
                assert r.status == 200
                assert await r.read() == data
            for path in ("/v2/", "/v2/app/manifests/latest", "/v2/app/tags/list", "/peer/v1/tags"):
                async with s.get(f"http://127.0.0.1:{f.peer_ports[0]}{path}", headers=good) as r:
                    assert r.status == 404, path
                    assert (await r.json())["errors"][0]["code"]
            async with s.get(f"{base}/blobs/sha256:nothex", headers=good) as r:
                assert r.status == 400
                assert (await r.json())["errors"][0]["code"] == "DIGEST_INVALID"
            async with s.post(f"{base}/blobs/{digest}", headers=good) as r:
                assert r.status in (404, 405)
        results = await _pull_all(f.sidecars[1:], "app", digest)
        assert results[0][:3] == (200, digest, len(data))
        text = await _metrics(f.sidecars[0])
        assert _metric(text, "regsidecar_peer_uploads_total", '{outcome="refused"}') == 2


@pytest.mark.timeout(60)
async def test_an_unreachable_peer_costs_nothing_but_a_fetch_from_s3(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """The membership lists a host whose peer port nobody listens on: the parts it would
    have been the parent of come from S3, the pull is exact, and /healthz shows the peers."""
    data = os.urandom(4 * MiB + 9)
    digest = writer.blob("app", data)
    ports = [free_port() for _ in range(2)]
    dead = f"http://127.0.0.1:{free_port()}"
    urls = [f"http://127.0.0.1:{p}" for p in ports] + [dead]
    with fleet(proxy, bucket, tmp_path, urls=urls, peer_ports=ports) as f:
        results = await _pull_all(f.sidecars[:1], "app", digest)
        assert results[0][:3] == (200, digest, len(data))
        async with aiohttp.ClientSession() as s, s.get(f"{f.sidecars[0].url}/healthz") as r:
            health = await r.json()
        assert health["peers"]["members"] == 3
        assert health["peers"]["me"] == urls[0]
        assert_cache_verified(f.sidecars[0])
        key = layout.blob_data(digest)
        assert _s3_bytes(proxy, key, len(data)) <= 2 * len(data)


@pytest.mark.timeout(90)
async def test_doctor_reports_the_peers_it_reaches_and_the_ones_it_does_not(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """A fleet of two with a token, and a third member nobody listens for: doctor's peers
    row warns and names the dead member (one of the two others answers); with a wrong token
    it says the token is refused; a host without a peer listener is told it serves none."""
    from tests.conftest import s3_args
    from tests.test_doctor import doctor

    token_file = tmp_path / "peer-token"
    token_file.write_text("fleet-token\n")
    ports = [free_port() for _ in range(2)]
    dead = f"http://127.0.0.1:{free_port()}"
    urls = [f"http://127.0.0.1:{p}" for p in ports] + [dead]
    env = {"REGSIDECAR_PEERS_TOKEN_FILE": str(token_file)}
    with fleet(proxy, bucket, tmp_path, urls=urls, peer_ports=ports, env=env):
        base = [*s3_args(proxy.url, bucket), "--skip-docker", "--peers", ",".join(urls)]
        mine = [*base, "--peer-listen", f"127.0.0.1:{ports[0]}"]
        r = await asyncio.to_thread(
            doctor, mine, tmp_path / "d1", env={"REGSIDECAR_PEERS_TOKEN_FILE": str(token_file)}
        )
        row = r.rows["peers"]
        assert row["status"] == "warn", row
        assert row["detail"].startswith(f"3 members, 1 of 2 asked answer; this host is {urls[0]}")
        assert dead in row["detail"] and "security group" in row["fix"]
        wrong = tmp_path / "wrong-token"
        wrong.write_text("nope\n")
        r = await asyncio.to_thread(
            doctor, mine, tmp_path / "d2", env={"REGSIDECAR_PEERS_TOKEN_FILE": str(wrong)}
        )
        assert "token is not accepted" in r.rows["peers"]["detail"]
        assert "peers.token_file" in r.rows["peers"]["fix"]
        r = await asyncio.to_thread(
            doctor,
            [*s3_args(proxy.url, bucket), "--skip-docker", "--peers", dead],
            tmp_path / "d3",
        )
        assert r.rows["peers"]["status"] == "warn"
        assert "peer_listen is off" in r.rows["peers"]["detail"]


@pytest.mark.timeout(60)
async def test_peer_uploads_are_bounded_in_number_and_rate(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """peers.max_uploads 1: while one peer response is open, a second gets 429
    TOOMANYREQUESTS with Retry-After (the asker goes elsewhere); peers.max_upload_bytes_per_s
    2 MiB/s: after the first response used up the burst, a 3 MiB blob takes 1.5 s to send."""
    data = os.urandom(3 * MiB)
    digest = writer.blob("app", data)
    env = {"REGSIDECAR_PEERS_MAX_UPLOADS": "1", "REGSIDECAR_PEERS_MAX_UPLOAD_BYTES_PER_S": "2MiB"}
    with fleet(proxy, bucket, tmp_path, 2, env=env) as f:
        url = f"http://127.0.0.1:{f.peer_ports[0]}/peer/v1/blobs/{digest}"
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as first:  # the cold blob: fetched, then sent at 2 MiB/s
                assert first.status == 200
                async with s.get(url) as second:
                    assert second.status == 429
                    assert second.headers["Retry-After"] == "1"
                    assert (await second.json())["errors"][0]["code"] == "TOOMANYREQUESTS"
                assert await first.read() == data
            t0 = asyncio.get_running_loop().time()
            async with s.get(url) as again:  # now cached: one slot free again, still paced
                assert again.headers[VERIFIED_HEADER] == "1"
                assert await again.read() == data
            took = asyncio.get_running_loop().time() - t0
        # 3 MiB at 2 MiB/s, the bucket emptied by the first response: 1.5 s and more.
        assert 1.2 < took < 5.0, took
        text = await _metrics(f.sidecars[0])
        # ours, and host 1's requests for the parts host 0 is the root of (then from S3)
        assert _metric(text, "regsidecar_peer_uploads_total", '{outcome="busy"}') >= 1


@pytest.mark.timeout(60)
async def test_a_host_listed_under_a_name_it_cannot_place_learns_it_is_that_member(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """Members listed as http://localhost:PORT (a name, not an address: no host can tell by
    its addresses which one it is) and no peers.advertise: a sidecar that asks itself gets
    508 from its own listener, takes that member as itself, and the pull goes on exact."""
    data = os.urandom(12 * MiB + 1)  # 13 parts: a host asks itself for one of them but
    digest = writer.blob("app", data)  # with a chance of (2/3)^26 for the two hosts
    ports = [free_port() for _ in range(2)]
    urls = [f"http://localhost:{p}" for p in ports]
    with fleet(proxy, bucket, tmp_path, urls=urls, peer_ports=ports, advertise=False) as f:
        results = await _pull_all(f.sidecars, "app", digest)
        assert [r[:3] for r in results] == [(200, digest, len(data))] * 2
        learned = 0
        for sc, url in zip(f.sidecars, urls, strict=True):
            async with aiohttp.ClientSession() as s, s.get(f"{sc.url}/healthz") as r:
                me = (await r.json())["peers"]["me"]
            assert me in (None, url)
            learned += me == url
            assert_cache_verified(sc)
        # a host that is the root of every part it needs never asks itself; one at least did
        assert learned >= 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("link", ["busy", "idle"])
async def test_a_silent_peer_is_waited_for_while_the_link_is_busy_and_left_when_idle(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path, link: str
) -> None:
    """Host 0 is listed at a proxy that holds every response for blob X for 3 s after its
    first 64 KiB, and it is X's root: host 1 asks it for X, and its answer goes silent for
    3 s, three times ``peers.stall_s`` (1 s). When host 1's link is busy (it is receiving
    blob Y, 8 MiB from S3 at 128 KiB/s per response, the whole time), the silence is
    starvation by its own traffic: host 1 waits (``peers.patience_s``) and S3 sends X's
    bytes once, to host 0. On an idle link the peer is stuck: host 1 leaves it after 1 s
    and fetches X from S3 itself."""
    ports = [free_port() for _ in range(3)]
    with FaultProxy(f"http://127.0.0.1:{ports[0]}") as slow:
        urls = [slow.url, *(f"http://127.0.0.1:{p}" for p in ports[1:])]
        x = blob_rooted_at(urls, 0, MiB)
        x_digest = writer.blob("app", x)
        y = os.urandom(8 * MiB)
        y_digest = writer.blob("app", y)
        slow.stall(3.0, after_bytes=64 * 1024, path_contains=f"/peer/v1/blobs/{x_digest}")
        proxy.throttle(128 * 1024, method="GET", path_contains=layout.blob_data(y_digest))
        env = {"REGSIDECAR_PEERS_STALL_S": "1", "REGSIDECAR_PEERS_PATIENCE_S": "10"}
        with fleet(proxy, bucket, tmp_path, urls=urls, peer_ports=ports, env=env) as f:
            asker = f.sidecars[1]
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=90)) as s:
                y_pull = None
                if link == "busy":
                    y_pull = asyncio.ensure_future(
                        get_digest(s, f"{asker.url}/v2/app/blobs/{y_digest}")
                    )
                    await asyncio.sleep(2.0)  # Y flows into host 1 at ~1 MiB/s
                status, got, n, _ = await get_digest(s, f"{asker.url}/v2/app/blobs/{x_digest}")
                assert (status, got, n) == (200, x_digest, len(x))
                if y_pull is not None:
                    assert (await y_pull)[:3] == (200, y_digest, len(y))
        left = [
            e
            for e in asker.logs()
            if e.get("msg") == "peer part interrupted; asking the next source"
            and e.get("digest") == x_digest
        ]
        x_from_s3 = _s3_bytes(proxy, layout.blob_data(x_digest), len(x))
        if link == "busy":
            assert left == [], "host 1 gave up on a peer starved by its own busy link"
            assert x_from_s3 == len(x), "S3 sent X more than once"
        else:
            assert [e["peer"] for e in left] == [slow.url]
            assert x_from_s3 > len(x), "host 1 never asked S3 for what the stuck peer held"
        assert slow.count("GET", f"/peer/v1/blobs/{x_digest}") >= 1
