"""Writing the store, beyond the conformance suite: how S3 writes go over the wire (one PUT or
a multipart upload, aborted on failure, bodies signed with their sha256) and how the
filesystem driver writes its files (atomic, hard-linked when it can, nothing left behind)."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import os
import stat
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from regsidecar.clock.signer import ClockedS3Signer
from regsidecar.config import PushSettings, Settings
from regsidecar.errors import StorageError, UpstreamUnavailable
from regsidecar.retry import RetryPolicy
from regsidecar.storage import filesystem, s3, s3upload
from regsidecar.storage.filesystem import FilesystemDriver
from regsidecar.storage.s3 import AccessDenied, S3Driver, S3Options
from tests.conftest import require
from tests.rig.faultproxy import FaultProxy
from tests.rig.moto import MotoServer
from tests.storage_conformance import (
    LARGE_FILE_BYTES,
    MULTIPART_BYTES,
    SMALL_FILE_BYTES,
    make_file,
    read_all,
)

FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.01, max_delay_s=0.05, deadline_s=20.0)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
OpenS3 = Callable[..., Awaitable[S3Driver]]


@pytest.fixture
async def open_s3(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OpenS3]:
    """Open S3 drivers (multipart from MULTIPART_BYTES, parts of that size); closed after."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    opened: list[S3Driver] = []

    async def open_driver(
        endpoint_url: str, bucket: str, *, retry: RetryPolicy = FAST_RETRY, **options: Any
    ) -> S3Driver:
        options = {
            "multipart_threshold_bytes": MULTIPART_BYTES,
            "part_bytes": MULTIPART_BYTES,
            **options,
        }
        driver = await S3Driver.open(
            S3Options(
                bucket=bucket,
                endpoint_url=endpoint_url,
                path_style=True,
                region="us-east-1",
                **options,
            ),
            retry=retry,
        )
        opened.append(driver)
        return driver

    yield open_driver
    for driver in opened:
        await driver.close()


def uploads_in_progress(moto: MotoServer, bucket: str) -> list[Any]:
    uploads: list[Any] = moto.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return uploads


# -- S3 on moto: which requests a write makes ---------------------------------------------


async def test_small_file_goes_up_in_one_put(
    moto: MotoServer, bucket: str, open_s3: OpenS3, tmp_path: Path
) -> None:
    driver = await open_s3(moto.endpoint_url, bucket)
    data = make_file(tmp_path / "f", SMALL_FILE_BYTES)
    since = moto.mark()
    await driver.write_file("blobs/small/data", str(tmp_path / "f"))
    assert moto.count("PUT", key="blobs/small/data", since=since) == 1
    assert moto.count("POST", since=since) == 0
    assert moto.get(bucket, "blobs/small/data") == data


async def test_large_file_goes_up_in_parts(
    moto: MotoServer, bucket: str, open_s3: OpenS3, tmp_path: Path
) -> None:
    """12 MiB + 3 bytes in 5 MiB parts: CreateMultipartUpload, 3 UploadPart, Complete."""
    driver = await open_s3(moto.endpoint_url, bucket)
    data = make_file(tmp_path / "f", LARGE_FILE_BYTES)
    since = moto.mark()
    await driver.write_file("blobs/large/data", str(tmp_path / "f"))
    assert moto.count("POST", "?uploads", key="blobs/large/data", since=since) == 1
    parts = [r for r in moto.requests(since=since) if r.method == "PUT"]
    assert sorted(r.query.split("&")[0] for r in parts) == [f"partNumber={n}" for n in (1, 2, 3)]
    assert all("uploadId=" in r.query and r.status == 200 for r in parts)
    assert moto.count("POST", "uploadId=", key="blobs/large/data", since=since) == 1
    assert moto.get(bucket, "blobs/large/data") == data
    assert uploads_in_progress(moto, bucket) == []


