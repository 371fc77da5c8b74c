"""OCI distribution-spec 1.1 conformance of the push, pull, referrers, tags, delete and auth APIs.

A Python port of the checks of the upstream conformance suite (opencontainers/distribution-spec,
``conformance/``: the newest runner ``run.go``/``api.go`` and the v1.1 ginkgo files
``01_pull_test.go`` .. ``04_management_test.go``), written to the spec, against a real sidecar
process. Every test runs four times: over a directory store and over an S3 store (moto), each
with two ways of logging in. Each store gets one sidecar for the whole module, configured with
an htpasswd file (writer ``ci``, plus ``reader`` who is not a writer) and ``push.delete:
true``; each test uses repositories of its own. The client is ``ci:s3cret`` unless a test says
otherwise: sent as HTTP Basic on every request, or as the suite's ``api.go`` does it (a bare
request, then the 401's Bearer challenge answered with a token from the realm).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.conftest import s3_args
from tests.oci_client import (
    ACCEPT,
    EMPTY_JSON,
    MT_CONFIG,
    MT_INDEX,
    MT_LAYER_ND,
    MT_MANIFEST,
    OCTET,
    READER,
    SPEC_ERROR_CODES,
    WRITER,
    Client,
    Creds,
    Image,
    Manifest,
    Resp,
    artifact,
    canonical_json,
    data_field,
    digest_of,
    image,
    index,
    parse_challenge,
    random_bytes,
    unique_repo,
)
from tests.rig.htpasswd import PushAuth
from tests.sidecar import Sidecar

AT_SBOM = "application/vnd.example.sbom.v1+json"
AT_SIG = "application/vnd.example.signature.v1"
AT_BUNDLE = "application/vnd.example.bundle.index.v1"
CHUNK_MIN = 1024  # the conformance suite never sends smaller chunks (config.go chunkMin)
RANGE_HDR = re.compile(r"^0-(-?\d+)$")


# -- the sidecar under test --------------------------------------------------------------------


@pytest.fixture(scope="module", params=["dir", "s3"])
def sidecar(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Sidecar]:
    """One sidecar per store for the whole module, push and delete enabled, htpasswd auth."""
    root = tmp_path_factory.mktemp(f"oci-{request.param}")
    cfg = PushAuth(
        users={WRITER.login: WRITER.password, READER.login: READER.password},
        tokens={},
        writers=[WRITER.login],
    ).write(root)
    if request.param == "dir":
        store = ["--storage", str(root / "registry")]
    else:
        moto = request.getfixturevalue("moto")
        bucket = f"oci-{uuid.uuid4().hex[:12]}"
        moto.create_bucket(bucket)
        store = s3_args(moto.endpoint_url, bucket)
    with Sidecar([*store, "--config", str(cfg)]) as sc:
        yield sc


@pytest.fixture(params=["basic", "challenge"])
async def reg(sidecar: Sidecar, request: pytest.FixtureRequest) -> AsyncIterator[Client]:
    """A client of the module's sidecar as ``ci:s3cret``: Basic on every request, or the
    conformance suite's own flow (bare request, then the 401's Bearer challenge: a token for
    the challenge's scope from the realm, reused per repository and action)."""
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield Client(session, sidecar.url, challenge=request.param == "challenge")


# -- small helpers -----------------------------------------------------------------------------


def codes(r: Resp) -> list[str]:
    return r.error_codes()


def assert_error(r: Resp, status: int, code: str) -> None:
    assert r.status == status, f"{r}, expected {status}: {r.body[:300]!r}"
    got = codes(r)
    assert got[0] == code, f"{r}: codes {got}, expected {code}"
    assert set(got) <= SPEC_ERROR_CODES | {"RANGE_INVALID", "PAGINATION_NUMBER_INVALID"}, got


def assert_range(r: Resp, last_byte: int) -> None:
    """``Range: 0-<last byte received>`` (no ``bytes=``), as the suite parses it."""
    value = r.headers.get("Range")
    assert value is not None, f"{r} has no Range header"
    m = RANGE_HDR.match(value)
    assert m, f"{r}: Range {value!r} is not 0-<end>"
    if last_byte < 0:
        assert int(m.group(1)) in (-1, 0), f"{r}: empty session reports Range {value!r}"
    else:
        assert int(m.group(1)) == last_byte, f"{r}: Range {value!r}, expected 0-{last_byte}"


def assert_blob_created(r: Resp, repo: str, dig: str) -> None:
    """201 for a finished blob upload, with the blob's Location and its digest."""
    assert r.status == 201, f"{r}: {r.body[:300]!r}"
    assert r.location_path == f"/v2/{repo}/blobs/{dig}", r.location
    assert r.headers["Docker-Content-Digest"] == dig, r


async def assert_blob(reg: Client, repo: str, data: bytes, dig: str) -> None:
    """HEAD and GET of a pushed blob: 200, exact length, digest header, body (GET only)."""
    for method in ("HEAD", "GET"):
        r = await reg.request(method, f"/v2/{repo}/blobs/{dig}", auth=None)
        assert r.status == 200, f"{r}: {r.body[:200]!r}"
        assert r.headers["Content-Length"] == str(len(data)), r
        assert r.headers["Docker-Content-Digest"] == dig, r
        assert r.body == (data if method == "GET" else b""), r


async def assert_manifest(reg: Client, repo: str, ref: str, m: Manifest) -> None:
    """HEAD and GET of a pushed manifest: 200, Content-Type, length, digest header, body."""
    for method in ("HEAD", "GET"):
        r = await reg.get_manifest(repo, ref, method)
        assert r.status == 200, f"{r}: {r.body[:200]!r}"
        assert r.headers["Content-Type"] == m.media_type, r
        assert r.headers["Content-Length"] == str(len(m.body)), r
        assert r.headers["Docker-Content-Digest"] == m.digest, r
        assert r.body == (m.body if method == "GET" else b""), r


async def chunk_size(reg: Client, session: Resp) -> int:
    """The suite's chunk size: 1024, or the server's ``OCI-Chunk-Min-Length`` if larger."""
    advertised = session.headers.get("OCI-Chunk-Min-Length")
    return max(CHUNK_MIN, int(advertised)) if advertised else CHUNK_MIN


async def patch_chunk(reg: Client, url: str, data: bytes, start: int) -> Resp:
    return await reg.request(
        "PATCH",
        url,
        headers={
            "Content-Type": OCTET,
            "Content-Length": str(len(data)),
            "Content-Range": f"{start}-{start + len(data) - 1}",
        },
        data=data,
    )


async def put_final(reg: Client, url: str, dig: str, data: bytes = b"", start: int = 0) -> Resp:
    headers = {"Content-Type": OCTET, "Content-Length": str(len(data))}
    if data:
        headers["Content-Range"] = f"{start}-{start + len(data) - 1}"
    return await reg.request("PUT", url, params=[("digest", dig)], headers=headers, data=data)


async def referrers(reg: Client, repo: str, subject: str, **params: str) -> Resp:
    r = await reg.request(
        "GET", f"/v2/{repo}/referrers/{subject}", params=list(params.items()), auth=None
    )
    assert r.status == 200, f"{r}: {r.body[:300]!r}"
    assert r.headers["Content-Type"] == MT_INDEX, r
    doc = r.json()
    assert doc["schemaVersion"] == 2, doc
    assert doc["mediaType"] == MT_INDEX, doc
    assert isinstance(doc["manifests"], list), doc
    return r


