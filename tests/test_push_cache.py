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


async def test_write_metrics_count_bytes_objects_and_tag_moves(tmp_path: Path) -> None:
    """/metrics after a push, a promotion and a tag delete: staged bytes, objects written by
    kind and tag moves by how, each exactly."""
    from prometheus_client.parser import text_string_to_metric_families

    cfg = PushAuth().write(tmp_path / "auth")
    config, layer = b"{}", os.urandom(300_000)
    digests = ["sha256:" + hashlib.sha256(b).hexdigest() for b in (config, layer)]
    manifest = (
        '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
        f'"config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{digests[0]}",'
        f'"size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar",'
        f'"digest":"{digests[1]}","size":{len(layer)}}}]}}'
    ).encode()
    with Sidecar(["--storage", str(tmp_path / "registry"), "--config", str(cfg)]) as sc:
        async with aiohttp.ClientSession(headers=AUTH) as s:
            for data, digest in zip((config, layer), digests, strict=True):
                url = f"{sc.url}/v2/team/app/blobs/uploads/?digest={digest}"
                async with s.post(url, data=io.BytesIO(data)) as r:
                    assert r.status == 201
            async with s.put(
                f"{sc.url}/v2/team/app/manifests/v1?tag=latest",
                data=manifest,
                headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
            ) as r:
                assert r.status == 201
                manifest_digest = r.headers["Docker-Content-Digest"]
            body = {"source": f"team/app@{manifest_digest}", "tags": ["qa"]}
            async with s.post(f"{sc.url}/-/promote", json=body) as r:
                assert r.status == 200
            async with s.delete(f"{sc.url}/v2/team/app/manifests/latest") as r:
                assert r.status == 202
            async with s.get(f"{sc.url}/metrics") as r:
                text = await r.text()
    got = {
        (m.name, tuple(sorted(m.labels.items()))): m.value
        for family in text_string_to_metric_families(text)
        for m in family.samples
    }
    assert got[("regsidecar_push_bytes_total", ())] == len(config) + len(layer)
    assert got[("regsidecar_pushed_total", (("kind", "blob"),))] == 2
    assert got[("regsidecar_pushed_total", (("kind", "manifest"),))] == 1
    assert got[("regsidecar_tag_moves_total", (("via", "push"),))] == 2
    assert got[("regsidecar_tag_moves_total", (("via", "promote"),))] == 1
    assert got[("regsidecar_tag_moves_total", (("via", "delete"),))] == 1