async def test_parts_grow_to_stay_within_the_part_limit(
    moto: MotoServer,
    bucket: str,
    open_s3: OpenS3,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S3 takes at most 10,000 parts (here: 2); a bigger file gets bigger parts."""
    monkeypatch.setattr(s3upload, "MAX_PARTS", 2)
    driver = await open_s3(moto.endpoint_url, bucket)
    data = make_file(tmp_path / "f", LARGE_FILE_BYTES)
    since = moto.mark()
    await driver.write_file("blobs/large/data", str(tmp_path / "f"))
    assert moto.count("PUT", "partNumber=", since=since) == 2
    assert moto.get(bucket, "blobs/large/data") == data


async def test_delete_tree_sends_delete_objects_in_batches(
    moto: MotoServer,
    bucket: str,
    open_s3: OpenS3,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(s3, "_DELETE_BATCH", 4)
    driver = await open_s3(moto.endpoint_url, bucket)
    for i in range(10):
        await driver.write(f"repo/_uploads/{i}/data", b"x")
    await driver.write("repo/_layers/link", b"x")
    since = moto.mark()
    await driver.delete_tree("repo/_uploads")
    assert moto.count("POST", "?delete", since=since) == 3
    assert moto.list_keys(bucket) == ["repo/_layers/link"]


# -- S3 through the fault proxy: failures --------------------------------------------------


async def test_transient_errors_on_a_put_are_retried(
    moto: MotoServer, bucket: str, proxy: FaultProxy, open_s3: OpenS3
) -> None:
    driver = await open_s3(proxy.url, bucket)
    proxy.fail(503, method="PUT", times=2)
    await driver.write("repo/link", b"sha256:abc")
    assert proxy.count("PUT", "repo/link") == 3
    assert moto.get(bucket, "repo/link") == b"sha256:abc"


async def test_a_big_body_gets_time_beyond_the_retry_deadline(
    moto: MotoServer, bucket: str, proxy: FaultProxy, open_s3: OpenS3, tmp_path: Path
) -> None:
    """A 0.5 s deadline cuts a small write held up for 1 s, but a 4 MiB body is allowed the
    time to go up at 1 MiB/s."""
    policy = RetryPolicy(max_attempts=1, deadline_s=0.5)
    driver = await open_s3(proxy.url, bucket, retry=policy)
    data = make_file(tmp_path / "f", 4 * 1024 * 1024)
    proxy.stall(1.0, method="PUT")
    with pytest.raises(UpstreamUnavailable, match="deadline"):
        await driver.write("k", b"x")
    await driver.write_file("blob", str(tmp_path / "f"))
    assert moto.get(bucket, "blob") == data


async def test_a_failing_part_aborts_the_upload(
    moto: MotoServer, bucket: str, proxy: FaultProxy, open_s3: OpenS3, tmp_path: Path
) -> None:
    """Part 2 fails every try: the error surfaces, the upload is aborted, no parts stay."""
    driver = await open_s3(proxy.url, bucket)
    make_file(tmp_path / "f", LARGE_FILE_BYTES)
    proxy.fail(500, method="PUT", path_contains="partNumber=2&")
    with pytest.raises(UpstreamUnavailable):
        await driver.write_file("blobs/large/data", str(tmp_path / "f"))
    assert proxy.count("PUT", "partNumber=2&") == FAST_RETRY.max_attempts
    assert proxy.count("DELETE", "uploadId=") == 1
    assert uploads_in_progress(moto, bucket) == []
    assert moto.list_keys(bucket) == []


async def test_a_cancelled_upload_is_aborted(
    moto: MotoServer, bucket: str, proxy: FaultProxy, open_s3: OpenS3, tmp_path: Path
) -> None:
    """The caller gives up (a client hung up) while parts are on the way."""
    driver = await open_s3(proxy.url, bucket)
    make_file(tmp_path / "f", LARGE_FILE_BYTES)
    proxy.stall(60, method="PUT", path_contains="partNumber=")
    task = asyncio.create_task(driver.write_file("blobs/large/data", str(tmp_path / "f")))
    # The proxy runs in its own thread: poll its log without blocking this loop.
    await asyncio.to_thread(proxy.wait_for, lambda _: proxy.count("PUT", "partNumber=") == 3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    proxy.clear()
    # Let the proxy finish with the released parts before the test ends: the cancelled
    # parts' connections, their send buffers full, may close only once it has read them.
    await asyncio.to_thread(proxy.wait_for, lambda log: all(r.finished is not None for r in log))
    assert proxy.count("DELETE", "uploadId=") == 1
    assert uploads_in_progress(moto, bucket) == []


# -- S3 on moto with signature checks ------------------------------------------------------


@pytest.fixture(scope="module")
def signed_moto() -> Iterator[MotoServer]:
    require("moto_server")
    with MotoServer(auth=True) as server:
        yield server


async def test_signed_writes_are_accepted_by_an_s3_checking_signatures(
    signed_moto: MotoServer, open_s3: OpenS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every kind of write, signed over its body's sha256, passes moto's SigV4 check; a
    write with a wrong secret is refused (the check is real)."""
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    signed_moto.create_bucket(bucket)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", signed_moto.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", signed_moto.secret_key)
    driver = await open_s3(signed_moto.endpoint_url, bucket)
    small = make_file(tmp_path / "small", SMALL_FILE_BYTES)
    large = make_file(tmp_path / "large", LARGE_FILE_BYTES, seed=1)
    await driver.write("a/link", b"sha256:abc")
    await driver.write_file("a/small", str(tmp_path / "small"))
    await driver.write_file("a/large", str(tmp_path / "large"))
    assert await read_all(driver, "a/small") == small
    assert await read_all(driver, "a/large") == large
    await driver.delete("a/link")
    # moto (5.2) with signature checks refuses every listing whose prefix holds a '/' (boto3's
    # own too), so delete_tree cannot list here: send its DeleteObjects directly.
    await driver._delete_objects(["a/small", "a/large"], "a")
    assert signed_moto.list_keys(bucket) == []

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    wrong = await open_s3(signed_moto.endpoint_url, bucket)
    with pytest.raises(AccessDenied, match="SignatureDoesNotMatch"):
        await wrong.write("a/link", b"sha256:abc")


