"""A registry:2 tree in an S3 bucket, read and written with aiohttp and signed by botocore.

botocore resolves credentials (instance role, environment, profile; refreshed as they expire)
and computes SigV4 signatures; aiohttp performs the requests, so blob bodies stream through the
event loop with no thread per download and no whole-object reads.

>>> driver = await S3Driver.open(S3Options(bucket="images", region="eu-west-1"))  # doctest: +SKIP
>>> await driver.write_file(layout.blob_data(digest), staged_path)  # doctest: +SKIP

Every body is signed with its sha256 (``x-amz-content-sha256``), so S3 refuses bytes that
changed on the way. A file is hashed in a worker thread, then streamed from disk; from
``multipart_threshold_bytes`` on it goes up as a multipart upload, ``part_bytes`` a part, a few
parts at a time, each retried on its own; a failed upload is aborted. PUT, DELETE and
DeleteObjects are idempotent and retried like reads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime
import email.utils
import hashlib
import logging
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar
from xml.sax.saxutils import escape

import aiohttp
import botocore.session
from multidict import CIMultiDictProxy
from yarl import URL

from regsidecar.clock.signer import ClockedS3Signer
from regsidecar.clock.skew import SkewEstimator
from regsidecar.config import Settings
from regsidecar.errors import AlreadyExists, NotFound, StorageError, UpstreamUnavailable
from regsidecar.oci.ranges import answers_range, range_header
from regsidecar.retry import DeadlineExceeded, RetryPolicy, retrying
from regsidecar.storage.base import (
    CHUNK,
    ObjectInfo,
    RequestHook,
    observed,
    read_bounded,
    source_size,
)
from regsidecar.storage.s3upload import (
    MAX_PUT,
    NS,
    TRANSIENT_CODES,
    Body,
    hash_file,
    multipart_upload,
    parse_xml,
    writing,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

_DELETE_BATCH = 1000  # keys per DeleteObjects request (S3's limit)
# A body upload is given at least the time to go at this rate (bytes/s), whatever the retry
# deadline: 64 MiB in one PUT must not fail a 30 s deadline on a slow link.
_SLOWEST_UPLOAD = 1024 * 1024


class ClockSkewed(StorageError):
    """S3 refused the request's signing time (more than 15 minutes from its own clock)."""


class AccessDenied(StorageError):
    """S3 answered 403: the credentials lack a permission (or the key is missing and the
    role lacks s3:ListBucket, in which case S3 says 403 instead of 404)."""


@dataclass(frozen=True, slots=True)
class S3Options:
    bucket: str
    region: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    path_style: bool = False
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    max_connections: int = 64
    list_page_size: int = 1000  # ListObjectsV2 max-keys; small values exercise pagination
    # write_file: files at least this big go up as a multipart upload in parts of part_bytes
    # (S3: 5 MiB to 5 GiB a part); smaller ones as one PUT.
    multipart_threshold_bytes: int = 64 * 1024**2
    part_bytes: int = 16 * 1024**2