def referrer_descriptor(img: Image | Manifest) -> dict[str, Any]:
    """The descriptor the referrers API lists for a manifest with a subject."""
    m = img.manifest if isinstance(img, Image) else img
    at = m.doc.get("artifactType") or m.doc.get("config", {}).get("mediaType")
    d: dict[str, Any] = {
        "mediaType": m.media_type,
        "digest": m.digest,
        "size": len(m.body),
        "artifactType": at,
    }
    if m.doc.get("annotations"):
        d["annotations"] = m.doc["annotations"]
    return d


def assert_referrers(doc: dict[str, Any], expected: list[Image | Manifest]) -> None:
    """The list holds exactly ``expected``, each with equal mediaType, digest, size and
    artifactType, and annotations that contain all of the manifest's own."""
    got: dict[str, dict[str, Any]] = {}
    for d in doc["manifests"]:
        assert d["digest"] not in got, f"{d['digest']} listed twice"
        got[d["digest"]] = d
    want = {w["digest"]: w for w in map(referrer_descriptor, expected)}
    assert set(got) == set(want), (sorted(got), sorted(want))
    for dig, w in want.items():
        g = got[dig]
        for key in ("mediaType", "digest", "size", "artifactType"):
            assert g.get(key) == w[key], (dig, key, g.get(key), w[key])
        for k, v in w.get("annotations", {}).items():
            assert (g.get("annotations") or {}).get(k) == v, (dig, k, g.get("annotations"))


# -- base route --------------------------------------------------------------------------------


async def test_base_route_answers_200_to_the_writer(reg: Client) -> None:
    """GET /v2/: 200 with credentials; anonymous: 200, or 401 UNAUTHORIZED with a challenge
    (the spec allows either; clients log in on that 401); bad credentials: 401."""
    assert (await reg.request("GET", "/v2/")).status == 200
    anon = await reg.request("GET", "/v2/", auth=None)
    if anon.status != 200:
        assert_error(anon, 401, "UNAUTHORIZED")
        scheme, _ = parse_challenge(anon.headers["WWW-Authenticate"])
        assert scheme in ("basic", "bearer"), anon.headers["WWW-Authenticate"]
    bad = await reg.request("GET", "/v2/", auth=Creds(WRITER.login, "wrong"))
    assert_error(bad, 401, "UNAUTHORIZED")


# -- pull of pushed content --------------------------------------------------------------------


async def test_manifest_put_by_tag_then_pull_by_tag_and_digest(reg: Client) -> None:
    """PUT by tag: 201, Location, Docker-Content-Digest; HEAD/GET by tag and digest serve it."""
    repo = unique_repo("tagpull")
    img = image()
    for b in img.blobs:
        await reg.push_blob(repo, b.data)
    r = await reg.push_manifest(repo, "v1", img.manifest)
    assert r.headers["Docker-Content-Digest"] == img.manifest.digest
    loc = await reg.request("GET", r.location, headers={"Accept": ACCEPT})
    assert loc.status == 200 and loc.body == img.manifest.body, loc
    assert loc.headers["Content-Type"] == MT_MANIFEST
    await assert_manifest(reg, repo, "v1", img.manifest)
    await assert_manifest(reg, repo, img.manifest.digest, img.manifest)
    for b in img.blobs:
        await assert_blob(reg, repo, b.data, b.digest)


async def test_manifest_put_by_digest_creates_no_tag(reg: Client) -> None:
    """PUT by digest: 201, Location, Docker-Content-Digest; pullable by digest, no tag appears."""
    repo = unique_repo("digestpush")
    img = image(layers=1)
    r = await reg.push_image(repo, img)
    assert r.headers["Docker-Content-Digest"] == img.manifest.digest
    assert (await reg.request("GET", r.location, headers={"Accept": ACCEPT})).body == (
        img.manifest.body
    )
    await assert_manifest(reg, repo, img.manifest.digest, img.manifest)
    tags = await reg.request("GET", f"/v2/{repo}/tags/list")
    assert tags.status in (200, 404), tags
    if tags.status == 200:
        assert not tags.json().get("tags"), tags.json()


async def test_missing_blob_manifest_and_repository_answer_404_with_codes(reg: Client) -> None:
    """Unknown blob: 404 BLOB_UNKNOWN; unknown digest or tag: 404 MANIFEST_UNKNOWN; unknown
    repository's tag list: 404 NAME_UNKNOWN; HEAD answers the same statuses."""
    repo = unique_repo("missing")
    img = image(layers=1)
    await reg.push_image(repo, img, "present")
    unknown = digest_of(random_bytes(32))
    assert_error(await reg.request("GET", f"/v2/{repo}/blobs/{unknown}"), 404, "BLOB_UNKNOWN")
    assert (await reg.request("HEAD", f"/v2/{repo}/blobs/{unknown}")).status == 404
    assert_error(await reg.get_manifest(repo, unknown), 404, "MANIFEST_UNKNOWN")
    assert (await reg.get_manifest(repo, unknown, "HEAD")).status == 404
    assert_error(await reg.get_manifest(repo, "missing-tag"), 404, "MANIFEST_UNKNOWN")
    assert (await reg.get_manifest(repo, "missing-tag", "HEAD")).status == 404
    nowhere = unique_repo("never-pushed")
    assert_error(await reg.request("GET", f"/v2/{nowhere}/tags/list"), 404, "NAME_UNKNOWN")
    # a blob pushed to one repository is unknown in another
    other = unique_repo("other")
    await reg.push_blob(other, b"x" * 10 + random_bytes(10))
    cfg = img.blobs[0]
    assert_error(await reg.request("GET", f"/v2/{other}/blobs/{cfg.digest}"), 404, "BLOB_UNKNOWN")


async def test_blob_range_requests_answer_206_or_416(reg: Client) -> None:
    """run.go "range requests" on a 2048-byte blob: 206 with Content-Range, or 416."""
    repo = unique_repo("range")
    data = random_bytes(2048)
    dig = await reg.push_blob(repo, data)
    cases = [
        ("bytes=500-1499", data[500:1500], "bytes 500-1499/"),
        ("bytes=500-", data[500:], "bytes 500-2047/"),
        ("bytes=-500", data[-500:], "bytes 1548-2047/"),
        ("bytes=2000-5000", data[2000:], "bytes 2000-2047/"),
    ]
    for rng, body, cr in cases:
        r = await reg.request("GET", f"/v2/{repo}/blobs/{dig}", headers={"Range": rng})
        assert r.status == 206, f"{rng}: {r}"
        assert r.body == body, rng
        assert r.headers["Content-Length"] == str(len(body)), rng
        assert r.headers["Content-Range"] in (cr + "2048", cr + "*"), (rng, r.headers)
    for rng in ("bytes=500-0", "bytes=5000-10000"):
        r = await reg.request("GET", f"/v2/{repo}/blobs/{dig}", headers={"Range": rng})
        assert r.status == 416, f"{rng}: {r}"


# -- blob uploads ------------------------------------------------------------------------------


async def test_blob_post_then_put_monolithic(reg: Client) -> None:
    """POST: 202 + Location under /blobs/uploads/; PUT ?digest= with the body: 201, Location
    /v2/<name>/blobs/<digest>, Docker-Content-Digest; the blob is then pullable."""
    repo = unique_repo("postput")
    data = random_bytes(512)
    dig = digest_of(data)
    s = await reg.request("POST", f"/v2/{repo}/blobs/uploads/")
    assert s.status == 202, s
    assert s.location_path.startswith(f"/v2/{repo}/blobs/uploads/"), s.location
    r = await reg.request(
        "PUT",
        s.location,
        params=[("digest", dig)],
        headers={"Content-Type": OCTET, "Content-Length": str(len(data))},
        data=data,
    )
    assert_blob_created(r, repo, dig)
    got = await reg.request("GET", r.location)
    assert got.status == 200 and got.body == data, got
    await assert_blob(reg, repo, data, dig)