# -- S3 against a strict fake: payload hashes, answers moto cannot give --------------------


class StrictS3:
    """Just enough of S3's write API to check every body against its signed sha256 (moto
    trusts the header) and to answer a 200 with an error inside, as S3 may."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.log: list[tuple[str, str]] = []
        self.bodies_checked = 0
        self.complete_errors: list[str] = []  # codes for the next Complete answers
        self.delete_errors: list[str] = []  # codes for the next DeleteObjects answers
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{path:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.log.append((request.method, request.path_qs))
        body = await request.read()
        if request.method in ("PUT", "POST"):
            problem = self._check(request, body)
            if problem:
                return _s3_error(400, problem)
            self.bodies_checked += 1
        key, query = request.match_info["path"].partition("/")[2], request.query
        if request.method == "PUT" and "partNumber" in query:
            self.uploads[query["uploadId"]][int(query["partNumber"])] = body
            return web.Response(headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})
        if request.method == "PUT":
            self.objects[key] = body
            self.etags[key] = f'"{hashlib.md5(body).hexdigest()}"'
            return web.Response(headers={"ETag": self.etags[key]})
        if request.method == "POST" and "uploads" in query:
            upload = uuid.uuid4().hex
            self.uploads[upload] = {}
            return _answer("InitiateMultipartUploadResult", f"<UploadId>{upload}</UploadId>")
        if request.method == "POST" and "uploadId" in query:
            if self.complete_errors:
                return _answer("Error", f"<Code>{self.complete_errors.pop(0)}</Code>")
            if query["uploadId"] not in self.uploads:
                return _s3_error(404, "NoSuchUpload")
            parts = self.uploads.pop(query["uploadId"])
            self.objects[key] = b"".join(parts[n] for n in sorted(parts))
            md5s = b"".join(hashlib.md5(parts[n]).digest() for n in sorted(parts))
            self.etags[key] = f'"{hashlib.md5(md5s).hexdigest()}-{len(parts)}"'
            return _answer("CompleteMultipartUploadResult")
        if request.method == "POST" and "delete" in query:
            if self.delete_errors:
                code = self.delete_errors.pop(0)
                return _answer("DeleteResult", f"<Error><Key>k</Key><Code>{code}</Code></Error>")
            return _answer("DeleteResult")
        if request.method == "DELETE" and "uploadId" in query:
            self.uploads.pop(query["uploadId"], None)
            return web.Response(status=204)
        if request.method == "GET" and query.get("list-type") == "2":
            keys = sorted(k for k in self.objects if k.startswith(query.get("prefix", "")))
            contents = "".join(f"<Contents><Key>{k}</Key></Contents>" for k in keys)
            return _answer("ListBucketResult", f"<IsTruncated>false</IsTruncated>{contents}")
        if request.method == "HEAD" and key in self.objects:
            return web.Response(headers={"ETag": self.etags[key]})
        return web.Response(status=404 if request.method == "HEAD" else 200)

    @staticmethod
    def _check(request: web.Request, body: bytes) -> str:
        claimed = request.headers.get("x-amz-content-sha256")
        signed = request.headers.get("Authorization", "").partition("SignedHeaders=")[2]
        if "x-amz-content-sha256" not in signed.partition(",")[0].split(";"):
            return "MissingSignedPayloadHash"
        if claimed != hashlib.sha256(body).hexdigest():
            return "XAmzContentSHA256Mismatch"
        if request.headers.get("Transfer-Encoding") or request.content_length != len(body):
            return "MissingContentLength"
        if "delete" in request.query:
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            if request.headers.get("Content-MD5") != md5:
                return "InvalidDigest"
        return ""


def _answer(root: str, inner: str = "") -> web.Response:
    """A 200 with an S3 XML body (in S3's namespace, as S3 sends it)."""
    ns = "http://s3.amazonaws.com/doc/2006-03-01/"
    return web.Response(body=f'<{root} xmlns="{ns}">{inner}</{root}>'.encode())


def _s3_error(status: int, code: str) -> web.Response:
    return web.Response(status=status, body=f"<Error><Code>{code}</Code></Error>".encode())


@pytest.fixture
async def strict(
    aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
) -> AsyncIterator[tuple[StrictS3, str]]:
    fake = StrictS3()
    server = await aiohttp_server(fake.app)
    yield fake, str(server.make_url("/")).rstrip("/")


async def test_every_body_is_signed_with_its_sha256(
    strict: tuple[StrictS3, str], open_s3: OpenS3, tmp_path: Path
) -> None:
    """PUT, UploadPart, Complete and DeleteObjects bodies hash to their signed
    x-amz-content-sha256 and go with a Content-Length (DeleteObjects with Content-MD5)."""
    fake, url = strict
    driver = await open_s3(url, "bucket")
    small = make_file(tmp_path / "small", SMALL_FILE_BYTES)
    large = make_file(tmp_path / "large", LARGE_FILE_BYTES, seed=2)
    await driver.write("r/link", b"sha256:abc")
    await driver.write_file("r/small", str(tmp_path / "small"))
    await driver.write_file("r/large", str(tmp_path / "large"))
    await driver.delete_tree("r")
    # link, small, create, 3 parts, complete, delete: none refused
    assert fake.bodies_checked == 8, fake.log
    assert fake.objects["r/small"] == small
    assert fake.objects["r/large"] == large


async def test_complete_answered_200_with_a_transient_error_is_retried(
    strict: tuple[StrictS3, str], open_s3: OpenS3, tmp_path: Path
) -> None:
    fake, url = strict
    driver = await open_s3(url, "bucket")
    data = make_file(tmp_path / "f", LARGE_FILE_BYTES)
    fake.complete_errors = ["InternalError"]
    await driver.write_file("blob", str(tmp_path / "f"))
    assert fake.objects["blob"] == data
    assert [m for m, p in fake.log if "uploadId=" in p and m == "POST"] == ["POST", "POST"]


async def test_complete_answered_200_with_an_error_fails_and_aborts(
    strict: tuple[StrictS3, str], open_s3: OpenS3, tmp_path: Path
) -> None:
    fake, url = strict
    driver = await open_s3(url, "bucket")
    make_file(tmp_path / "f", LARGE_FILE_BYTES)
    fake.complete_errors = ["InvalidPart"]
    with pytest.raises(StorageError, match="InvalidPart") as err:
        await driver.write_file("blob", str(tmp_path / "f"))
    assert not isinstance(err.value, UpstreamUnavailable)
    assert ("DELETE" in [m for m, p in fake.log if "uploadId=" in p]) and fake.uploads == {}
    assert "blob" not in fake.objects


async def test_keys_delete_objects_could_not_delete_are_an_error(
    strict: tuple[StrictS3, str], open_s3: OpenS3
) -> None:
    fake, url = strict
    driver = await open_s3(url, "bucket")
    await driver.write("r/link", b"x")
    fake.delete_errors = ["AccessDenied"]
    with pytest.raises(AccessDenied, match="did not delete 1 keys"):
        await driver.delete_tree("r")
    fake.delete_errors = ["InternalError"]
    await driver.delete_tree("r")  # transient: retried


async def test_a_lost_complete_answer_is_recognised_by_the_objects_etag(
    strict: tuple[StrictS3, str], open_s3: OpenS3, tmp_path: Path
) -> None:
    """Complete succeeds but its answer is cut; the retry gets NoSuchUpload (the upload is
    gone), and the object's multipart ETag shows that it did complete."""
    fake, url = strict
    data = make_file(tmp_path / "f", LARGE_FILE_BYTES)
    with FaultProxy(url) as proxy:
        driver = await open_s3(proxy.url, "bucket")
        proxy.reset_after(0, times=1, method="POST", path_contains="uploadId=")
        await driver.write_file("blob", str(tmp_path / "f"))
        assert [r.status for r in proxy.select("POST", "uploadId=")] == [200, 404]
        assert proxy.count("HEAD", "/bucket/blob") == 1
        assert proxy.count("DELETE") == 0
    assert fake.objects["blob"] == data


async def test_writes_report_to_the_metrics_hook(
    strict: tuple[StrictS3, str], open_s3: OpenS3, tmp_path: Path
) -> None:
    _, url = strict
    driver = await open_s3(url, "bucket")
    seen: list[tuple[str, str]] = []
    driver.on_request = lambda method, outcome, _s: seen.append((method, outcome))
    make_file(tmp_path / "f", LARGE_FILE_BYTES)
    await driver.write_file("blob", str(tmp_path / "f"))
    await driver.delete("blob")
    assert sorted(set(seen)) == [("DELETE", "ok"), ("POST", "ok"), ("PUT", "ok")]
    assert len(seen) == 1 + 3 + 1 + 1


def test_signer_signs_a_given_payload_hash_and_keeps_the_empty_one_otherwise() -> None:
    class Frozen:
        access_key, secret_key, token = "AKID", "secret", None

        def get_frozen_credentials(self) -> Frozen:
            return self

    signer = ClockedS3Signer(Frozen(), "us-east-1", now=lambda: 1_800_000_000.0)
    url = "http://127.0.0.1:9/bucket/key"
    get = signer.sign("GET", url, {})
    assert get["X-Amz-Content-SHA256"] == EMPTY_SHA256
    digest = hashlib.sha256(b"body").hexdigest()
    put = signer.sign("PUT", url, {"Content-Length": "4"}, payload_sha256=digest)
    assert put["X-Amz-Content-SHA256"] == digest
    assert "x-amz-content-sha256" in put["Authorization"].split("SignedHeaders=")[1]
    other = signer.sign("PUT", url, {"Content-Length": "4"}, payload_sha256=EMPTY_SHA256)
    assert other["Authorization"] != put["Authorization"], "the hash is part of the signature"


async def test_from_settings_takes_the_push_part_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    settings = Settings(
        storage="s3://bucket/root",
        push=PushSettings(multipart_threshold_bytes=100 * 1024**2, part_bytes=8 * 1024**2),
    )
    driver = await S3Driver.from_settings(settings)
    try:
        assert driver.options.multipart_threshold_bytes == 100 * 1024**2
        assert driver.options.part_bytes == 8 * 1024**2
    finally:
        await driver.close()


# -- filesystem ----------------------------------------------------------------------------


def every_file(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


async def test_filesystem_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    driver = FilesystemDriver(str(tmp_path / "reg"))
    make_file(tmp_path / "src", SMALL_FILE_BYTES)
    await driver.write("a/link", b"x")
    await driver.write("a/link", b"y")
    await driver.write_file("a/data", str(tmp_path / "src"))
    with pytest.raises(StorageError):
        await driver.write_file("a/other", str(tmp_path / "absent"))
    assert every_file(tmp_path / "reg") == ["a/data", "a/link"]


async def test_filesystem_write_file_links_and_gives_a_readable_mode(tmp_path: Path) -> None:
    """Same filesystem: a hard link (no copy), with the mode of a new file here rather than
    the staged file's 0600."""
    driver = FilesystemDriver(str(tmp_path / "reg"))
    source = tmp_path / "staged"
    make_file(source, SMALL_FILE_BYTES)
    source.chmod(0o600)
    await driver.write_file("blobs/x/data", str(source))
    stored = tmp_path / "reg" / "blobs/x/data"
    assert stored.stat().st_ino == source.stat().st_ino
    assert stat.S_IMODE(stored.stat().st_mode) == filesystem._new_file_mode()
    source.unlink()  # what the caller does next
    assert stored.read_bytes()[:8] == (0).to_bytes(8, "big")


async def test_filesystem_write_file_copies_when_it_cannot_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: str, dst: str, **_: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    driver = FilesystemDriver(str(tmp_path / "reg"))
    data = make_file(tmp_path / "staged", SMALL_FILE_BYTES)
    await driver.write_file("blobs/x/data", str(tmp_path / "staged"))
    stored = tmp_path / "reg" / "blobs/x/data"
    assert stored.read_bytes() == data
    assert stored.stat().st_ino != (tmp_path / "staged").stat().st_ino


@pytest.mark.parametrize("key", ["../outside", "a/../../outside", "/etc/outside"])
async def test_filesystem_refuses_keys_outside_the_root(tmp_path: Path, key: str) -> None:
    driver = FilesystemDriver(str(tmp_path / "reg"))
    with pytest.raises(StorageError, match="outside the storage root"):
        await driver.write(key, b"x")
    with pytest.raises(StorageError, match="outside the storage root"):
        await driver.delete_tree(key)
    assert not (tmp_path / "outside").exists()


async def test_filesystem_delete_keeps_the_root(tmp_path: Path) -> None:
    driver = FilesystemDriver(str(tmp_path / "reg"))
    await driver.write("only/key", b"x")
    await driver.delete("only/key")
    assert (tmp_path / "reg").is_dir()
    assert list((tmp_path / "reg").iterdir()) == []
