"""Upload sessions live on disk: a chunked upload goes on after the sidecar restarts, and a
session that is gone (cancelled, expired, another repository's) fails cleanly with
BLOB_UPLOAD_UNKNOWN, never a 500 and never a half-written blob in the store."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import aiohttp
import pytest

from regsidecar.storage import layout
from tests.rig.htpasswd import WRITER, PushAuth
from tests.sidecar import Sidecar

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITER[0]}:{WRITER[1]}".encode()).decode()}
CHUNK = 300_000


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return PushAuth().write(tmp_path / "auth")


async def _patch(
    s: aiohttp.ClientSession, url: str, data: bytes, start: int
) -> aiohttp.ClientResponse:
    headers = {**AUTH, "Content-Range": f"{start}-{start + len(data) - 1}"}
    async with s.patch(url, data=data, headers=headers) as r:
        await r.read()
        return r


async def test_chunked_upload_survives_a_restart(tmp_path: Path, config: Path) -> None:
    """Two chunks, a restart in between (the hash state is rebuilt from the staged bytes), a
    third chunk with the final PUT: 201, and the store holds exactly the blob."""
    root = tmp_path / "registry"
    data_dir = tmp_path / "data"
    blob = os.urandom(3 * CHUNK)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    sc = Sidecar(["--storage", str(root), "--config", str(config)], data_dir=data_dir).start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{sc.url}/v2/team/app/blobs/uploads/", headers=AUTH) as r:
                assert r.status == 202
                location = r.headers["Location"]
            r = await _patch(s, sc.url + location, blob[:CHUNK], 0)
            assert (r.status, r.headers["Range"]) == (202, f"0-{CHUNK - 1}")
            r = await _patch(s, sc.url + location, blob[CHUNK : 2 * CHUNK], CHUNK)
            assert r.headers["Range"] == f"0-{2 * CHUNK - 1}"
        sc.stop()
        sc.start()
        async with aiohttp.ClientSession() as s:
            async with s.get(sc.url + location, headers=AUTH) as r:
                assert (r.status, r.headers["Range"]) == (204, f"0-{2 * CHUNK - 1}")
            # A chunk that does not start at the end is refused, and the session lives on.
            r = await _patch(s, sc.url + location, blob[:CHUNK], 0)
            assert r.status == 416
            headers = {**AUTH, "Content-Range": f"{2 * CHUNK}-{3 * CHUNK - 1}"}
            async with s.put(
                f"{sc.url}{location}?digest={digest}", data=blob[2 * CHUNK :], headers=headers
            ) as r:
                assert r.status == 201, await r.text()
                assert r.headers["Docker-Content-Digest"] == digest
            async with s.get(f"{sc.url}/v2/team/app/blobs/{digest}") as r:
                assert r.status == 200
                assert await r.read() == blob
            # The session is gone once used.
            async with s.get(sc.url + location, headers=AUTH) as r:
                assert r.status == 404
                assert (await r.json())["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        assert (root / layout.blob_data(digest)).read_bytes() == blob
        assert not any((data_dir / "uploads").iterdir())
    finally:
        sc.close()


async def test_a_wrong_digest_after_a_restart_commits_nothing(tmp_path: Path, config: Path) -> None:
    """The rebuilt hash is checked like the live one: a wrong digest is DIGEST_INVALID and
    neither blob data nor a link appears in the store."""
    root = tmp_path / "registry"
    blob = os.urandom(CHUNK)
    wrong = "sha256:" + hashlib.sha256(blob + b"x").hexdigest()
    with Sidecar(["--storage", str(root), "--config", str(config)]) as sc:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{sc.url}/v2/team/app/blobs/uploads/", headers=AUTH) as r:
                location = r.headers["Location"]
            await _patch(s, sc.url + location, blob, 0)
            sc.stop()
            sc.start()
            async with s.put(f"{sc.url}{location}?digest={wrong}", headers=AUTH) as r:
                assert r.status == 400
                assert (await r.json())["errors"][0]["code"] == "DIGEST_INVALID"
    assert not (root / layout.blob_data(wrong)).exists()
    assert not (root / layout.layer_link("team/app", wrong)).exists()


async def test_sessions_are_bound_to_their_repository(tmp_path: Path, config: Path) -> None:
    """Another repository's session id, a made-up id and a cancelled session: 404
    BLOB_UPLOAD_UNKNOWN for every method."""
    with Sidecar(["--storage", str(tmp_path / "registry"), "--config", str(config)]) as sc:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{sc.url}/v2/team/app/blobs/uploads/", headers=AUTH) as r:
                sid = r.headers["Docker-Upload-UUID"]
            urls = [
                f"{sc.url}/v2/team/other/blobs/uploads/{sid}",
                f"{sc.url}/v2/team/app/blobs/uploads/not-a-session",
                f"{sc.url}/v2/team/app/blobs/uploads/00000000-0000-4000-8000-000000000000",
            ]
            async with s.delete(f"{sc.url}/v2/team/app/blobs/uploads/{sid}", headers=AUTH) as r:
                assert r.status == 204
            urls.append(f"{sc.url}/v2/team/app/blobs/uploads/{sid}")
            for url in urls:
                for method in ("GET", "PATCH", "PUT", "DELETE"):
                    async with s.request(method, url, data=b"x", headers=AUTH) as r:
                        assert r.status == 404, (method, url)
                        body = await r.json()
                        assert body["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN", (method, url)
