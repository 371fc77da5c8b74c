"""A directory store is read inside its root only: symlinks out of it, and objects that are
not files, are unknown objects with an OCI error, never what they point at (a real sidecar)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import aiohttp
import pytest

from regsidecar.storage import layout
from regsidecar.storage.filesystem import FilesystemDriver
from tests.sidecar import Sidecar

SECRET = b"root:$6$secret-hash:19000:0:99999:7:::\n"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.read()


@pytest.mark.timeout(60)
async def test_symlinks_out_of_the_store_and_directories_are_not_served(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "shadow").write_bytes(SECRET)
    root = tmp_path / "registry"
    fs = FilesystemDriver(str(root))
    # 1. a blob whose data file is a symlink to a file outside the store
    leak = _digest(SECRET)
    fs.put(layout.layer_link("app", _digest(SECRET)), leak.encode())
    data = root / layout.blob_data(leak)
    data.parent.mkdir(parents=True)
    os.symlink(outside / "shadow", data)
    # 2. a blob whose "data" is a directory
    odd = _digest(b"odd")
    fs.put(layout.layer_link("app", odd), odd.encode())
    (root / layout.blob_data(odd)).mkdir(parents=True)
    # 3. a repository directory linked to a tree outside the store
    manifest = json.dumps({"schemaVersion": 2}).encode()
    md = _digest(manifest)
    elsewhere = FilesystemDriver(str(outside / "tree"))
    elsewhere.put(layout.tag_current_link("app", "v1"), md.encode())
    elsewhere.put(layout.revision_link("app", md), md.encode())
    fs.put(layout.blob_data(md), manifest)
    repo_dir = root / "docker/registry/v2/repositories/linked"
    os.symlink(outside / "tree/docker/registry/v2/repositories/app", repo_dir)
    with Sidecar(["--storage", str(root)]) as sc:
        for path in (f"/v2/app/blobs/{leak}", f"/v2/app/blobs/{odd}"):
            status, body = await _get(sc.url + path)
            assert status == 404, (path, status)
            assert SECRET not in body
            assert json.loads(body)["errors"][0]["code"] == "BLOB_UNKNOWN"
        status, body = await _get(f"{sc.url}/v2/linked/manifests/v1")
        assert status == 404, status
        assert json.loads(body)["errors"][0]["code"] in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")
        status, body = await _get(f"{sc.url}/v2/_catalog")
        assert status == 200
        assert "linked" not in json.loads(body)["repositories"]
        assert [e for e in sc.logs() if e.get("level") == "error"] == []
