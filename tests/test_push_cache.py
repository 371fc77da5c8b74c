"""A blob pushed through a sidecar on an S3 store is kept in its cache: the first pull on
the pushing host is a cache hit and reads nothing back from S3."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from pathlib import Path

import aiohttp

from regsidecar.storage import layout
from tests.conftest import s3_args
from tests.rig.htpasswd import WRITER, PushAuth
from tests.rig.moto import MotoServer
from tests.sidecar import Sidecar

AUTH = {"Authorization": "Basic " + base64.b64encode(f"{WRITER[0]}:{WRITER[1]}".encode()).decode()}


async def test_pushed_blob_is_a_cache_hit_on_the_pushing_host(
    tmp_path: Path, moto: MotoServer, bucket: str
) -> None:
    blob = os.urandom(2 * 1024 * 1024)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    cfg = PushAuth().write(tmp_path / "auth")
    with Sidecar([*s3_args(moto.endpoint_url, bucket), "--config", str(cfg)]) as sc:
        async with aiohttp.ClientSession() as s:
            url = f"{sc.url}/v2/team/app/blobs/uploads/?digest={digest}"
            async with s.post(url, data=io.BytesIO(blob), headers=AUTH) as r:
                assert r.status == 201, await r.text()
            assert moto.get(bucket, layout.blob_data(digest)) == blob
            since = moto.mark()
            async with s.get(f"{sc.url}/v2/team/app/blobs/{digest}") as r:
                assert r.status == 200
                assert r.headers["X-Cache"] == "hit"
                assert await r.read() == blob
        # The bytes came from the cache: no GET of the blob's data went to S3.
        assert moto.count("GET", key=layout.blob_data(digest), since=since) == 0
        cached = sc.data_dir / "cache" / "blobs" / "sha256" / digest.split(":")[1]
        assert cached.read_bytes() == blob
        assert not any((sc.data_dir / "uploads").iterdir())
