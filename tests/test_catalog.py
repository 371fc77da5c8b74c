"""/v2/_catalog lists the store's repositories as distribution's catalog does: nested names,
names that are both a repository and a parent, sorted, paginated with n/last and Link; with
auth on it wants credentials."""

from __future__ import annotations

import asyncio
import base64
import time
from pathlib import Path

import aiohttp
import pytest

from regsidecar.demo import write_sample
from regsidecar.storage import layout
from regsidecar.storage.filesystem import FilesystemDriver
from tests.conftest import s3_args
from tests.rig.faultproxy import FaultProxy, ProxyRequest
from tests.rig.htpasswd import WRITER, PushAuth
from tests.s3tree import BucketWriter
from tests.sidecar import Sidecar

D = "sha256:" + "a" * 64
REPOS = ["team", "team/app", "team/app/sub", "x/y/z", "zeta"]


def tree(root: Path) -> None:
    fs = FilesystemDriver(str(root))
    write_sample(fs)  # regsidecar/hello
    for name in REPOS:
        fs.put(layout.layer_link(name, D), D.encode())
    # Not repositories: an empty directory, and underscore directories of a repository.
    (root / layout.repositories_dir() / "empty" / "dir").mkdir(parents=True)
    fs.put(f"{layout.repository('zeta')}/_audit/x.json", b"{}")


async def test_catalog_lists_nested_repositories_with_pagination(tmp_path: Path) -> None:
    tree(tmp_path / "registry")
    expected = sorted([*REPOS, "regsidecar/hello"])
    with Sidecar(["--storage", str(tmp_path / "registry")]) as sc:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{sc.url}/v2/_catalog") as r:
                assert r.status == 200
                assert (await r.json())["repositories"] == expected
                assert "Link" not in r.headers
            got: list[str] = []
            url = f"{sc.url}/v2/_catalog?n=2"
            pages = 0
            while url:
                async with s.get(url) as r:
                    assert r.status == 200
                    page = (await r.json())["repositories"]
                    assert len(page) <= 2
                    got += page
                    link = r.headers.get("Link")
                url = sc.url + link.split(">")[0].lstrip("<") if link else ""
                pages += 1
            assert got == expected
            assert pages == 3
            async with s.get(f"{sc.url}/v2/_catalog?n=x") as r:
                assert r.status == 400
                assert (await r.json())["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


async def test_catalog_wants_credentials_when_auth_is_on(tmp_path: Path) -> None:
    tree(tmp_path / "registry")
    cfg = PushAuth().write(tmp_path / "auth")
    basic = "Basic " + base64.b64encode(f"{WRITER[0]}:{WRITER[1]}".encode()).decode()
    with Sidecar(["--storage", str(tmp_path / "registry"), "--config", str(cfg)]) as sc:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{sc.url}/v2/_catalog") as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"].startswith("Bearer ")
                assert (await r.json())["errors"][0]["code"] == "UNAUTHORIZED"
            async with s.get(f"{sc.url}/v2/_catalog", headers={"Authorization": basic}) as r:
                assert r.status == 200
                assert "team/app" in (await r.json())["repositories"]


def _most_at_once(reqs: list[ProxyRequest]) -> int:
    """The most of ``reqs`` the proxy had in progress at one moment."""
    events = sorted(
        [(r.started, 1) for r in reqs] + [(r.finished or r.started, -1) for r in reqs],
        key=lambda e: (e[0], e[1]),
    )
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


