"""/v2/_catalog lists the store's repositories as distribution's catalog does: nested names,
names that are both a repository and a parent, sorted, paginated with n/last and Link; with
auth on it wants credentials."""

from __future__ import annotations

import base64
from pathlib import Path

import aiohttp

from regsidecar.demo import write_sample
from regsidecar.storage import layout
from regsidecar.storage.filesystem import FilesystemDriver
from tests.rig.htpasswd import WRITER, PushAuth
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
