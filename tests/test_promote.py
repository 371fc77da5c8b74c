"""Promotion moves tags by writing links: a 1 GiB image is promoted (CLI and API) with no
blob written or copied on S3, in well under a second, and refusals change nothing.

The S3 side is counted where it happens: moto's request log (tests/rig/moto.py). It has no
headers, so "no CopyObject" is proven by "no PUT to any key under blobs/" (a copy is a PUT
with x-amz-copy-source onto its destination key) and "no multipart" by no POST at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.conftest import require, s3_args
from tests.rig.htpasswd import READER, RELEASE_TOKEN, WRITER, PushAuth
from tests.rig.httpcall import Reply, call
from tests.rig.moto import MotoServer, S3Request
from tests.rig.ports import free_port
from tests.rig.promote import promote_cli
from tests.rig.registry import (
    blob_data_key,
    layer_link_key,
    revision_link_key,
    tag_current_link_key,
    tag_index_link_key,
)
from tests.s3tree import BucketWriter, digest_of
from tests.sidecar import Sidecar

pytestmark = [pytest.mark.rig, pytest.mark.timeout(240)]

MiB = 1024 * 1024
LAYERS = 4
LAYER_BYTES = 256 * MiB  # 4 x 256 MiB = 1 GiB
PART_BYTES = 64 * MiB
BIG_BUCKET = "promote-big"
REPO = "team/big"
BLOBS_PREFIX = "docker/registry/v2/blobs/"
AUDIT = re.compile(r"docker/registry/v2/repositories/(?P<repo>.+)/_audit/[^/]+\.json")
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
ACCEPT_OCI = {"Accept": MT_MANIFEST}
#: Promotion of a GiB must cost what promotion of a KiB does: a few small writes.
API_BUDGET_S = 1.0
CLI_BUDGET_S = 5.0  # includes the Python start-up of a fresh process


@dataclass(frozen=True)
class BigImage:
    """A 1 GiB image (4 layers) tagged ``team/big:build`` in a bucket of its own moto."""

    moto: MotoServer
    bucket: str
    digest: str
    config: str
    layers: tuple[str, ...]

    @property
    def blobs(self) -> tuple[str, ...]:
        return (self.config, *self.layers)

    @property
    def store(self) -> list[str]:
        return s3_args(self.moto.endpoint_url, self.bucket)


def _layer_parts(index: int, block: bytes) -> Iterator[bytes]:
    """Layer ``index`` in PART_BYTES pieces: each MiB is ``block`` with (layer, MiB) stamped
    on its head -- cheap to make, and every layer has its own digest."""
    chunk = bytearray(block)
    per_part = PART_BYTES // MiB
    for p in range(LAYER_BYTES // PART_BYTES):
        buf = bytearray()
        for i in range(per_part):
            chunk[:16] = index.to_bytes(8, "big") + (p * per_part + i).to_bytes(8, "big")
            buf += chunk
        yield bytes(buf)


def _upload_layer(moto: MotoServer, bucket: str, index: int, block: bytes) -> str:
    """Hash the layer (the key is its digest), then stream it up as a multipart upload."""
    sha = hashlib.sha256()
    for part in _layer_parts(index, block):
        sha.update(part)
    digest = "sha256:" + sha.hexdigest()
    client, key = moto.new_client(), blob_data_key(digest)
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = []
    for n, part in enumerate(_layer_parts(index, block), start=1):
        r = client.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=part)
        done.append({"ETag": r["ETag"], "PartNumber": n})
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": done}
    )
    return digest


def _write_big_image(moto: MotoServer, bucket: str) -> BigImage:
    """registry:2 layout of a 1 GiB image, as a distribution push leaves it."""
    block = os.urandom(MiB)
    with ThreadPoolExecutor(LAYERS) as pool:
        layers = list(pool.map(lambda i: _upload_layer(moto, bucket, i, block), range(LAYERS)))
    w = BucketWriter(moto.client(), bucket)
    for d in layers:
        w.put(layer_link_key(REPO, d), d.encode())
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": layers}}
    ).encode()
    config_digest = w.blob(REPO, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": MT_LAYER, "digest": d, "size": LAYER_BYTES} for d in layers],
        }
    ).encode()
    m = digest_of(manifest)
    w.put(blob_data_key(m), manifest)
    w.put(revision_link_key(REPO, m), m.encode())
    w.put(tag_index_link_key(REPO, "build", m), m.encode())
    w.put(tag_current_link_key(REPO, "build"), m.encode())
    return BigImage(moto, bucket, m, config_digest, tuple(layers))


@pytest.fixture(scope="module")
def big() -> Iterator[BigImage]:
    # A moto of its own: the GiB leaves memory with it, and the request log has only us.
    require("moto_server")
    with MotoServer() as moto:
        moto.create_bucket(BIG_BUCKET)
        img = _write_big_image(moto, BIG_BUCKET)
        sizes = {
            d: moto.client().head_object(Bucket=BIG_BUCKET, Key=blob_data_key(d))["ContentLength"]
            for d in img.layers
        }
        assert sizes == dict.fromkeys(img.layers, LAYER_BYTES)
        yield img


def _tag_keys(repo: str, tag: str, digest: str) -> set[str]:
    return {tag_index_link_key(repo, tag, digest), tag_current_link_key(repo, tag)}


def _cross_repo_keys(img: BigImage, repo: str) -> set[str]:
    """What linking the image into another repository writes: its blobs' and its
    manifest's links (distribution's cross-repository mount, no data)."""
    return {layer_link_key(repo, d) for d in img.blobs} | {revision_link_key(repo, img.digest)}


def _assert_only_links_written(
    requests: list[S3Request], img: BigImage, expected: set[str], audited: list[str]
) -> None:
    """The promotion's S3 writes are exactly ``expected`` plus one audit record per target
    (in ``audited``, the target repositories); nothing under blobs/ is written or copied,
    and no layer byte is even read."""
    mine = [r for r in requests if r.bucket == img.bucket]
    layer_data = {blob_data_key(d) for d in img.layers}
    assert not [r for r in mine if r.method == "GET" and r.key in layer_data], mine
    puts = [r.key for r in mine if r.method == "PUT"]
    assert not [k for k in puts if k.startswith(BLOBS_PREFIX)], f"blob data written: {puts}"
    assert not [r for r in mine if r.method == "POST"], "no multipart upload, no batch"
    assert not [r for r in mine if "uploadId" in r.query or "partNumber" in r.query]
    assert all(r.status == 200 for r in mine if r.method == "PUT"), mine
    assert len(puts) == len(set(puts)), f"a key was written twice: {sorted(puts)}"
    audits = [k for k in puts if AUDIT.fullmatch(k)]
    assert sorted(m["repo"] for k in audits if (m := AUDIT.fullmatch(k))) == sorted(audited)
    assert set(puts) - set(audits) == expected, sorted(puts)


def _blob_keys(img: BigImage) -> set[str]:
    return set(img.moto.list_keys(img.bucket, BLOBS_PREFIX))


def test_cli_promotes_a_1gib_image_by_writing_links_only(big: BigImage) -> None:
    """`regsidecar promote` of a 1 GiB image writes a handful of small links and audit
    records on S3 -- no blob PUT, no copy -- also into another repository."""
    before = _blob_keys(big)
    since = big.moto.mark()
    p = promote_cli(
        f"{REPO}@{big.digest}", "qa", "other/big:qa", "--by", "ci-job-1", "--json", store=big.store
    )
    requests = big.moto.requests(since=since)
    print(f"\nCLI promotion of a 1 GiB image: {p.elapsed_s * 1000:.0f} ms (process included)")
    assert p.returncode == 0, str(p)
    assert p.json() == {
        "moved": [
            {"repository": REPO, "tag": "qa", "old": None, "new": big.digest},
            {"repository": "other/big", "tag": "qa", "old": None, "new": big.digest},
        ]
    }
    expected = (
        _tag_keys(REPO, "qa", big.digest)
        | _tag_keys("other/big", "qa", big.digest)
        | _cross_repo_keys(big, "other/big")
    )
    _assert_only_links_written(requests, big, expected, [REPO, "other/big"])
    assert _blob_keys(big) == before
    assert p.elapsed_s < CLI_BUDGET_S, f"CLI promotion took {p.elapsed_s:.2f}s"

    for key in expected:
        assert big.moto.get(big.bucket, key).decode() in (big.digest, *big.blobs), key
    # The promoted tags serve, the linked blobs are there in full in the other repository.
    with Sidecar(big.store) as sc:
        for repo in (REPO, "other/big"):
            r = call("HEAD", f"{sc.url}/v2/{repo}/manifests/qa", headers=ACCEPT_OCI)
            assert r.status == 200 and r.headers["docker-content-digest"] == big.digest, str(r)
        for d in big.layers:
            r = call("HEAD", f"{sc.url}/v2/other/big/blobs/{d}")
            assert r.status == 200 and int(r.headers["content-length"]) == LAYER_BYTES, str(r)


def test_api_promotes_a_1gib_image_in_well_under_a_second(
    big: BigImage, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """POST /-/promote of a 1 GiB image answers in tens of milliseconds: only links and
    audit records are written, also into another repository."""
    cfg = PushAuth().write(tmp_path_factory.mktemp("auth"))
    with Sidecar([*big.store, "--config", str(cfg)]) as sc:
        # One read first, so the S3 connection is not part of what is timed.
        warm = call("HEAD", f"{sc.url}/v2/{REPO}/manifests/build", auth=WRITER, headers=ACCEPT_OCI)
        assert warm.status == 200, str(warm)
        since = big.moto.mark()
        body = {"source": f"{REPO}@{big.digest}", "tags": ["staging", "mirror/big:staging"]}
        r = call("POST", f"{sc.url}/-/promote", json_body=body, auth=WRITER)
        requests = big.moto.requests(since=since)
        print(f"\nAPI promotion of a 1 GiB image: {r.elapsed_s * 1000:.1f} ms")
        assert r.status == 200, str(r)
        assert r.json() == {
            "moved": [
                {"repository": REPO, "tag": "staging", "old": None, "new": big.digest},
                {"repository": "mirror/big", "tag": "staging", "old": None, "new": big.digest},
            ]
        }
        expected = (
            _tag_keys(REPO, "staging", big.digest)
            | _tag_keys("mirror/big", "staging", big.digest)
            | _cross_repo_keys(big, "mirror/big")
        )
        _assert_only_links_written(requests, big, expected, [REPO, "mirror/big"])
        assert r.elapsed_s < API_BUDGET_S, f"API promotion took {r.elapsed_s:.3f}s"

        head = call(
            "HEAD", f"{sc.url}/v2/mirror/big/manifests/staging", auth=READER, headers=ACCEPT_OCI
        )
        assert head.headers.get("docker-content-digest") == big.digest, str(head)
    audits = [k for k in big.moto.list_keys(big.bucket) if AUDIT.fullmatch(k)]
    records = [json.loads(big.moto.get(big.bucket, k)) for k in audits]
    api = [rec for rec in records if rec["tag"] == "staging"]
    assert sorted(rec["repository"] for rec in api) == sorted([REPO, "mirror/big"])
    for rec in api:
        assert rec["action"] == "promote" and rec["by"] == WRITER[0]
        assert rec["source"] == f"{REPO}@{big.digest}"
        assert rec["old"] is None and rec["new"] == big.digest


# ------------------------------------------------------------------------------ refusals
@dataclass(frozen=True)
class Small:
    moto: MotoServer
    bucket: str
    digest: str

    @property
    def store(self) -> list[str]:
        return s3_args(self.moto.endpoint_url, self.bucket)


@pytest.fixture
def small(moto: MotoServer, bucket: str, writer: BucketWriter) -> Small:
    digest, _ = writer.image("team/app", "build", [b"layer one", b"layer two"])
    return Small(moto, bucket, digest)


def _puts(moto: MotoServer, bucket: str, since: int) -> list[str]:
    return [r.key for r in moto.requests(since=since) if r.method == "PUT" and r.bucket == bucket]


UNKNOWN = "sha256:" + "0" * 64


def test_cli_refuses_unknown_images_and_bad_arguments(small: Small) -> None:
    """exit 1 for an unknown image, 2 for bad arguments or config; nothing is written."""
    since = small.moto.mark()
    p = promote_cli(f"team/app@{UNKNOWN}", "qa", store=small.store)
    assert p.returncode == 1, str(p)
    assert "MANIFEST_UNKNOWN" in p.stderr, str(p)
    p = promote_cli(f"team/nothing@{small.digest}", "qa", store=small.store)
    assert p.returncode == 1, f"the digest exists, but not in that repository: {p}"

    bad = [
        ["team/app:build", "qa"],  # a tag is no source: promotion pins a digest
        [f"team/app@{small.digest}"],  # no target
        ["team/app@sha256:123", "qa"],  # not a digest
        [f"team/app@{small.digest}", "bad tag!"],
        [f"Team/App@{small.digest}", "qa"],  # names are lower case
        [f"team/app@{small.digest}", f"other/app@{small.digest}"],  # a target is a tag
        [f"team/app@{small.digest}", "qa", "--config", "/nonexistent/regsidecar.yml"],
    ]
    for args in bad:
        p = promote_cli(*args, store=small.store)
        assert p.returncode == 2, str(p)
        assert p.stderr.strip(), f"says why: {p}"
    assert _puts(small.moto, small.bucket, since) == []


def test_cli_exit_3_when_the_store_fails(small: Small) -> None:
    """An unreachable S3 endpoint is a store failure (exit 3), not a refusal."""
    store = s3_args(f"http://127.0.0.1:{free_port()}", small.bucket)
    env = {"REGSIDECAR_RETRY_MAX_ATTEMPTS": "1", "REGSIDECAR_RETRY_DEADLINE_S": "2"}
    p = promote_cli(f"team/app@{small.digest}", "qa", store=store, env=env)
    assert p.returncode == 3, str(p)


def _refused(r: Reply, status: int, code: str) -> None:
    assert r.status == status, str(r)
    assert code in r.error_codes(), str(r)


def test_api_refuses_anonymous_readers_and_unknown_images(
    small: Small, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """POST /-/promote: 401 without credentials, 403 for a reader, 404 MANIFEST_UNKNOWN for
    an unknown digest, 400 for a bad body -- and nothing is written until a writer asks."""
    cfg = PushAuth().write(tmp_path_factory.mktemp("auth"))
    good = {"source": f"team/app@{small.digest}", "tags": ["qa"]}
    with Sidecar([*small.store, "--config", str(cfg)]) as sc:
        url = f"{sc.url}/-/promote"
        since = small.moto.mark()
        anon = call("POST", url, json_body=good)
        _refused(anon, 401, "UNAUTHORIZED")
        assert anon.headers.get("www-authenticate", "").startswith("Bearer realm="), str(anon)
        _refused(call("POST", url, json_body=good, auth=(WRITER[0], "wrong")), 401, "UNAUTHORIZED")
        _refused(call("POST", url, json_body=good, auth=READER), 403, "DENIED")
        # A reader is turned away before its body is read: garbage gets 403, not a 400 that
        # shows it was parsed.
        garbage = call(
            "POST", url, body=b"not json", headers={"Content-Type": "application/json"},
            auth=READER,
        )  # fmt: skip
        _refused(garbage, 403, "DENIED")
        unknown = {"source": f"team/app@{UNKNOWN}", "tags": ["qa"]}
        _refused(call("POST", url, json_body=unknown, auth=WRITER), 404, "MANIFEST_UNKNOWN")
        for body in (
            b"not json",
            b"[]",
            json.dumps({"source": "team/app:build", "tags": ["qa"]}).encode(),
            json.dumps({"source": good["source"], "tags": []}).encode(),
            json.dumps({"source": good["source"], "tags": "qa"}).encode(),
        ):
            r = call(
                "POST", url, body=body, headers={"Content-Type": "application/json"}, auth=WRITER
            )
            assert r.status == 400 and r.error_codes(), f"{body!r}: {r}"
        assert _puts(small.moto, small.bucket, since) == []

        # The static CI token is a writer: the same request now moves the tag.
        ok = call("POST", url, json_body=good, token=RELEASE_TOKEN[1])
        assert ok.status == 200, str(ok)
        assert ok.json()["moved"] == [
            {"repository": "team/app", "tag": "qa", "old": None, "new": small.digest}
        ]


def _index(writer: BucketWriter, repo: str, children: list[tuple[str, int]]) -> str:
    """An OCI index naming ``children`` ((digest, size), repeats allowed), linked in repo."""
    payload = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.index.v1+json"
                    if i.startswith("idx:")
                    else MT_MANIFEST,
                    "digest": i.removeprefix("idx:"),
                    "size": n,
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
                for i, n in children
            ],
        }
    ).encode()
    d = digest_of(payload)
    writer.put(blob_data_key(d), payload)
    writer.put(revision_link_key(repo, d), d.encode())
    return d


def test_promoting_a_nested_index_with_repeats_is_linear_in_distinct_manifests(
    moto: MotoServer, bucket: str, writer: BucketWriter
) -> None:
    """An index of 40 entries that all name one inner index of 40 entries that all name one
    manifest (40 x 40 paths to it): promoting it into another repository reads each distinct
    manifest once and links it once, not once per path."""
    digest, _ = writer.image("team/app", "build", [b"only layer"])
    size = len(moto.get(bucket, blob_data_key(digest)))
    inner = _index(writer, "team/app", [(digest, size)] * 40)
    inner_size = len(moto.get(bucket, blob_data_key(inner)))
    outer = _index(writer, "team/app", [(f"idx:{inner}", inner_size)] * 40)
    since = moto.mark()
    p = promote_cli(f"team/app@{outer}", "other/app:qa", store=s3_args(moto.endpoint_url, bucket))
    assert p.returncode == 0, str(p)
    reads = [r.key for r in moto.requests(since=since) if r.method == "GET" and r.bucket == bucket]
    for d in (outer, inner, digest):
        assert reads.count(blob_data_key(d)) == 1, (d, reads.count(blob_data_key(d)))
    puts = [r.key for r in moto.requests(since=since) if r.method == "PUT"]
    assert puts.count(revision_link_key("other/app", digest)) == 1