@pytest.mark.rig
async def test_catalog_on_s3_walks_once_per_ttl_bounded_and_serves_the_last_in_an_outage(
    writer: BucketWriter, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """60 repositories in the bucket; each LIST held 0.2 s. Three catalog requests at once
    share one walk of the store (61 LISTs: the repositories directory and each repository),
    at most catalog_concurrency (4) LISTs at a time; a request within catalog_ttl_s lists
    nothing; with S3 down after the TTL the last listing is served (stale-if-error); a
    store with more directories than catalog_max_directories is a clear 503, not a walk
    without end."""
    names = [f"r{i:02d}" for i in range(60)]
    for name in names:
        writer.blob(name, name.encode())
    proxy.stall(0.2, method="GET", path_contains="delimiter=")
    env = {
        "REGSIDECAR_LIMITS_CATALOG_CONCURRENCY": "4",
        "REGSIDECAR_CACHE_CATALOG_TTL_S": "2",
        "REGSIDECAR_RETRY_MAX_ATTEMPTS": "1",
    }
    with Sidecar(s3_args(proxy.url, bucket), data_dir=tmp_path / "a", env=env) as sc:
        async with aiohttp.ClientSession() as s:

            async def catalog() -> tuple[int, dict[str, object]]:
                async with s.get(f"{sc.url}/v2/_catalog") as r:
                    return r.status, await r.json()

            mark = proxy.mark()
            answers = await asyncio.gather(catalog(), catalog(), catalog())
            assert answers == [(200, {"repositories": names})] * 3
            lists = proxy.select("GET", "delimiter=", since=mark)
            assert len(lists) == 61
            assert _most_at_once(lists) <= 4
            mark = proxy.mark()
            assert await catalog() == (200, {"repositories": names})
            assert proxy.select("GET", "delimiter=", since=mark) == []
            await asyncio.sleep(2.2)  # past the TTL
            proxy.down()
            try:
                assert await catalog() == (200, {"repositories": names})
            finally:
                proxy.up()
        stale = [
            e for e in sc.logs() if e.get("msg") == "store unavailable; serving last known state"
        ]
        assert [e["kind"] for e in stale] == ["catalog"]
    env = {"REGSIDECAR_LIMITS_CATALOG_MAX_DIRECTORIES": "30"}
    with Sidecar(s3_args(proxy.url, bucket), data_dir=tmp_path / "b", env=env) as sc:
        async with aiohttp.ClientSession() as s, s.get(f"{sc.url}/v2/_catalog") as r:
            assert r.status == 503
            body = await r.json()
        assert body["errors"][0]["code"] == "UNAVAILABLE"
        assert "more than 30 directories" in body["errors"][0]["message"] + str(
            body["errors"][0].get("detail", "")
        )


async def test_a_large_directory_store_is_listed_without_holding_the_event_loop(
    tmp_path: Path,
) -> None:
    """10,000 repositories in a directory store: while the first catalog request walks
    them, /v2/ (asked every 10 ms) keeps answering promptly: the directory listings run in
    worker threads, not on the loop (before: one walk held every other request for its
    whole length)."""
    root = tmp_path / "registry"
    fs = FilesystemDriver(str(root))
    write_sample(fs)
    for i in range(10_000):
        (root / layout.repository(f"bulk/r{i:05d}") / "_layers").mkdir(parents=True)
    with Sidecar(["--storage", str(root)]) as sc:
        async with aiohttp.ClientSession() as s:
            pings: list[float] = []
            done = asyncio.Event()

            async def ping() -> None:
                while not done.is_set():
                    t = time.monotonic()
                    async with s.get(f"{sc.url}/v2/") as r:
                        assert r.status == 200
                    pings.append(time.monotonic() - t)
                    await asyncio.sleep(0.01)

            pinger = asyncio.ensure_future(ping())
            await asyncio.sleep(0.1)
            t0 = time.monotonic()
            async with s.get(f"{sc.url}/v2/_catalog?n=5") as r:
                assert r.status == 200
                assert (await r.json())["repositories"] == [f"bulk/r{i:05d}" for i in range(5)]
            walk = time.monotonic() - t0
            done.set()
            await pinger
    during = pings[1:]  # the first is from before the walk
    assert during, "no /v2/ answer during the walk"
    assert max(during) < max(0.25, walk / 3), (walk, max(during))
