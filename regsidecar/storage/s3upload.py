"""S3 write helpers: request bodies that can be sent again, file hashing, multipart uploads.

>>> await multipart_upload(driver, key, staged_path, size)  # doctest: +SKIP

Split from :mod:`regsidecar.storage.s3`, whose :class:`~regsidecar.storage.s3.S3Driver` sends
every request (signing, clock correction, retries, error translation); this module decides
what to send. A multipart upload is CreateMultipartUpload, ``part_bytes`` parts a few at a time
(each hashed, signed and retried on its own), CompleteMultipartUpload; any failure, the
caller's cancellation included, aborts it so no parts are left stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, TypeVar
from xml.sax.saxutils import escape

from regsidecar.errors import NotFound, StorageError, UpstreamUnavailable

if TYPE_CHECKING:
    from regsidecar.storage.s3 import S3Driver

log = logging.getLogger("regsidecar.storage.s3")
T = TypeVar("T")

# Any namespace, or none: S3 uses doc/2006-03-01, some S3-compatible stores another or none.
NS = "{*}"
PARTS_IN_FLIGHT = 4
MAX_PARTS = 10_000  # S3's limit; a file that would need more gets bigger parts
MAX_PUT = 5 * 1024**3  # S3's limit for one PUT
FILE_CHUNK = 1024 * 1024  # read size when hashing or streaming a file
# Error codes S3 may put in a 200 answer (CompleteMultipartUpload, DeleteObjects) that are
# worth another try.
TRANSIENT_CODES = frozenset({"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout"})


async def multipart_upload(driver: S3Driver, key: str, path: str, size: int) -> None:
    """CreateMultipartUpload, the parts, CompleteMultipartUpload; AbortMultipartUpload
    when anything fails (or the caller gives up), so no parts are left behind."""
    url = driver._object_url(key)
    _, answer = await writing(
        key, driver._retry(partial(driver._call, "POST", url + "?uploads", key), key)
    )
    upload_id = parse_xml(answer, key, "CreateMultipartUpload").findtext(f"{NS}UploadId")
    if not upload_id:
        raise UpstreamUnavailable(key, "CreateMultipartUpload answer without an UploadId")
    upload = f"{url}?uploadId={urllib.parse.quote(upload_id, safe='-_.~')}"
    try:
        etags = await _parts(driver, key, upload, path, size)
        await writing(key, _complete(driver, key, upload, etags))
    except BaseException:
        await _abort(driver, key, upload)
        raise


async def _parts(driver: S3Driver, key: str, upload: str, path: str, size: int) -> list[str]:
    """Upload the parts, ``PARTS_IN_FLIGHT`` at a time; their ETags in order."""
    part = max(driver.options.part_bytes, -(-size // MAX_PARTS))
    count = max(1, -(-size // part))
    etags = [""] * count
    numbers = iter(range(count))

    async def upload_parts() -> None:
        for i in numbers:
            offset = i * part
            length = min(part, size - offset)
            body = Body(await hash_file(key, path, offset, length), length, path, offset)
            part_url = upload.replace("?", f"?partNumber={i + 1}&", 1)
            headers, _ = await driver._retry(
                partial(driver._call, "PUT", part_url, key, None, body), key, sends=length
            )
            etag = headers.get("ETag")
            if not etag:
                raise UpstreamUnavailable(key, f"UploadPart {i + 1} answer without an ETag")
            etags[i] = etag

    workers = [asyncio.create_task(upload_parts()) for _ in range(min(PARTS_IN_FLIGHT, count))]
    try:
        await asyncio.gather(*workers)
    finally:
        # On the first failure, stop the others before the upload is aborted.
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return etags


async def _complete(driver: S3Driver, key: str, upload: str, etags: list[str]) -> None:
    parts = "".join(
        f"<Part><PartNumber>{n}</PartNumber><ETag>{escape(e)}</ETag></Part>"
        for n, e in enumerate(etags, 1)
    )
    body = Body.of(f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode())
    tries = 0

    async def once() -> None:
        nonlocal tries
        tries += 1
        try:
            _, answer = await driver._call("POST", upload, key, None, body)
        except NotFound:
            # NoSuchUpload on a retry: the try before may have completed the upload and
            # lost its answer. Then the object is there, with the multipart ETag.
            if tries > 1 and await _etag(driver, key) == multipart_etag(etags):
                return
            raise
        # S3 may answer 200 and report an error in the body (it sends the status early
        # and keeps the connection alive while it assembles the object).
        root = parse_xml(answer, key, "CompleteMultipartUpload")
        if root.tag.rpartition("}")[2] == "Error":
            code = root.findtext(f"{NS}Code") or ""
            message = f"CompleteMultipartUpload: S3 200 {code}"
            if code in TRANSIENT_CODES:
                raise UpstreamUnavailable(key, message)
            raise StorageError(key, message)

    await driver._retry(once, key)


async def _etag(driver: S3Driver, key: str) -> str | None:
    try:
        headers, _ = await driver._retry(
            partial(driver._call, "HEAD", driver._object_url(key), key), key
        )
    except NotFound:
        return None
    return headers.get("ETag", "").strip('"') or None


async def _abort(driver: S3Driver, key: str, upload: str) -> None:
    """AbortMultipartUpload, best effort: the write is failing already. Not under the
    retry policy: its deadline (maybe the client request's) may be what ran out."""
    error: BaseException | None = None
    for attempt in range(3):
        try:
            async with asyncio.timeout(driver.options.read_timeout_s):
                await driver._call("DELETE", upload, key)
            return
        except NotFound:
            return  # no such upload (any more)
        except (StorageError, TimeoutError) as exc:
            error = exc
            if not isinstance(exc, UpstreamUnavailable | TimeoutError):
                break
            await asyncio.sleep(driver.retry.backoff(attempt))
    log.warning(
        "could not abort a multipart upload; its parts stay stored until removed",
        extra={
            "key": key,
            "error": str(error)[:200],
            "fix": "a bucket lifecycle rule AbortIncompleteMultipartUpload removes them",
        },
    )


@dataclass(frozen=True, slots=True)
class Body:
    """A request body that can be sent again (a retry): bytes, or ``length`` bytes of the
    file ``path`` from ``offset``, streamed from disk; ``sha256`` is signed."""

    sha256: str
    length: int
    path: str | None = None
    offset: int = 0
    data: bytes = b""

    @classmethod
    def of(cls, data: bytes) -> Body:
        return cls(hashlib.sha256(data).hexdigest(), len(data), data=data)

    def content(self) -> bytes | AsyncIterator[bytes]:
        if self.path is None:
            return self.data
        return read_file(self.path, self.offset, self.length)


async def read_file(path: str, offset: int, length: int) -> AsyncIterator[bytes]:
    f = await asyncio.to_thread(open, path, "rb")
    try:
        f.seek(offset)
        remaining = length
        while remaining:
            chunk = await asyncio.to_thread(f.read, min(FILE_CHUNK, remaining))
            if not chunk:
                raise StorageError(path, "file shorter than when it was hashed")
            remaining -= len(chunk)
            yield chunk
    finally:
        f.close()


async def hash_file(key: str, path: str, offset: int, length: int) -> str:
    """Hex sha256 of ``length`` bytes of ``path`` from ``offset`` (in a worker thread)."""

    def digest() -> str:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            f.seek(offset)
            remaining = length
            while remaining:
                chunk = f.read(min(FILE_CHUNK, remaining))
                if not chunk:
                    raise StorageError(key, f"source {path} shorter than {offset + length} bytes")
                h.update(chunk)
                remaining -= len(chunk)
        return h.hexdigest()

    try:
        return await asyncio.to_thread(digest)
    except OSError as exc:
        raise StorageError(key, f"source {path}: {exc.strerror or exc}") from exc


async def writing(key: str, call: Awaitable[T]) -> T:
    """A write's answer: a 404 there is a missing bucket or upload, not a missing key."""
    try:
        return await call
    except NotFound as exc:
        raise StorageError(key, "S3 404 (no such bucket, or upload)") from exc


def multipart_etag(etags: list[str]) -> str | None:
    """The ETag S3 gives a multipart object: md5 of the parts' md5s, '-', the part count."""
    try:
        md5s = b"".join(bytes.fromhex(e.strip('"')) for e in etags)
    except ValueError:
        return None  # not md5 ETags (e.g. SSE-KMS): cannot tell
    return f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(etags)}"


def parse_xml(body: bytes, key: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(body)
    except ET.ParseError as exc:
        raise UpstreamUnavailable(key, f"unreadable {what} answer") from exc
