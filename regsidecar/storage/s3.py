"""A registry:2 tree in an S3 bucket, read with aiohttp and signed by botocore.

botocore resolves credentials (instance role, environment, profile; refreshed as they expire)
and computes SigV4 signatures; aiohttp performs the requests, so blob bodies stream through the
event loop with no thread per download and no whole-object reads.

>>> driver = await S3Driver.open(S3Options(bucket="images", region="eu-west-1"))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import botocore.session
from yarl import URL

from regsidecar.clock.signer import ClockedS3Signer
from regsidecar.errors import NotFound, StorageError, UpstreamUnavailable
from regsidecar.storage.base import CHUNK

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


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


class S3Driver:
    """Driver over ``s3://bucket/prefix``; keys are relative to the prefix."""

    def __init__(
        self,
        options: S3Options,
        session: aiohttp.ClientSession,
        credentials: Any,
        region: str,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.region = region
        self._session = session
        self._credentials = credentials
        self._signer = ClockedS3Signer(credentials, region, now=now) if credentials else None
        self._prefix = options.prefix.strip("/")
        self._base = _base_url(options, region)
        self.description = f"s3://{options.bucket}/{self._prefix}".rstrip("/")

    @classmethod
    async def open(cls, options: S3Options, *, now: Callable[[], float] = time.time) -> S3Driver:
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
        return cls(options, session, credentials, region, now=now)

    # -- requests -------------------------------------------------------------------------

    def _object_url(self, key: str) -> str:
        full = f"{self._prefix}/{key}" if self._prefix else key
        return self._base + urllib.parse.quote(full, safe="/-_.~")

    async def _headers(self, method: str, url: str, extra: dict[str, str]) -> dict[str, str]:
        if self._signer is None:
            return extra
        refresh_needed = getattr(self._credentials, "refresh_needed", None)
        if refresh_needed is not None and refresh_needed():
            # A refresh may call IMDS or STS: keep it off the event loop.
            await asyncio.to_thread(self._credentials.get_frozen_credentials)
        return self._signer.sign(method, url, extra)

    async def _request(
        self, method: str, url: str, key: str, headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        signed = await self._headers(method, url, headers or {})
        try:
            resp = await self._session.request(method, URL(url, encoded=True), headers=signed)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamUnavailable(key, f"{type(exc).__name__}: {exc}") from exc
        if resp.status < 300:
            return resp
        try:
            body = await resp.read() if method != "HEAD" else b""
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnavailable(key, f"{type(exc).__name__}: {exc}") from exc
        finally:
            resp.release()
        code = _error_code(body)
        if resp.status == 404:
            raise NotFound(key)
        if resp.status == 416:
            raise NotFound(key, "range not satisfiable")
        if resp.status == 403:
            raise AccessDenied(key, f"S3 403 {code or 'Forbidden'}")
        if resp.status >= 500 or code in ("SlowDown", "RequestTimeout"):
            raise UpstreamUnavailable(key, f"S3 {resp.status} {code}")
        raise StorageError(key, f"S3 {resp.status} {code}")

    # -- Driver ---------------------------------------------------------------------------

    async def get(self, key: str, *, max_bytes: int) -> bytes:
        resp = await self._request("GET", self._object_url(key), key)
        try:
            if resp.content_length is not None and resp.content_length > max_bytes:
                raise StorageError(key, f"object larger than {max_bytes} bytes")
            data = await resp.content.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise StorageError(key, f"object larger than {max_bytes} bytes")
            return data
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnavailable(key, f"{type(exc).__name__}: {exc}") from exc
        finally:
            resp.release()

    async def size(self, key: str) -> int:
        resp = await self._request("HEAD", self._object_url(key), key)
        resp.release()
        if resp.content_length is None:
            raise UpstreamUnavailable(key, "S3 HEAD without Content-Length")
        return resp.content_length

    async def stream(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = await self._request("GET", self._object_url(key), key, headers)
        try:
            if offset and resp.status != 206:
                raise UpstreamUnavailable(key, f"S3 ignored Range (status {resp.status})")
            async for chunk in resp.content.iter_chunked(CHUNK):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnavailable(key, f"{type(exc).__name__}: {exc}") from exc
        finally:
            resp.release()

    async def list_children(self, prefix: str) -> list[str]:
        full = f"{self._prefix}/{prefix}" if self._prefix else prefix
        full = full.rstrip("/") + "/"
        names: list[str] = []
        token: str | None = None
        while True:
            params = {
                "list-type": "2",
                "prefix": full,
                "delimiter": "/",
                "max-keys": str(self.options.list_page_size),
            }
            if token:
                params["continuation-token"] = token
            query = urllib.parse.urlencode(
                sorted(params.items()), quote_via=urllib.parse.quote, safe="-_.~"
            )
            url = f"{self._base}?{query}"
            resp = await self._request("GET", url, prefix)
            try:
                body = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise UpstreamUnavailable(prefix, f"{type(exc).__name__}: {exc}") from exc
            finally:
                resp.release()
            try:
                root = ET.fromstring(body)
            except ET.ParseError as exc:
                raise UpstreamUnavailable(prefix, "unreadable ListObjectsV2 answer") from exc
            for cp in root.iter(f"{_NS}CommonPrefixes"):
                p = cp.findtext(f"{_NS}Prefix") or ""
                name = p[len(full) :].rstrip("/")
                if name:
                    names.append(name)
            if (root.findtext(f"{_NS}IsTruncated") or "false").lower() != "true":
                break
            token = root.findtext(f"{_NS}NextContinuationToken")
            if not token:
                break
        return sorted(names)

    def local_path(self, key: str) -> str | None:
        return None

    async def close(self) -> None:
        await self._session.close()


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


def _error_code(body: bytes) -> str:
    try:
        return ET.fromstring(body).findtext("Code") or ""
    except ET.ParseError:
        return ""
