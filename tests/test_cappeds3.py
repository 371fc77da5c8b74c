"""Self-test of CappedS3 (tests/rig/cappeds3.py): nginx with a per-connection cap serving a
registry:2 filesystem tree as an S3 bucket, plus the s3list listing helper.

One stand-in (``rate="4m"``, small so the timing test is quick) serves one tree for every
test: the demo image with a second and third tag, and an 8 MiB random layer.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regsidecar.demo import REPOSITORY, TAG, build_sample, write_sample
from regsidecar.storage import layout
from regsidecar.storage.filesystem import FilesystemDriver
from tests.conftest import require, s3_args
from tests.rig.cappeds3 import CappedS3
from tests.rig.httpcall import call
from tests.rig.registry import Distribution
from tests.sidecar import Sidecar

pytestmark = pytest.mark.rig

MiB = 1 << 20
BIG = 8 * MiB
RATE = "4m"
ACCEPT = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json"


@dataclass(frozen=True)
class Tree:
    """What the test tree holds."""

    root: Path
    index_digest: str
    #: A small blob of the demo image (a layer), and its bytes.
    blob_digest: str
    blob: bytes
    #: The 8 MiB random layer, also linked into the demo repository.
    big_digest: str
    big: bytes
    tags: tuple[str, ...]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    root = tmp_path_factory.mktemp("cappeds3") / "registry"
    driver = FilesystemDriver(str(root))
    index_digest = write_sample(driver)
    # More tags than one page of max-keys=1 holds.
    tags = (TAG, "v1", "v2")
    for tag in tags[1:]:
        driver.put(layout.tag_current_link(REPOSITORY, tag), index_digest.encode())
    big = os.urandom(BIG)
    big_digest = "sha256:" + hashlib.sha256(big).hexdigest()
    driver.put(layout.blob_data(big_digest), big)
    driver.put(layout.layer_link(REPOSITORY, big_digest), big_digest.encode())
    small = build_sample().blobs[0]
    return Tree(root, index_digest, small.digest, small.data, big_digest, big, tags)


@pytest.fixture(scope="module")
def capped(tree: Tree) -> Iterator[CappedS3]:
    require("nginx")
    with CappedS3(tree.root, rate=RATE) as s3:
        yield s3


def obj_url(s3: CappedS3, key: str) -> str:
    return f"{s3.url}/{s3.bucket}/{key}"


def s3_client(s3: CappedS3) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3.url,
        aws_access_key_id="rigtestaccesskey",
        aws_secret_access_key="rigtestsecretkey",
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_get_head_range_and_missing_key(capped: CappedS3, tree: Tree) -> None:
    """GET returns the exact bytes, HEAD the size, Range a 206 slice; a missing key is 404
    NoSuchKey; the log records each with its status, bytes and Range."""
    small_key = layout.blob_data(tree.blob_digest)
    big_key = layout.blob_data(tree.big_digest)
    mark = capped.mark()

    got = call("GET", obj_url(capped, small_key))
    assert got.status == 200 and got.body == tree.blob
    assert got.headers["accept-ranges"] == "bytes"

    head = call("HEAD", obj_url(capped, big_key))
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) == BIG

    part = call("GET", obj_url(capped, big_key), headers={"Range": "bytes=1000-1999"})
    assert part.status == 206 and part.body == tree.big[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{BIG}"

    missing = call("GET", obj_url(capped, layout.blob_data("sha256:" + "0" * 64)))
    assert missing.status == 404 and b"<Code>NoSuchKey</Code>" in missing.body

    assert call("PUT", obj_url(capped, small_key), body=b"x").status == 405

    log = capped.requests(since=mark)
    assert all(r.completed for r in log)
    assert [
        (r.method, r.status, r.bytes_sent if r.status < 405 else None, r.range) for r in log
    ] == [
        ("GET", 200, len(tree.blob), None),
        ("HEAD", 200, 0, None),
        ("GET", 206, 1000, "bytes=1000-1999"),
        ("GET", 404, len(missing.body), None),
        ("PUT", 405, None, None),
    ]
    assert [r.key for r in log[:3]] == [small_key, big_key, big_key]


def test_cap_is_per_connection(capped: CappedS3, tree: Tree) -> None:
    """At 4 MiB/s per connection one 8 MiB GET takes ~2 s, four 2 MiB ranges on four
    connections ~0.5 s; each range is capped too, and the log shows the four ranges."""
    url = obj_url(capped, layout.blob_data(tree.big_digest))
    mark = capped.mark()

    whole = call("GET", url)
    assert whole.body == tree.big

    quarter = BIG // 4
    ranges = [f"bytes={i * quarter}-{(i + 1) * quarter - 1}" for i in range(4)]
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(lambda r: call("GET", url, headers={"Range": r}), ranges))
    parallel_s = time.perf_counter() - t0
    assert b"".join(p.body for p in parts) == tree.big

    assert whole.elapsed_s >= 1.6, f"8 MiB at {RATE} took {whole.elapsed_s:.2f}s"
    assert parallel_s < whole.elapsed_s / 2, (parallel_s, whole.elapsed_s)
    # A 2 MiB range is paced too (not one unpaced write): ~0.5 s at 4 MiB/s.
    assert parallel_s >= 0.35, parallel_s

    ranged = [r for r in capped.requests(since=mark) if r.range is not None]
    assert sorted(r.range for r in ranged if r.range) == sorted(ranges)
    assert {r.status for r in ranged} == {206}
    assert len({r.connection for r in ranged}) == 4


def test_list_objects_v2_and_v1_with_pagination(capped: CappedS3, tree: Tree) -> None:
    """HEAD of the bucket answers 200 with a Date; ListObjectsV2 with a delimiter lists the
    tags (page by page at max-keys=1); V1 with max-keys=1 on a blob's data key returns that
    key and size; V1 pages by marker, and by NextMarker with a delimiter."""
    head = call("HEAD", f"{capped.url}/{capped.bucket}/")  # regsidecar's clock probe
    assert head.status == 200 and "date" in head.headers

    s3 = s3_client(capped)
    tags_dir = layout.tags_dir(REPOSITORY) + "/"

    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket=capped.bucket, Prefix=tags_dir, Delimiter="/", PaginationConfig={"PageSize": 1}
    )
    listed = [(p["KeyCount"], [c["Prefix"] for c in p.get("CommonPrefixes", [])]) for p in pages]
    assert listed == [(1, [f"{tags_dir}{tag}/"]) for tag in sorted(tree.tags)]

    key = layout.blob_data(tree.big_digest)
    stat = s3.list_objects(Bucket=capped.bucket, Prefix=key, MaxKeys=1)
    assert [(c["Key"], c["Size"]) for c in stat["Contents"]] == [(key, BIG)]
    assert stat["IsTruncated"] is False

    blobs = layout.ROOT + "/blobs/"
    on_disk = sorted(
        p.relative_to(tree.root).as_posix() for p in (tree.root / blobs).rglob("*") if p.is_file()
    )
    keys: list[str] = []
    marker = ""
    while True:
        page = s3.list_objects(Bucket=capped.bucket, Prefix=blobs, MaxKeys=2, Marker=marker)
        keys += [c["Key"] for c in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        assert "NextMarker" not in page  # S3 sends it only with a delimiter
        marker = keys[-1]
    assert keys == on_disk

    by_prefix = s3.get_paginator("list_objects").paginate(
        Bucket=capped.bucket, Prefix=tags_dir, Delimiter="/", PaginationConfig={"PageSize": 1}
    )
    prefixes = [c["Prefix"] for p in by_prefix for c in p.get("CommonPrefixes", [])]
    assert prefixes == [f"{tags_dir}{tag}/" for tag in sorted(tree.tags)]


def test_regsidecar_serves_from_it(capped: CappedS3, tree: Tree) -> None:
    """regsidecar's S3 driver on the stand-in serves the manifest by tag, a blob and
    tags/list (clock probe HEAD, link GETs, ListObjectsV2 all answered)."""
    mark = capped.mark()
    with Sidecar(s3_args(capped.url, capped.bucket)) as sc:
        manifest = call(
            "GET", f"{sc.url}/v2/{REPOSITORY}/manifests/{TAG}", headers={"Accept": ACCEPT}
        )
        assert manifest.status == 200, manifest
        assert manifest.headers["docker-content-digest"] == tree.index_digest
        blob = call("GET", f"{sc.url}/v2/{REPOSITORY}/blobs/{tree.blob_digest}")
        assert blob.status == 200 and blob.body == tree.blob
        tags = call("GET", f"{sc.url}/v2/{REPOSITORY}/tags/list")
        assert tags.status == 200, tags
        assert tags.json() == {"name": REPOSITORY, "tags": sorted(tree.tags)}

    seen = capped.requests(since=mark)
    assert all(r.status < 400 for r in seen), seen
    assert any(r.method == "HEAD" and r.key == "" for r in seen)  # the clock probe
    assert any(r.key == layout.tag_current_link(REPOSITORY, TAG) for r in seen)
    assert any(r.key == layout.blob_data(tree.blob_digest) and r.method == "GET" for r in seen)
    assert any(r.params.get("list-type") == "2" for r in seen)


def test_distribution_serves_from_it(capped: CappedS3, tree: Tree) -> None:
    """registry:2 (distribution 2.8) on the stand-in serves a blob digest-exact and the
    manifest by tag (its Stat is ListObjects max-keys=1, its reads ranged GETs)."""
    require("docker-registry")
    mark = capped.mark()
    with Distribution(s3_endpoint=capped.url, bucket=capped.bucket) as reg:
        blob = call("GET", f"{reg.url}/v2/{REPOSITORY}/blobs/{tree.blob_digest}")
        assert blob.status == 200, blob
        assert "sha256:" + hashlib.sha256(blob.body).hexdigest() == tree.blob_digest
        manifest = call(
            "GET", f"{reg.url}/v2/{REPOSITORY}/manifests/{TAG}", headers={"Accept": ACCEPT}
        )
        assert manifest.status == 200, manifest
        assert manifest.headers["docker-content-digest"] == tree.index_digest
        absent = call("GET", f"{reg.url}/v2/{REPOSITORY}/manifests/nope")
        assert absent.status == 404, absent

    seen = capped.requests(since=mark)
    stat = {"prefix": layout.blob_data(tree.blob_digest), "max-keys": "1"}
    assert any(r.key == "" and r.params == stat for r in seen), [r.query for r in seen]
    assert any(r.range == "bytes=0-" and r.status == 206 for r in seen)