async def test_blob_post_with_digest_is_a_single_request_upload(reg: Client) -> None:
    """POST ?digest= with the body: 201, Location of the blob, Docker-Content-Digest."""
    repo = unique_repo("postonly")
    data = random_bytes(512)
    dig = digest_of(data)
    r = await reg.request(
        "POST",
        f"/v2/{repo}/blobs/uploads/",
        params=[("digest", dig)],
        headers={"Content-Type": OCTET, "Content-Length": str(len(data))},
        data=data,
    )
    assert_blob_created(r, repo, dig)
    await assert_blob(reg, repo, data, dig)


async def test_blob_chunked_upload_in_order_reports_range_and_status(reg: Client) -> None:
    """POST, three PATCHes with Content-Range <start>-<end>: each 202 + Location +
    Range 0-<end>; GET on the session: 204 + Location + Range; PUT ?digest= without a body: 201."""
    repo = unique_repo("chunked")
    s = await reg.start_upload(repo)
    size = await chunk_size(reg, s)
    data = random_bytes(3 * size - 5)
    dig = digest_of(data)
    url = s.location
    status = await reg.request("GET", url)
    assert status.status == 204, status
    assert_range(status, -1)
    for start in range(0, len(data), size):
        chunk = data[start : start + size]
        r = await patch_chunk(reg, url, chunk, start)
        assert r.status == 202, f"{r}: {r.body[:300]!r}"
        assert_range(r, start + len(chunk) - 1)
        url = r.location
        status = await reg.request("GET", url)
        assert status.status == 204, status
        assert status.body == b""
        assert status.location
        assert_range(status, start + len(chunk) - 1)
    done = await put_final(reg, url, dig)
    assert_blob_created(done, repo, dig)
    await assert_blob(reg, repo, data, dig)


async def test_blob_chunked_upload_with_last_chunk_in_the_put(reg: Client) -> None:
    """The final chunk may come with the closing PUT ?digest= (Content-Range + body): 201."""
    repo = unique_repo("putchunk")
    s = await reg.start_upload(repo)
    size = await chunk_size(reg, s)
    data = random_bytes(3 * size - 5)
    dig = digest_of(data)
    url = s.location
    for start in (0, size):
        r = await patch_chunk(reg, url, data[start : start + size], start)
        assert r.status == 202, r
        url = r.location
    done = await put_final(reg, url, dig, data[2 * size :], 2 * size)
    assert done.status == 201, f"{done}: {done.body[:300]!r}"
    assert done.headers["Docker-Content-Digest"] == dig
    await assert_blob(reg, repo, data, dig)


async def test_blob_chunked_single_chunk_smaller_than_chunk_min(reg: Client) -> None:
    """run.go "chunked single": one 512-byte PATCH 0-511, then an empty PUT ?digest=: 201."""
    repo = unique_repo("single")
    data = random_bytes(512)
    dig = digest_of(data)
    s = await reg.start_upload(repo)
    r = await patch_chunk(reg, s.location, data, 0)
    assert r.status == 202, r
    assert_range(r, 511)
    done = await put_final(reg, r.location, dig)
    assert done.status == 201, f"{done}: {done.body[:300]!r}"
    await assert_blob(reg, repo, data, dig)


async def test_blob_out_of_order_chunks_answer_416_and_the_session_survives(reg: Client) -> None:
    """A chunk that skips ahead, a resent chunk, an out-of-order final PUT and a malformed
    Content-Range all answer 416; GET then reports the last good Range; the upload completes."""
    repo = unique_repo("ooo")
    s = await reg.start_upload(repo)
    size = await chunk_size(reg, s)
    data = random_bytes(3 * size - 5)
    dig = digest_of(data)
    c1, c2, c3 = data[:size], data[size : 2 * size], data[2 * size :]
    url = s.location
    bad = await patch_chunk(reg, url, c2, size)  # skips ahead on an empty session
    assert bad.status == 416, bad
    if "Location" in bad.headers:  # the suite resumes from a 416's Location when it has one
        url = bad.location
    st = await reg.request("GET", url)
    assert st.status == 204 and st.location, st
    assert_range(st, -1)
    url = st.location
    r = await patch_chunk(reg, url, c1, 0)
    assert r.status == 202, r
    assert_range(r, size - 1)
    url = r.location
    assert (await patch_chunk(reg, url, c1, 0)).status == 416  # resent chunk
    bad_put = await put_final(reg, url, dig, c3, 2 * size)  # final chunk, c2 missing
    assert bad_put.status == 416, f"{bad_put}: {bad_put.body[:300]!r}"
    garbled = await reg.request(
        "PATCH",
        url,
        headers={"Content-Type": OCTET, "Content-Range": "abc", "Content-Length": str(len(c2))},
        data=c2,
    )
    assert garbled.status == 416, garbled
    st = await reg.request("GET", url)
    assert st.status == 204, st
    assert_range(st, size - 1)
    r = await patch_chunk(reg, st.location, c2, size)
    assert r.status == 202, r
    assert_range(r, 2 * size - 1)
    done = await put_final(reg, r.location, dig, c3, 2 * size)
    assert done.status == 201, f"{done}: {done.body[:300]!r}"
    await assert_blob(reg, repo, data, dig)


async def test_blob_streamed_patch_without_content_range(reg: Client) -> None:
    """PATCH with the whole body and no Content-Range, sent chunked (no Content-Length) as the
    Go suite does, then with a Content-Length: 202 + Location + Range; PUT ?digest=: 201."""
    repo = unique_repo("stream")
    for chunked in (True, False):
        data = random_bytes(3000)
        dig = digest_of(data)
        s = await reg.start_upload(repo)

        async def body(payload: bytes = data) -> AsyncIterator[bytes]:
            for i in range(0, len(payload), 1000):
                yield payload[i : i + 1000]
                await asyncio.sleep(0)

        r = await reg.request(
            "PATCH",
            s.location,
            headers={"Content-Type": OCTET}
            if chunked
            else {"Content-Type": OCTET, "Content-Length": str(len(data))},
            data=body() if chunked else data,
        )
        assert r.status == 202, f"chunked={chunked} {r}: {r.body[:300]!r}"
        assert_range(r, len(data) - 1)
        done = await put_final(reg, r.location, dig)
        assert done.status == 201, f"{done}: {done.body[:300]!r}"
        assert done.location_path == f"/v2/{repo}/blobs/{dig}"
        await assert_blob(reg, repo, data, dig)