class S3Driver:
    """Driver over ``s3://bucket/prefix``; keys are relative to the prefix."""

    def __init__(
        self,
        options: S3Options,
        session: aiohttp.ClientSession,
        credentials: Any,
        region: str,
        *,
        clock: SkewEstimator | None = None,
        correct_clock: bool = True,
        warn_offset_s: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.options = options
        self.retry = retry or RetryPolicy()
        self.on_retry: Callable[[], None] | None = None  # metrics hook
        # Told of every transient failure (SlowDown, 5xx, resets, timeouts) that is retried:
        # the download window backs off on it.
        self.on_throttle: Callable[[], None] | None = None
        self.on_request: RequestHook | None = None  # metrics hook
        self.region = region
        self._session = session
        self._credentials = credentials
        self.clock = clock or SkewEstimator()
        self.correct_clock = correct_clock
        self._warn_offset_s = warn_offset_s
        self._warned = False
        self._sign_time: Callable[[], float] = self.clock.now if correct_clock else time.time
        self._signer = (
            ClockedS3Signer(credentials, region, now=self._sign_time) if credentials else None
        )
        self._prefix = options.prefix.strip("/")
        self._base = _base_url(options, region)
        self.description = f"s3://{options.bucket}/{self._prefix}".rstrip("/")

    @classmethod
    async def open(
        cls,
        options: S3Options,
        *,
        clock: SkewEstimator | None = None,
        correct_clock: bool = True,
        warn_offset_s: float = 60.0,
        retry: RetryPolicy | None = None,
    ) -> S3Driver:
        """Resolve credentials and region (possibly via IMDS, so in a thread) and connect."""
        bsession = botocore.session.Session()
        credentials = await asyncio.to_thread(bsession.get_credentials)
        region = options.region or bsession.get_config_variable("region") or "us-east-1"
        connector = aiohttp.TCPConnector(limit=options.max_connections, ttl_dns_cache=60)
        timeout = aiohttp.ClientTimeout(
            total=None, connect=options.connect_timeout_s, sock_read=options.read_timeout_s
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )
        return cls(
            options,
            session,
            credentials,
            region,
            clock=clock,
            correct_clock=correct_clock,
            warn_offset_s=warn_offset_s,
            retry=retry,
        )

    @classmethod
    async def from_settings(
        cls,
        settings: Settings,
        *,
        timeout_s: float | None = None,
        max_connections: int | None = None,
        retry: RetryPolicy | None = None,
    ) -> S3Driver:
        """The driver for ``settings.storage`` (an ``s3://`` URL). ``timeout_s`` caps the
        connect and read timeouts and ``retry`` replaces the configured policy: a short-lived
        tool (doctor) reports trouble rather than riding it out."""
        s3 = settings.s3
        connect, read = s3.connect_timeout_s, s3.read_timeout_s
        if timeout_s is not None:
            connect, read = min(connect, timeout_s), min(read, timeout_s)
        return await cls.open(
            S3Options(
                bucket=settings.s3_bucket,
                prefix=settings.s3_prefix,
                region=s3.region,
                endpoint_url=s3.endpoint_url,
                path_style=s3.path_style,
                connect_timeout_s=connect,
                read_timeout_s=read,
                max_connections=max_connections or s3.max_connections,
                multipart_threshold_bytes=int(settings.push.multipart_threshold_bytes),
                part_bytes=int(settings.push.part_bytes),
            ),
            correct_clock=settings.clock.correct,
            warn_offset_s=settings.clock.max_offset_warn_s,
            retry=retry or settings.retry.policy(),
        )

    @property
    def credentials_method(self) -> str | None:
        """Where botocore found the credentials (``iam-role``, ``env``, ``shared-credentials-
        file``...), or None when there are none; never the credentials themselves."""
        if self._credentials is None:
            return None
        return str(getattr(self._credentials, "method", "unknown"))

    # -- requests -------------------------------------------------------------------------

    def _object_url(self, key: str) -> str:
        full = f"{self._prefix}/{key}" if self._prefix else key
        return self._base + urllib.parse.quote(full, safe="/-_.~")

    async def _headers(
        self, method: str, url: str, extra: dict[str, str], payload_sha256: str | None
    ) -> dict[str, str]:
        if self._signer is None:
            return extra
        refresh_needed = getattr(self._credentials, "refresh_needed", None)
        if refresh_needed is not None and refresh_needed():
            # A refresh may call IMDS or STS: keep it off the event loop.
            await asyncio.to_thread(self._credentials.get_frozen_credentials)
        return self._signer.sign(method, url, extra, payload_sha256=payload_sha256)

    async def _request(
        self,
        method: str,
        url: str,
        key: str,
        headers: dict[str, str] | None = None,
        body: Body | None = None,
    ) -> aiohttp.ClientResponse:
        return await observed(
            self.on_request, method, self._exchange(method, url, key, headers, body)
        )

    async def _call(
        self,
        method: str,
        url: str,
        key: str,
        headers: dict[str, str] | None = None,
        body: Body | None = None,
    ) -> tuple[CIMultiDictProxy[str], bytes]:
        """One request whose answer is small: its headers and whole body."""
        resp = await self._request(method, url, key, headers, body)
        try:
            return resp.headers, await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnavailable(key, f"{type(exc).__name__}: {exc}") from exc
        finally:
            resp.release()

    async def _exchange(
        self,
        method: str,
        url: str,
        key: str,
        headers: dict[str, str] | None,
        payload: Body | None,
    ) -> aiohttp.ClientResponse:
        if self.clock.stale:
            await self.sample_clock()
        extra = dict(headers or {})
        sha256 = None
        if payload is not None:
            # Always a length: S3 takes no plain chunked uploads.
            extra["Content-Length"] = str(payload.length)
            sha256 = payload.sha256
        for attempt in (1, 2):
            signed_at = self._sign_time()
            signed = await self._headers(method, url, extra, sha256)
            sent = time.time()
            try:
                resp = await self._session.request(
                    method,
                    URL(url, encoded=True),
                    headers=signed,
                    # A new stream for each try: a body is sent again after a skew rejection.
                    data=payload.content() if payload is not None else None,
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise UpstreamUnavailable(key, f"{type(exc).__name__}: {exc}") from exc
            received = time.time()
            server_date = _http_date(resp.headers.get("Date"))
            if resp.status < 300:
                self._observe(server_date, sent, received)
                return resp
            try:
                body = await resp.read() if method != "HEAD" else b""
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamUnavailable(key, f"{type(exc).__name__}: {exc}") from exc
            finally:
                resp.release()
            code = _error_code(body)
            if resp.status == 403 and _is_skew_rejection(code, server_date, signed_at):
                server_time = _server_time(body) or server_date
                if server_time is not None:
                    self.clock.observe_rejection(server_time, received)
                    self._check_offset()
                if self.correct_clock and attempt == 1:
                    log.warning(
                        "S3 rejected the request time; retrying with the corrected clock",
                        extra={"offset_s": round(self.clock.offset, 1), "key": key},
                    )
                    continue
                raise ClockSkewed(key, self._skew_message())
            self._observe(server_date, sent, received)
            if resp.status == 404:
                raise NotFound(key)
            if resp.status == 416:
                raise NotFound(key, "range not satisfiable")
            if resp.status == 403:
                raise AccessDenied(key, f"S3 403 {code or 'Forbidden'}")
            if resp.status == 412 and "If-None-Match" in extra:
                raise AlreadyExists(key, f"S3 412 {code}")
            if resp.status >= 500 or code in ("SlowDown", "RequestTimeout"):
                raise UpstreamUnavailable(key, f"S3 {resp.status} {code}")
            raise StorageError(key, f"S3 {resp.status} {code}")
        raise AssertionError("unreachable")  # pragma: no cover

    # -- clock --------------------------------------------------------------------------------

    async def sample_clock(self) -> float:
        """Learn S3's time from one cheap unsigned HEAD of the bucket (any answer carries a
        Date header, even a 403); done before the first request and after a local clock jump.
        Returns the offset."""
        sent = time.time()
        try:
            async with self._session.head(URL(self._base, encoded=True)) as resp:
                received = time.time()
                self._observe(_http_date(resp.headers.get("Date")), sent, received)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.debug("clock sample failed", extra={"error": str(exc)})
        # Either way, do not ask again before the next jump: requests keep feeding samples.
        self.clock.stale = False
        return self.clock.offset

    def _observe(self, server_date: float | None, sent: float, received: float) -> None:
        if server_date is None:
            return
        self.clock.observe(server_date, sent, received)
        self._check_offset()

    def _check_offset(self) -> None:
        offset = self.clock.offset
        if abs(offset) > self._warn_offset_s and not self._warned:
            self._warned = True
            log.warning(
                "local clock is far from S3's",
                extra={
                    "offset_s": round(offset, 1),
                    "correcting": self.correct_clock,
                    "fix": "sync the clock: 'chronyc makestep' (or 'timedatectl set-ntp true'); "
                    'in a boot2docker-style VM set it from the host: date --set "$(date -u)"',
                },
            )
        elif abs(offset) <= self._warn_offset_s:
            self._warned = False

    def _skew_message(self) -> str:
        return (
            f"S3 rejected the request time (RequestTimeTooSkewed): the local clock is "
            f"{self.clock.offset:+.0f} s from S3's. Fix the clock (chronyc makestep) or enable "
            f"clock.correct"
        )

    # -- Driver ---------------------------------------------------------------------------

    async def _retry(self, call: Callable[[], Awaitable[T]], key: str, *, sends: int = 0) -> T:
        """Run one logical call under the retry policy; transient trouble is retried, the
        deadline and the last error surface as UpstreamUnavailable. ``sends``: bytes of
        body each try uploads; the deadline grows to allow them at _SLOWEST_UPLOAD."""
        policy = self.retry
        if sends / _SLOWEST_UPLOAD > policy.deadline_s:
            policy = dataclasses.replace(policy, deadline_s=sends / _SLOWEST_UPLOAD)
        try:
            return await retrying(call, policy, transient=_transient, on_retry=self._on_retry)
        except DeadlineExceeded as exc:
            raise UpstreamUnavailable(key, str(exc)) from exc

    def _on_retry(self, exc: BaseException, attempt: int, delay: float) -> None:
        log.info(
            "retrying S3",
            extra={"error": str(exc)[:200], "attempt": attempt + 1, "delay_s": round(delay, 3)},
        )
        if self.on_retry is not None:
            self.on_retry()
        if self.on_throttle is not None:
            self.on_throttle()

    async def get(self, key: str, *, max_bytes: int) -> bytes:
        async def once() -> bytes:
            resp = await self._request("GET", self._object_url(key), key)
            try:
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise StorageError(key, f"object larger than {max_bytes} bytes")
                data = await read_bounded(resp.content, max_bytes)
                if len(data) > max_bytes:
                    raise StorageError(key, f"object larger than {max_bytes} bytes")
                return data
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamUnavailable(key, f"{type(exc).__name__}: {exc}") from exc
            finally:
                resp.release()

        return await self._retry(once, key)

    async def size(self, key: str) -> int:
        return (await self.stat(key)).size

    async def stat(self, key: str) -> ObjectInfo:
        async def once() -> ObjectInfo:
            resp = await self._request("HEAD", self._object_url(key), key)
            resp.release()
            if resp.content_length is None:
                raise UpstreamUnavailable(key, "S3 HEAD without Content-Length")
            return ObjectInfo(resp.content_length, resp.headers.get("ETag"))

        return await self._retry(once, key)

    async def stream(
        self, key: str, offset: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The object from ``offset`` to ``end`` (inclusive; None: its end). Opening is
        retried; an error mid-body is raised as UpstreamUnavailable for the caller to resume
        from where it got to. A ranged answer must be the range asked for (206 and its
        Content-Range), so bytes are never written at the wrong offset."""
        headers = range_header(offset, end)
        resp = await self._retry(
            lambda: self._request("GET", self._object_url(key), key, headers), key
        )
        try:
            if not answers_range(resp.status, resp.headers.get("Content-Range"), offset, end):
                raise UpstreamUnavailable(
                    key, f"S3 did not answer the range asked for ({resp.status})"
                )
            async for chunk in resp.content.iter_chunked(CHUNK):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnavailable(key, f"{type(exc).__name__}: {exc}") from exc
        finally:
            resp.release()

    def _dir(self, prefix: str) -> str:
        """The bucket's key prefix for the directory ``prefix``: ends in '/' ('' = all)."""
        full = f"{self._prefix}/{prefix}" if self._prefix else prefix
        full = full.rstrip("/")
        return f"{full}/" if full else ""

    async def _pages(
        self, full: str, what: str, *, delimiter: str | None = None
    ) -> AsyncIterator[ET.Element]:
        """ListObjectsV2 of the keys starting with ``full``, page after page."""
        token: str | None = None
        while True:
            params = {
                "list-type": "2",
                "prefix": full,
                "max-keys": str(self.options.list_page_size),
            }
            if delimiter:
                params["delimiter"] = delimiter
            if token:
                params["continuation-token"] = token
            query = urllib.parse.urlencode(
                sorted(params.items()), quote_via=urllib.parse.quote, safe="-_.~"
            )
            _, body = await self._retry(
                partial(self._call, "GET", f"{self._base}?{query}", what), what
            )
            root = parse_xml(body, what, "ListObjectsV2")
            yield root
            if (root.findtext(f"{NS}IsTruncated") or "false").lower() != "true":
                return
            token = root.findtext(f"{NS}NextContinuationToken")
            if not token:
                return

    async def list_children(self, prefix: str) -> list[str]:
        full = self._dir(prefix)
        names: list[str] = []
        async for root in self._pages(full, prefix, delimiter="/"):
            for cp in root.findall(f"{NS}CommonPrefixes"):
                p = cp.findtext(f"{NS}Prefix") or ""
                name = p[len(full) :].rstrip("/")
                if name:
                    names.append(name)
        return sorted(names)

    def local_path(self, key: str) -> str | None:
        return None

    async def close(self) -> None:
        await self._session.close()

    # -- WritableDriver -------------------------------------------------------------------

    async def write(self, key: str, data: bytes) -> None:
        await self._put(key, Body.of(data))

    async def write_new(self, key: str, data: bytes) -> None:
        body = Body.of(data)
        call = partial(self._call, "PUT", self._object_url(key), key, {"If-None-Match": "*"}, body)
        await writing(key, self._retry(call, key, sends=body.length))

    async def write_file(self, key: str, path: str) -> None:
        size = await source_size(key, path)
        if size < self.options.multipart_threshold_bytes and size <= MAX_PUT:
            digest = await hash_file(key, path, 0, size)
            await self._put(key, Body(digest, size, path=path))
        else:
            await multipart_upload(self, key, path, size)

    async def _put(self, key: str, body: Body) -> None:
        call = partial(self._call, "PUT", self._object_url(key), key, None, body)
        await writing(key, self._retry(call, key, sends=body.length))

    async def delete(self, key: str) -> None:
        # S3 answers 204 for a missing key; a 404 (some stores) is no error either.
        with contextlib.suppress(NotFound):
            await self._retry(partial(self._call, "DELETE", self._object_url(key), key), key)

    async def delete_tree(self, prefix: str) -> None:
        if not prefix.strip("/"):
            raise StorageError(prefix, "refusing to delete the whole store")
        keys = await self._keys(self._dir(prefix), prefix)
        for i in range(0, len(keys), _DELETE_BATCH):
            batch = keys[i : i + _DELETE_BATCH]
            await self._retry(partial(self._delete_objects, batch, prefix), prefix)

    async def _delete_objects(self, keys: list[str], what: str) -> None:
        """One DeleteObjects request (quiet: the answer lists only the keys that failed)."""
        xml = "".join(f"<Object><Key>{escape(k)}</Key></Object>" for k in keys)
        data = f"<Delete><Quiet>true</Quiet>{xml}</Delete>".encode()
        # S3 requires Content-MD5 (or another checksum header) on DeleteObjects.
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        _, answer = await self._call(
            "POST", self._base + "?delete", what, {"Content-MD5": md5}, Body.of(data)
        )
        errors = parse_xml(answer, what, "DeleteObjects").findall(f"{NS}Error")
        if errors:
            codes = sorted({e.findtext(f"{NS}Code") or "" for e in errors})
            message = (
                f"S3 did not delete {len(errors)} keys ({', '.join(codes)}), "
                f"e.g. {errors[0].findtext(f'{NS}Key')}"
            )
            if set(codes) <= TRANSIENT_CODES:
                raise UpstreamUnavailable(what, message)
            if "AccessDenied" in codes:
                raise AccessDenied(what, message)
            raise StorageError(what, message)

    async def list_keys(self, prefix: str) -> list[str]:
        full = self._dir(prefix)
        # A key ending in '/' is a console's "folder" marker, not an object of the tree.
        return [k[len(full) :] for k in await self._keys(full, prefix) if not k.endswith("/")]

    async def _keys(self, full: str, what: str) -> list[str]:
        """Every bucket key starting with ``full``, sorted."""
        keys: list[str] = []
        async for root in self._pages(full, what):
            keys.extend(k for c in root.findall(f"{NS}Contents") if (k := c.findtext(f"{NS}Key")))
        return sorted(keys)


def _base_url(options: S3Options, region: str) -> str:
    """URL of the bucket, ending in '/': path style or virtual-hosted style."""
    bucket = options.bucket
    if options.endpoint_url:
        endpoint = URL(options.endpoint_url)
        if options.path_style:
            return f"{str(endpoint).rstrip('/')}/{bucket}/"
        host = f"{bucket}.{endpoint.host}"
        port = f":{endpoint.explicit_port}" if endpoint.explicit_port else ""
        return f"{endpoint.scheme}://{host}{port}/"
    if options.path_style or "." in bucket:
        return f"https://s3.{region}.amazonaws.com/{bucket}/"
    return f"https://{bucket}.s3.{region}.amazonaws.com/"


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, UpstreamUnavailable)


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def _server_time(body: bytes) -> float | None:
    """ServerTime of a RequestTimeTooSkewed error body (ISO 8601, e.g. 2026-11-22T00:10:00Z)."""
    try:
        text = ET.fromstring(body).findtext("ServerTime") or ""
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except (ET.ParseError, ValueError):
        return None


# S3 allows 15 minutes; a 403 whose Date is further than this from our signing time is a
# rejection of the time even when the body (a HEAD has none) does not say so.
_SKEW_LIMIT_S = 14 * 60


def _is_skew_rejection(code: str, server_date: float | None, signed_at: float) -> bool:
    if code == "RequestTimeTooSkewed":
        return True
    return not code and server_date is not None and abs(server_date - signed_at) > _SKEW_LIMIT_S


def _error_code(body: bytes) -> str:
    try:
        return ET.fromstring(body).findtext("Code") or ""
    except ET.ParseError:
        return ""