async def test_cancelled_upload_is_unknown_afterwards(reg: Client) -> None:
    """DELETE of an upload session: 204; then GET, PATCH and PUT on it: 404 BLOB_UPLOAD_UNKNOWN."""
    repo = unique_repo("cancel")
    s = await reg.start_upload(repo)
    data = random_bytes(100)
    assert (await patch_chunk(reg, s.location, data, 0)).status == 202
    r = await reg.request("DELETE", s.location)
    assert r.status == 204, f"{r}: {r.body[:300]!r}"
    assert_error(await reg.request("GET", s.location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await patch_chunk(reg, s.location, data, 100), 404, "BLOB_UPLOAD_UNKNOWN")
    assert_error(await put_final(reg, s.location, digest_of(data)), 404, "BLOB_UPLOAD_UNKNOWN")
    never = f"/v2/{repo}/blobs/uploads/{uuid.uuid4()}"
    assert_error(await reg.request("GET", never), 404, "BLOB_UPLOAD_UNKNOWN")


async def test_blob_digest_mismatch_answers_400_digest_invalid(reg: Client) -> None:
    """A body that does not match ?digest=: 400 DIGEST_INVALID for POST-only, POST+PUT,
    chunked and streamed uploads; the blob does not appear."""
    repo = unique_repo("baddigest")
    good = random_bytes(700)
    dig = digest_of(good)
    corrupt = good + b"oh no"
    r = await reg.request(
        "POST",
        f"/v2/{repo}/blobs/uploads/",
        params=[("digest", dig)],
        headers={"Content-Type": OCTET, "Content-Length": str(len(corrupt))},
        data=corrupt,
    )
    assert_error(r, 400, "DIGEST_INVALID")
    s = await reg.start_upload(repo)
    r = await reg.request(
        "PUT", s.location, params=[("digest", dig)], headers={"Content-Type": OCTET}, data=corrupt
    )
    assert_error(r, 400, "DIGEST_INVALID")
    s = await reg.start_upload(repo)
    p = await patch_chunk(reg, s.location, corrupt, 0)
    assert p.status == 202, p
    assert_error(await put_final(reg, p.location, dig), 400, "DIGEST_INVALID")
    s = await reg.start_upload(repo)
    p = await reg.request("PATCH", s.location, headers={"Content-Type": OCTET}, data=corrupt)
    assert p.status == 202, p
    assert_error(await put_final(reg, p.location, dig), 400, "DIGEST_INVALID")
    assert (await reg.request("HEAD", f"/v2/{repo}/blobs/{dig}")).status == 404
    assert (await reg.request("HEAD", f"/v2/{repo}/blobs/{digest_of(corrupt)}")).status == 404


async def test_sha512_blobs_and_manifest(reg: Client) -> None:
    """sha512 digests through every blob API (POST+PUT, POST-only, chunked, streamed, mount,
    the empty blob, a mismatch: 400 DIGEST_INVALID), HEAD/GET/DELETE with a sha512
    Docker-Content-Digest, and a manifest pushed and pulled by its sha512 digest."""
    repo, other = unique_repo("sha512"), unique_repo("sha512-src")
    data = random_bytes(600)
    dig = digest_of(data, "sha512")
    assert await reg.push_blob(repo, data, "sha512") == dig
    await assert_blob(reg, repo, data, dig)
    one = random_bytes(512)
    r = await reg.request(
        "POST",
        f"/v2/{repo}/blobs/uploads/",
        params=[("digest", digest_of(one, "sha512"))],
        headers={"Content-Type": OCTET, "Content-Length": str(len(one))},
        data=one,
    )
    assert r.status == 201, f"{r}: {r.body[:300]!r}"
    assert r.headers["Docker-Content-Digest"] == digest_of(one, "sha512")
    await assert_blob(reg, repo, one, digest_of(one, "sha512"))
    s = await reg.start_upload(repo)
    size = await chunk_size(reg, s)
    big = random_bytes(3 * size - 5)
    big_dig = digest_of(big, "sha512")
    url = s.location
    for start in range(0, len(big), size):
        r = await patch_chunk(reg, url, big[start : start + size], start)
        assert r.status == 202, r
        url = r.location
    done = await put_final(reg, url, big_dig)
    assert done.status == 201, f"{done}: {done.body[:300]!r}"
    assert done.headers["Docker-Content-Digest"] == big_dig
    await assert_blob(reg, repo, big, big_dig)
    streamed = random_bytes(700)
    s = await reg.start_upload(repo)
    p = await reg.request("PATCH", s.location, headers={"Content-Type": OCTET}, data=streamed)
    assert p.status == 202, p
    done = await put_final(reg, p.location, digest_of(streamed, "sha512"))
    assert done.status == 201, f"{done}: {done.body[:300]!r}"
    await assert_blob(reg, repo, streamed, digest_of(streamed, "sha512"))
    assert_error(
        await put_final(reg, (await reg.start_upload(repo)).location, dig, data + b"oh no"),
        400,
        "DIGEST_INVALID",
    )
    empty = digest_of(b"", "sha512")
    done = await put_final(reg, (await reg.start_upload(repo)).location, empty)
    assert done.status == 201, f"{done}: {done.body[:300]!r}"
    await assert_blob(reg, repo, b"", empty)
    shared = random_bytes(300)
    shared_dig = await reg.push_blob(other, shared, "sha512")
    m = await reg.request(
        "POST",
        f"/v2/{repo}/blobs/uploads/",
        params=[("mount", shared_dig), ("from", other)],
        headers={"Content-Length": "0"},
    )
    assert m.status == 201, f"{m}: {m.body[:300]!r}"
    assert m.headers["Docker-Content-Digest"] == shared_dig
    await assert_blob(reg, repo, shared, shared_dig)
    img = image(algo="sha512")
    r = await reg.push_image(repo, img)
    assert r.headers["Docker-Content-Digest"] == img.manifest.digest
    assert img.manifest.digest.startswith("sha512:")
    await assert_manifest(reg, repo, img.manifest.digest, img.manifest)
    d = await reg.request("DELETE", f"/v2/{repo}/blobs/{dig}")
    assert d.status == 202, d
    assert (await reg.request("HEAD", f"/v2/{repo}/blobs/{dig}")).status == 404


async def test_empty_blob_and_empty_json_blob(reg: Client) -> None:
    """The zero-byte blob and ``{}``: pushed (POST+PUT and POST-only), HEAD Content-Length 0
    or 2, GET returns them exactly."""
    repo = unique_repo("empty")
    empty = digest_of(b"")
    s = await reg.start_upload(repo)
    r = await reg.request(
        "PUT",
        s.location,
        params=[("digest", empty)],
        headers={"Content-Type": OCTET, "Content-Length": "0"},
        data=b"",
    )
    assert r.status == 201, f"{r}: {r.body[:300]!r}"
    await assert_blob(reg, repo, b"", empty)
    r = await reg.request(
        "POST",
        f"/v2/{repo}/blobs/uploads/",
        params=[("digest", EMPTY_JSON.digest)],
        headers={"Content-Type": OCTET, "Content-Length": "2"},
        data=b"{}",
    )
    assert r.status == 201, f"{r}: {r.body[:300]!r}"
    await assert_blob(reg, repo, b"{}", EMPTY_JSON.digest)


async def test_cross_repository_mount_with_from(reg: Client) -> None:
    """POST ?mount=<d>&from=<repo>: 201, Location /v2/<name>/blobs/<d>, Docker-Content-Digest;
    deleting the mounted blob in one repository leaves the other one's."""
    src, dst = unique_repo("mount-src"), unique_repo("mount-dst")
    data = random_bytes(512)
    dig = await reg.push_blob(src, data)
    r = await reg.request(
        "POST",
        f"/v2/{dst}/blobs/uploads/",
        params=[("mount", dig), ("from", src)],
        headers={"Content-Length": "0"},
    )
    assert_blob_created(r, dst, dig)
    await assert_blob(reg, dst, data, dig)
    assert (await reg.request("DELETE", f"/v2/{dst}/blobs/{dig}")).status == 202
    assert (await reg.request("HEAD", f"/v2/{dst}/blobs/{dig}")).status == 404
    await assert_blob(reg, src, data, dig)


async def test_mount_of_an_unknown_blob_falls_back_to_an_upload_session(reg: Client) -> None:
    """Mount of a blob that exists nowhere, with or without from: 202 + an upload Location
    that then accepts the data (201)."""
    src, dst = unique_repo("mmiss-src"), unique_repo("mmiss-dst")
    await reg.push_blob(src, random_bytes(64))
    for params in ([("from", src)], []):
        data = random_bytes(512)
        dig = digest_of(data)
        r = await reg.request(
            "POST",
            f"/v2/{dst}/blobs/uploads/",
            params=[("mount", dig), *params],
            headers={"Content-Length": "0"},
        )
        assert r.status == 202, f"{params}: {r}"
        assert r.location_path.startswith(f"/v2/{dst}/blobs/uploads/"), r.location
        done = await put_final(reg, r.location, dig, data)
        assert done.status == 201, f"{done}: {done.body[:300]!r}"
        await assert_blob(reg, dst, data, dig)


async def test_anonymous_mount_without_from_of_a_known_blob(reg: Client) -> None:
    """POST ?mount=<d> without from, the blob being in another repository: 201 + Location."""
    src, dst = unique_repo("amount-src"), unique_repo("amount-dst")
    data = random_bytes(512)
    dig = await reg.push_blob(src, data)
    r = await reg.request(
        "POST",
        f"/v2/{dst}/blobs/uploads/",
        params=[("mount", dig)],
        headers={"Content-Length": "0"},
    )
    assert r.status == 201, f"{r}: {r.body[:300]!r}"
    assert r.location_path == f"/v2/{dst}/blobs/{dig}"
    await assert_blob(reg, dst, data, dig)


# -- manifests ---------------------------------------------------------------------------------


async def test_manifest_referencing_a_missing_blob_is_rejected(reg: Client) -> None:
    """A manifest whose layer or config was never pushed: 400 MANIFEST_BLOB_UNKNOWN, not stored."""
    repo = unique_repo("missingblob")
    img = image(layers=2)
    for b in img.blobs[:-1]:  # the last layer is missing
        await reg.push_blob(repo, b.data)
    r = await reg.request(
        "PUT",
        f"/v2/{repo}/manifests/v1",
        headers={"Content-Type": MT_MANIFEST},
        data=img.manifest.body,
    )
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")
    assert (await reg.get_manifest(repo, "v1")).status == 404
    assert (await reg.get_manifest(repo, img.manifest.digest)).status == 404
    img2 = image(layers=1)
    await reg.push_blob(repo, img2.blobs[1].data)  # config missing
    r = await reg.request(
        "PUT",
        f"/v2/{repo}/manifests/{img2.manifest.digest}",
        headers={"Content-Type": MT_MANIFEST},
        data=img2.manifest.body,
    )
    assert_error(r, 400, "MANIFEST_BLOB_UNKNOWN")


async def test_invalid_manifest_answers_400_manifest_invalid(reg: Client) -> None:
    """Bodies that are not a valid manifest (bad JSON, not an object, no schemaVersion 2):
    400 MANIFEST_INVALID."""
    repo = unique_repo("invalid")
    for body in (b"{not json", b"[1, 2]", canonical_json({"mediaType": MT_MANIFEST})):
        r = await reg.request(
            "PUT", f"/v2/{repo}/manifests/bad", headers={"Content-Type": MT_MANIFEST}, data=body
        )
        assert_error(r, 400, "MANIFEST_INVALID")
    assert (await reg.get_manifest(repo, "bad")).status == 404


async def test_manifest_put_digest_mismatch_and_malformed_digest(reg: Client) -> None:
    """PUT by a digest the body does not hash to (run.go "bad-digest-image"): 400 DIGEST_INVALID;
    PUT to sha256:baddigeststring: 400; GET of it: 400 or 404; PUT of an invalid manifest to
    sha256:totallywrong: 400 (or 404) with a spec error code."""
    repo = unique_repo("mandigest")
    img = image(layers=1)
    for b in img.blobs:
        await reg.push_blob(repo, b.data)
    padded = img.manifest.body + b"  "
    r = await reg.request(
        "PUT",
        f"/v2/{repo}/manifests/{img.manifest.digest}",
        headers={"Content-Type": MT_MANIFEST},
        data=padded,
    )
    assert_error(r, 400, "DIGEST_INVALID")
    assert (await reg.get_manifest(repo, img.manifest.digest)).status == 404
    r = await reg.request(
        "PUT",
        f"/v2/{repo}/manifests/sha256:baddigeststring",
        headers={"Content-Type": MT_MANIFEST},
        data=img.manifest.body,
    )
    assert r.status == 400, r
    assert codes(r)[0] in SPEC_ERROR_CODES
    g = await reg.get_manifest(repo, "sha256:baddigeststring")
    assert g.status in (400, 404), g
    r = await reg.request(
        "PUT",
        f"/v2/{repo}/manifests/sha256:totallywrong",
        headers={"Content-Type": MT_MANIFEST},
        data=b'{"schemaVersion": 2, "invalid": ',
    )
    assert r.status in (400, 404), r
    assert codes(r)[0] in SPEC_ERROR_CODES


async def test_image_index_nested_index_and_empty_index(reg: Client) -> None:
    """An index over two pushed manifests (by tag), an index of indexes and an empty index:
    201; GET with an OCI Accept returns each byte for byte with the index Content-Type."""
    repo = unique_repo("index")
    amd, arm = image(), image()
    await reg.push_image(repo, amd)
    await reg.push_image(repo, arm)
    idx = index(
        [amd.manifest, arm.manifest],
        platforms=[
            {"os": "linux", "architecture": "amd64"},
            {"os": "linux", "architecture": "arm64"},
        ],
    )
    r = await reg.push_manifest(repo, "multi", idx)
    assert r.headers["Docker-Content-Digest"] == idx.digest
    await assert_manifest(reg, repo, "multi", idx)
    await assert_manifest(reg, repo, idx.digest, idx)
    child = image(layers=1)
    await reg.push_image(repo, child)
    other = index([child.manifest])
    await reg.push_manifest(repo, other.digest, other)
    nested = index([idx, other])
    await reg.push_manifest(repo, "index-of-index", nested)
    await assert_manifest(reg, repo, "index-of-index", nested)
    empty = index([])
    await reg.push_manifest(repo, "empty-index", empty)
    await assert_manifest(reg, repo, "empty-index", empty)


async def test_manifest_variants_are_stored_byte_for_byte(reg: Client) -> None:
    """No layers, unknown extra fields, descriptors with ``data``, non-distributable layers that
    were never pushed, an artifact, an artifact whose layer is ``{}``: 201 and served exactly."""
    repo = unique_repo("variants")
    no_layers = image(layers=0)
    custom = image(layers=1, extra={"org.example.custom": {"k": [1, 2, 3]}})
    with_data = image(layers=1)
    layer = with_data.blobs[1]
    with_data.manifest.doc["layers"][0]["data"] = data_field(layer)
    with_data.manifest.body = canonical_json(with_data.manifest.doc)
    nd = image(layers=1)
    nd_digest = digest_of(random_bytes(32))
    nd.manifest.doc["layers"].insert(
        0,
        {
            "mediaType": MT_LAYER_ND,
            "digest": nd_digest,
            "size": 123456,
            "urls": [f"https://store.example.com/blobs/sha256/{nd_digest[7:]}"],
        },
    )
    nd.manifest.body = canonical_json(nd.manifest.doc)
    art = artifact(AT_SBOM)
    art_no_layers = Image(
        Manifest(
            {
                "schemaVersion": 2,
                "mediaType": MT_MANIFEST,
                "artifactType": AT_SIG,
                "config": EMPTY_JSON.descriptor(),
                "layers": [EMPTY_JSON.descriptor()],
            }
        ),
        [EMPTY_JSON],
    )
    # JSON written with different whitespace and key order than the server would produce
    pretty = image(layers=1)
    pretty.manifest.body = json.dumps(pretty.manifest.doc, indent="\t").encode()
    for i, img in enumerate([no_layers, custom, with_data, nd, art, art_no_layers, pretty]):
        await reg.push_image(repo, img, f"v{i}")
        await assert_manifest(reg, repo, f"v{i}", img.manifest)
        await assert_manifest(reg, repo, img.manifest.digest, img.manifest)


async def test_large_manifest_of_almost_4_mib_is_accepted(reg: Client) -> None:
    """run.go "large-manifest": 390 annotations of 10,000 bytes (~3.9 MB) is pushed and served."""
    repo = unique_repo("large")
    img = image(
        layers=1,
        annotations={f"large-annotation-{i}": "A" * 10000 for i in range(390)},
    )
    assert len(img.manifest.body) > 3_900_000
    await reg.push_image(repo, img, "large")
    await assert_manifest(reg, repo, "large", img.manifest)


async def test_manifest_with_subject_answers_oci_subject(reg: Client) -> None:
    """A manifest with ``subject`` (existing or not): 201 with OCI-Subject: <subject digest>."""
    repo = unique_repo("subject")
    subject = image()
    await reg.push_image(repo, subject, "base")
    ref = artifact(AT_SBOM, subject=subject.manifest.descriptor())
    r = await reg.push_image(repo, ref)
    assert r.headers["OCI-Subject"] == subject.manifest.digest
    missing = Manifest({**image().manifest.doc})
    dangling = artifact(AT_SIG, subject=missing.descriptor())
    r = await reg.push_image(repo, dangling, "dangling")
    assert r.headers["OCI-Subject"] == missing.digest
    await assert_manifest(reg, repo, "dangling", dangling.manifest)


async def test_manifest_put_by_digest_with_tag_parameters(reg: Client) -> None:
    """PUT /manifests/<digest>?tag=a&tag=b (spec 1.1+dev, run.go "tag-param"): 201 with an
    OCI-Tag header naming every tag (one header each or comma-separated); both tags resolve."""
    repo = unique_repo("tagparam")
    img = image(layers=1)
    for b in img.blobs:
        await reg.push_blob(repo, b.data)
    r = await reg.request(
        "PUT",
        f"/v2/{repo}/manifests/{img.manifest.digest}",
        params=[("tag", "tag-param-0"), ("tag", "tag-param-1")],
        headers={"Content-Type": MT_MANIFEST},
        data=img.manifest.body,
    )
    assert r.status == 201, f"{r}: {r.body[:300]!r}"
    announced = {t.strip() for v in r.headers.getall("OCI-Tag", []) for t in v.split(",")}
    assert announced == {"tag-param-0", "tag-param-1"}, r.headers
    for tag in ("tag-param-0", "tag-param-1"):
        await assert_manifest(reg, repo, tag, img.manifest)
    tags = await reg.request("GET", f"/v2/{repo}/tags/list")
    assert tags.json()["tags"] == ["tag-param-0", "tag-param-1"]


async def test_manifest_overwrite_moves_the_tag(reg: Client) -> None:
    """PUT of another manifest to an existing tag: 201, the tag serves the new one, the old one
    stays pullable by digest."""
    repo = unique_repo("retag")
    old, new = image(layers=1), image(layers=1)
    await reg.push_image(repo, old, "latest")
    await reg.push_image(repo, new, "latest")
    await assert_manifest(reg, repo, "latest", new.manifest)
    await assert_manifest(reg, repo, old.manifest.digest, old.manifest)


# -- referrers ---------------------------------------------------------------------------------


async def test_referrers_list_artifacts_of_a_subject(reg: Client) -> None:
    """GET /referrers/<subject>: 200 OCI index listing every referrer with mediaType, digest,
    size, artifactType (config mediaType when unset) and annotations, and nothing else."""
    repo = unique_repo("referrers")
    subject = image()
    await reg.push_image(repo, subject, "image")
    subj = subject.manifest.descriptor()
    sbom = artifact(AT_SBOM, subject=subj, annotations={"org.opencontainers.conformance": "a"})
    sig = artifact(AT_SIG, subject=subj, annotations={"org.example.k": "v", "x": "y"})
    plain = image(layers=1, subject=subj)  # no artifactType: listed as the config media type
    tagged = artifact(AT_SBOM, subject=subj, annotations={"org.opencontainers.conformance": "b"})
    for img in (sbom, sig, plain):
        await reg.push_image(repo, img)
    await reg.push_image(repo, tagged, "tagged-artifact")
    inner = image(layers=1)
    await reg.push_image(repo, inner)
    bundle = index(
        [inner.manifest],
        artifact_type=AT_BUNDLE,
        subject=subj,
        annotations={"org.example.bundle": "1"},
    )
    await reg.push_manifest(repo, bundle.digest, bundle)
    unrelated = artifact(AT_SBOM, subject=image().manifest.descriptor())
    await reg.push_image(repo, unrelated)
    r = await referrers(reg, repo, subject.manifest.digest)
    assert_referrers(r.json(), [sbom, sig, plain, tagged, bundle])
    by_digest = {d["digest"]: d for d in r.json()["manifests"]}
    assert by_digest[plain.manifest.digest]["artifactType"] == MT_CONFIG
    assert by_digest[bundle.digest]["mediaType"] == MT_INDEX
    assert by_digest[bundle.digest]["artifactType"] == AT_BUNDLE


async def test_referrers_artifact_type_filter(reg: Client) -> None:
    """?artifactType=: OCI-Filters-Applied: artifactType and only the matching referrers;
    a type nobody has: 200, the header, an empty list."""
    repo = unique_repo("refilter")
    subject = image(layers=1)
    await reg.push_image(repo, subject)
    subj = subject.manifest.descriptor()
    a1 = artifact(AT_SBOM, subject=subj, annotations={"n": "1"})
    a2 = artifact(AT_SBOM, subject=subj, annotations={"n": "2"})
    b = artifact(AT_SIG, subject=subj)
    for img in (a1, a2, b):
        await reg.push_image(repo, img)
    for at, members in ((AT_SBOM, (a1, a2)), (AT_SIG, (b,))):
        r = await referrers(reg, repo, subject.manifest.digest, artifactType=at)
        assert r.headers["OCI-Filters-Applied"] == "artifactType", r.headers
        assert_referrers(r.json(), list(members))
    r = await referrers(reg, repo, subject.manifest.digest, artifactType="application/x-none")
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert r.json()["manifests"] == []
    r = await referrers(reg, repo, subject.manifest.digest)
    assert "OCI-Filters-Applied" not in r.headers
    assert len(r.json()["manifests"]) == 3


async def test_referrers_of_an_unknown_or_missing_subject(reg: Client) -> None:
    """A digest nothing refers to: 200 with an empty OCI index; a subject that was never pushed
    but has a referrer: the referrer is listed."""
    repo = unique_repo("refempty")
    img = image(layers=1)
    await reg.push_image(repo, img, "x")
    r = await referrers(reg, repo, digest_of(random_bytes(16)))
    assert r.json()["manifests"] == []
    ghost = image(layers=1).manifest
    ref = artifact(AT_SIG, subject=ghost.descriptor(), annotations={"k": "v"})
    await reg.push_image(repo, ref)
    r = await referrers(reg, repo, ghost.digest)
    assert_referrers(r.json(), [ref])


async def test_a_referrer_too_large_for_the_index_is_refused_and_breaks_nothing(
    reg: Client,
) -> None:
    """A manifest with a subject whose annotations (100 KiB) would not fit the referrers
    index: 400 MANIFEST_INVALID and nothing written; the subject's other referrers still
    list (200), and annotations that fit are kept whole."""
    repo = unique_repo("refbig")
    subject = image(layers=1)
    await reg.push_image(repo, subject)
    subj = subject.manifest.descriptor()
    fits = artifact(AT_SBOM, subject=subj, annotations={"k": "v" * 30_000})
    await reg.push_image(repo, fits)
    big = artifact(AT_SIG, subject=subj, annotations={"k": "v" * 100 * 1024})
    for b in big.blobs:
        await reg.push_blob(repo, b.data, b.algo)
    r = await reg.request(
        "PUT",
        f"/v2/{repo}/manifests/{big.manifest.digest}",
        headers={"Content-Type": big.manifest.media_type},
        data=big.manifest.body,
    )
    assert r.status == 400, r
    assert "MANIFEST_INVALID" in r.body.decode()
    gone = await reg.get_manifest(repo, big.manifest.digest)
    assert gone.status == 404, gone
    r = await referrers(reg, repo, subject.manifest.digest)
    assert r.status == 200, r
    assert_referrers(r.json(), [fits])


async def test_deleted_referrer_leaves_the_list(reg: Client) -> None:
    """DELETE of a referrer manifest removes it from its subject's referrers list."""
    repo = unique_repo("refdel")
    subject = image(layers=1)
    await reg.push_image(repo, subject)
    subj = subject.manifest.descriptor()
    keep, gone = artifact(AT_SBOM, subject=subj), artifact(AT_SIG, subject=subj)
    await reg.push_image(repo, keep)
    await reg.push_image(repo, gone)
    d = await reg.request("DELETE", f"/v2/{repo}/manifests/{gone.manifest.digest}")
    assert d.status == 202, d
    r = await referrers(reg, repo, subject.manifest.digest)
    assert_referrers(r.json(), [keep])


# -- tags --------------------------------------------------------------------------------------


async def test_tags_list_with_n_last_and_link_pagination(reg: Client) -> None:
    """tags/list: every tag in lexical order; ?n= pages with Link rel="next" until the end
    (no Link on the last page); ?last= alone returns the tags after it."""
    repo = unique_repo("tags")
    img = image(layers=1)
    await reg.push_image(repo, img)
    tags = [f"t{i:02d}" for i in range(10)] + ["latest", "v1", "v1.10", "v1.9", "v1_0", "v1-0"]
    for t in tags:
        await reg.push_manifest(repo, t, img.manifest)
    want = sorted(tags)
    r = await reg.request("GET", f"/v2/{repo}/tags/list", auth=None)
    assert r.status == 200, r
    assert r.headers["Content-Type"].split(";")[0] == "application/json"
    assert r.json() == {"name": repo, "tags": want}
    assert "Link" not in r.headers
    pages: list[list[str]] = []
    url: str | None = reg.url(f"/v2/{repo}/tags/list?n=5")
    while url is not None:
        page = await reg.request("GET", url)
        assert page.status == 200, page
        assert page.json()["name"] == repo
        pages.append(page.json()["tags"])
        url = page.next_link()
        assert len(pages) <= 4, "pagination does not end"
    assert pages == [want[0:5], want[5:10], want[10:15], want[15:]]
    half = want[len(want) // 2 - 1]
    r = await reg.request("GET", f"/v2/{repo}/tags/list", params=[("last", half)])
    assert r.json()["tags"] == want[len(want) // 2 :]
    r = await reg.request("GET", f"/v2/{repo}/tags/list", params=[("n", "3"), ("last", half)])
    assert r.json()["tags"] == want[len(want) // 2 : len(want) // 2 + 3]
    r = await reg.request("GET", f"/v2/{repo}/tags/list", params=[("n", "100")])
    assert r.json()["tags"] == want
    assert "Link" not in r.headers


# -- deletes -----------------------------------------------------------------------------------


async def test_delete_manifest_by_digest(reg: Client) -> None:
    """DELETE /manifests/<digest>: 202; HEAD and GET by digest and by its tag: 404
    MANIFEST_UNKNOWN; the tag leaves tags/list; a second DELETE: 404 MANIFEST_UNKNOWN."""
    repo = unique_repo("delman")
    img, keep = image(layers=1), image(layers=1)
    await reg.push_image(repo, img, "doomed")
    await reg.push_image(repo, keep, "kept")
    r = await reg.request("DELETE", f"/v2/{repo}/manifests/{img.manifest.digest}")
    assert r.status == 202, f"{r}: {r.body[:300]!r}"
    for ref in (img.manifest.digest, "doomed"):
        assert (await reg.get_manifest(repo, ref, "HEAD")).status == 404
        assert_error(await reg.get_manifest(repo, ref), 404, "MANIFEST_UNKNOWN")
    tags = await reg.request("GET", f"/v2/{repo}/tags/list")
    assert tags.json()["tags"] == ["kept"]
    await assert_manifest(reg, repo, "kept", keep.manifest)
    again = await reg.request("DELETE", f"/v2/{repo}/manifests/{img.manifest.digest}")
    assert_error(again, 404, "MANIFEST_UNKNOWN")


async def test_delete_tag_keeps_the_manifest(reg: Client) -> None:
    """DELETE /manifests/<tag>: 202; that tag: 404; other tags and the digest still resolve."""
    repo = unique_repo("deltag")
    img = image(layers=1)
    await reg.push_image(repo, img, "a")
    await reg.push_manifest(repo, "b", img.manifest)
    r = await reg.request("DELETE", f"/v2/{repo}/manifests/a")
    assert r.status == 202, f"{r}: {r.body[:300]!r}"
    assert (await reg.get_manifest(repo, "a", "HEAD")).status == 404
    assert_error(await reg.get_manifest(repo, "a"), 404, "MANIFEST_UNKNOWN")
    await assert_manifest(reg, repo, "b", img.manifest)
    await assert_manifest(reg, repo, img.manifest.digest, img.manifest)
    assert (await reg.request("GET", f"/v2/{repo}/tags/list")).json()["tags"] == ["b"]
    assert_error(await reg.request("DELETE", f"/v2/{repo}/manifests/a"), 404, "MANIFEST_UNKNOWN")


async def test_delete_blob(reg: Client) -> None:
    """DELETE /blobs/<digest>: 202; HEAD: 404; GET: 404 BLOB_UNKNOWN; again: 404 BLOB_UNKNOWN."""
    repo = unique_repo("delblob")
    data = random_bytes(256)
    dig = await reg.push_blob(repo, data)
    r = await reg.request("DELETE", f"/v2/{repo}/blobs/{dig}")
    assert r.status == 202, f"{r}: {r.body[:300]!r}"
    assert (await reg.request("HEAD", f"/v2/{repo}/blobs/{dig}")).status == 404
    assert_error(await reg.request("GET", f"/v2/{repo}/blobs/{dig}"), 404, "BLOB_UNKNOWN")
    assert_error(await reg.request("DELETE", f"/v2/{repo}/blobs/{dig}"), 404, "BLOB_UNKNOWN")
    # pushing it again brings it back
    assert await reg.push_blob(repo, data) == dig
    await assert_blob(reg, repo, data, dig)


async def test_conformance_delete_order_for_a_data_set(reg: Client) -> None:
    """run.go TestDelete: tags, then manifests newest first, then blobs; each DELETE 202 and the
    HEAD right after it 404 (atomic)."""
    repo = unique_repo("delorder")
    amd, arm = image(), image()
    await reg.push_image(repo, amd)
    await reg.push_image(repo, arm)
    idx = index([amd.manifest, arm.manifest])
    await reg.push_manifest(repo, idx.digest, idx)
    await reg.push_manifest(repo, "index", idx)
    r = await reg.request("DELETE", f"/v2/{repo}/manifests/index")
    assert r.status == 202, r
    assert (await reg.get_manifest(repo, "index", "HEAD")).status == 404
    for m in (idx, arm.manifest, amd.manifest):
        r = await reg.request("DELETE", f"/v2/{repo}/manifests/{m.digest}")
        assert r.status == 202, f"{r}: {r.body[:300]!r}"
        assert (await reg.get_manifest(repo, m.digest, "HEAD")).status == 404
    for b in amd.blobs + arm.blobs:
        r = await reg.request("DELETE", f"/v2/{repo}/blobs/{b.digest}")
        assert r.status == 202, r
        assert (await reg.request("HEAD", f"/v2/{repo}/blobs/{b.digest}")).status == 404


# -- auth --------------------------------------------------------------------------------------


async def test_anonymous_writes_answer_401_with_a_challenge(reg: Client) -> None:
    """Anonymous POST upload, PUT manifest, DELETE: 401 UNAUTHORIZED as an OCI JSON error with
    WWW-Authenticate (Basic or Bearer); anonymous pulls of pushed content still work."""
    repo = unique_repo("anon")
    img = image(layers=1)
    await reg.push_image(repo, img, "v1")
    attempts = [
        ("POST", f"/v2/{repo}/blobs/uploads/", {}),
        ("PUT", f"/v2/{repo}/manifests/v2", {"Content-Type": MT_MANIFEST}),
        ("DELETE", f"/v2/{repo}/manifests/{img.manifest.digest}", {}),
        ("DELETE", f"/v2/{repo}/blobs/{img.blobs[1].digest}", {}),
    ]
    for method, path, headers in attempts:
        data = img.manifest.body if method == "PUT" else None
        r = await reg.request(method, path, headers=headers, data=data, auth=None)
        assert_error(r, 401, "UNAUTHORIZED")
        assert r.headers["Content-Type"].split(";")[0] == "application/json", r.headers
        scheme, params = parse_challenge(r.headers["WWW-Authenticate"])
        assert scheme in ("basic", "bearer"), r.headers["WWW-Authenticate"]
        assert "realm" in params, r.headers["WWW-Authenticate"]
    # api.go caches credentials per method class: the status GET of an upload goes out
    # anonymous first, so it must be answered 401 (then retried) or served, never 403/404
    session = await reg.start_upload(repo)
    st = await reg.request("GET", session.location, auth=None)
    if st.status != 204:
        assert_error(st, 401, "UNAUTHORIZED")
        assert "WWW-Authenticate" in st.headers
    wrong = Creds(WRITER.login, "not-the-password")
    assert_error(
        await reg.request("POST", f"/v2/{repo}/blobs/uploads/", auth=wrong), 401, "UNAUTHORIZED"
    )
    await assert_manifest(reg, repo, "v1", img.manifest)
    await assert_manifest(reg, repo, img.manifest.digest, img.manifest)


async def test_conformance_client_login_flow(reg: Client) -> None:
    """As api.go does it: anonymous first, then on 401 answer the challenge (Basic, or a token
    from the realm with Basic credentials) and retry: the push succeeds."""
    repo = unique_repo("login")
    first = await reg.request("POST", f"/v2/{repo}/blobs/uploads/", auth=None)
    assert first.status == 401, first
    scheme, params = parse_challenge(first.headers["WWW-Authenticate"])
    if scheme == "basic":
        authz = WRITER.encode()
    else:
        assert scheme == "bearer", first.headers["WWW-Authenticate"]
        query = [("service", params.get("service", ""))]
        if params.get("scope"):
            query.append(("scope", params["scope"]))
        tok = await reg.request(
            "GET",
            reg.url(params["realm"]) if params["realm"].startswith("/") else params["realm"],
            params=query,
            headers={"Accept": "application/json"},
            auth=WRITER,
        )
        assert tok.status == 200, f"{tok}: {tok.body[:300]!r}"
        doc = tok.json()
        token = doc.get("token") or doc.get("access_token")
        assert token, doc
        authz = f"Bearer {token}"
    retry = await reg.request(
        "POST", f"/v2/{repo}/blobs/uploads/", auth=None, raw_headers={"Authorization": authz}
    )
    assert retry.status == 202, f"{retry}: {retry.body[:300]!r}"
    data = random_bytes(64)
    done = await reg.request(
        "PUT",
        retry.location,
        params=[("digest", digest_of(data))],
        headers={"Content-Type": OCTET},
        data=data,
        auth=None,
        raw_headers={"Authorization": authz},
    )
    assert done.status == 201, done


async def test_reader_may_pull_but_not_push_or_delete(reg: Client) -> None:
    """A valid htpasswd user who is not a writer: pulls 200; POST, PUT, DELETE: 403 DENIED."""
    repo = unique_repo("reader")
    img = image(layers=1)
    await reg.push_image(repo, img, "v1")
    for method, path, headers in [
        ("POST", f"/v2/{repo}/blobs/uploads/", {}),
        ("PUT", f"/v2/{repo}/manifests/v2", {"Content-Type": MT_MANIFEST}),
        ("DELETE", f"/v2/{repo}/manifests/{img.manifest.digest}", {}),
        ("DELETE", f"/v2/{repo}/blobs/{img.blobs[1].digest}", {}),
    ]:
        data = img.manifest.body if method == "PUT" else None
        r = await reg.request(method, path, headers=headers, data=data, auth=READER)
        assert_error(r, 403, "DENIED")
    r = await reg.request(
        "GET", f"/v2/{repo}/manifests/v1", headers={"Accept": ACCEPT}, auth=READER
    )
    assert r.status == 200 and r.body == img.manifest.body, r
    b = img.blobs[1]
    r = await reg.request("GET", f"/v2/{repo}/blobs/{b.digest}", auth=READER)
    assert r.status == 200 and r.body == b.data, r
    r = await reg.request("GET", f"/v2/{repo}/tags/list", auth=READER)
    assert r.status == 200 and r.json()["tags"] == ["v1"], r
    # nothing the reader tried changed anything
    await assert_manifest(reg, repo, img.manifest.digest, img.manifest)
    assert (await reg.get_manifest(repo, "v2")).status == 404


async def test_upload_session_is_bound_to_its_repository(reg: Client) -> None:
    """An upload session of one repository is unknown under another: 404 BLOB_UPLOAD_UNKNOWN."""
    a, b = unique_repo("sess-a"), unique_repo("sess-b")
    s = await reg.start_upload(a)
    path = s.location_path
    session_id = path.rsplit("/", 1)[-1]
    assert session_id, s.location
    r = await reg.request("GET", f"/v2/{b}/blobs/uploads/{session_id}")
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN")
