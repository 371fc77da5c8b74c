"""Fallback upstreams: other registries reached over the OCI API, each behind a circuit breaker.

When the primary store (S3 or a directory) is unavailable, the sidecar asks these in order: a
central registry, or peer sidecars on other hosts. Their answers are verified like the store's
(manifests and blobs by digest). Authentication: HTTP basic, or the bearer-token flow
(``WWW-Authenticate: Bearer realm=...,service=...,scope=...``) with basic credentials for the
token endpoint, as docker does.

>>> breaker = CircuitBreaker(failures=3, cooldown_s=30, now=lambda: 0.0)
>>> breaker.allow()
True
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from regsidecar.errors import NotFound, StorageError, UpstreamUnavailable
from regsidecar.oci import mediatypes
from regsidecar.oci.ranges import answers_range, range_header
from regsidecar.oci.reference import Digest, parse_digest
from regsidecar.storage.base import CHUNK, RequestHook, observed, read_bounded

log = logging.getLogger(__name__)
T = TypeVar("T")

ACCEPT = ", ".join(
    [
        mediatypes.OCI_INDEX,
        mediatypes.OCI_MANIFEST,
        mediatypes.DOCKER_LIST,
        mediatypes.DOCKER_SCHEMA2,
    ]
)


class CircuitBreaker:
    """closed -> (``failures`` in a row) -> open -> (``cooldown_s``) -> half-open: one probe
    goes through; its success closes the circuit, its failure opens it again."""

    def __init__(
        self,
        failures: int = 5,
        cooldown_s: float = 30.0,
        *,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._now = now
        self._streak = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._now() - self._opened_at >= self.cooldown_s:
            return "half-open"
        return "open"

    def allow(self) -> bool:
        state = self.state
        if state == "closed":
            return True
        if state == "half-open" and not self._probing:
            self._probing = True
            return True
        return False

    def success(self) -> None:
        self._streak = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
        self._streak += 1
        if self._probing or self._streak >= self.failures:
            self._opened_at = self._now()
        self._probing = False


@dataclass(frozen=True)
class UpstreamConfig:
    url: str
    username: str | None = None
    password: str | None = None


_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class RegistryClient:
    """The pull side of the OCI distribution API, against one registry."""

    def __init__(
        self, config: UpstreamConfig, session: aiohttp.ClientSession, breaker: CircuitBreaker
    ) -> None:
        self.config = config
        self.base = config.url.rstrip("/")
        self.name = URL(self.base).host or self.base
        self._session = session
        self.breaker = breaker
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self.on_request: RequestHook | None = None  # metrics hook

    def _basic(self) -> str | None:
        if self.config.username is None:
            return None
        raw = f"{self.config.username}:{self.config.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    async def _token(self, challenge: str) -> str | None:
        params = dict(_CHALLENGE.findall(challenge))
        realm = params.pop("realm", None)
        if not realm:
            return None
        headers = {}
        basic = self._basic()
        if basic:
            headers["Authorization"] = basic
        async with self._session.get(realm, params=params, headers=headers) as resp:
            if resp.status != 200:
                return None
            doc: Any = await resp.json(content_type=None)
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        return str(token) if token else None

    async def _request(
        self, method: str, path: str, what: str, headers: dict[str, str] | None = None
    ) -> aiohttp.ClientResponse:
        """One request with auth handled; raises NotFound / UpstreamUnavailable / StorageError."""
        return await observed(self.on_request, method, self._exchange(method, path, what, headers))

    async def ping(self, timeout_s: float = 2.0) -> bool:
        """Whether the registry answers ``GET /v2/`` at all (a 401 counts: it is there)."""
        try:
            async with self._session.get(
                f"{self.base}/v2/", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                return resp.status < 500
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def _exchange(
        self, method: str, path: str, what: str, headers: dict[str, str] | None
    ) -> aiohttp.ClientResponse:
        url = f"{self.base}{path}"
        scope = path.split("/manifests/")[0].split("/blobs/")[0].removeprefix("/v2/")
        hdrs = dict(headers or {})
        token = self._tokens.get(scope)
        basic = self._basic()
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        elif basic:
            hdrs["Authorization"] = basic
        for attempt in (1, 2):
            try:
                resp = await self._session.request(method, url, headers=hdrs)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise UpstreamUnavailable(
                    what, f"{self.name}: {type(exc).__name__}: {exc}"
                ) from exc
            # A 401 with a cached token means it expired: the challenge gets a fresh one.
            if resp.status == 401 and attempt == 1:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.release()
                if challenge.lower().startswith("bearer"):
                    token = await self._token(challenge)
                    if token:
                        self._tokens[scope] = token
                        hdrs["Authorization"] = f"Bearer {token}"
                        continue
                raise StorageError(what, f"{self.name}: unauthorized")
            if resp.status < 300:
                return resp
            resp.release()
            if resp.status == 404:
                raise NotFound(what, self.name)
            if resp.status >= 500 or resp.status == 429:
                raise UpstreamUnavailable(what, f"{self.name}: HTTP {resp.status}")
            raise StorageError(what, f"{self.name}: HTTP {resp.status}")
        raise StorageError(what, f"{self.name}: unauthorized")

    async def resolve(self, repo: str, tag: str) -> Digest:
        resp = await self._request(
            "HEAD", f"/v2/{repo}/manifests/{tag}", f"{repo}:{tag}", {"Accept": ACCEPT}
        )
        resp.release()
        value = resp.headers.get("Docker-Content-Digest", "")
        try:
            return parse_digest(value)
        except Exception as exc:
            raise UpstreamUnavailable(f"{repo}:{tag}", f"{self.name}: no digest header") from exc

    async def has_manifest(self, repo: str, digest: Digest) -> bool:
        try:
            (
                await self._request(
                    "HEAD", f"/v2/{repo}/manifests/{digest}", str(digest), {"Accept": ACCEPT}
                )
            ).release()
        except NotFound:
            return False
        return True

    async def has_blob(self, repo: str, digest: Digest) -> bool:
        try:
            (await self._request("HEAD", f"/v2/{repo}/blobs/{digest}", str(digest))).release()
        except NotFound:
            return False
        return True

    async def manifest(self, repo: str, digest: Digest, max_bytes: int) -> bytes:
        resp = await self._request(
            "GET", f"/v2/{repo}/manifests/{digest}", str(digest), {"Accept": ACCEPT}
        )
        try:
            data = await read_bounded(resp.content, max_bytes)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnavailable(str(digest), f"{self.name}: {exc}") from exc
        finally:
            resp.release()
        if len(data) > max_bytes:
            raise StorageError(str(digest), f"{self.name}: manifest too large")
        return data

    async def blob_size(self, repo: str, digest: Digest) -> int:
        resp = await self._request("HEAD", f"/v2/{repo}/blobs/{digest}", str(digest))
        resp.release()
        if resp.content_length is None:
            raise UpstreamUnavailable(str(digest), f"{self.name}: HEAD without Content-Length")
        return resp.content_length

    async def blob_stream(
        self, repo: str, digest: Digest, offset: int, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """Bytes ``offset..end`` (inclusive; None: to the end) of a blob; a ranged answer
        must be exactly the range asked for (206 with its Content-Range)."""
        headers = range_header(offset, end)
        resp = await self._request("GET", f"/v2/{repo}/blobs/{digest}", str(digest), headers)
        try:
            if not answers_range(resp.status, resp.headers.get("Content-Range"), offset, end):
                raise UpstreamUnavailable(
                    str(digest), f"{self.name}: did not answer the range asked for"
                )
            async for chunk in resp.content.iter_chunked(CHUNK):
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamUnavailable(str(digest), f"{self.name}: {exc}") from exc
        finally:
            resp.release()


class Fallbacks:
    """The fallback registries, tried in order; a source whose breaker is open is skipped."""

    def __init__(
        self, clients: list[RegistryClient], session: aiohttp.ClientSession | None
    ) -> None:
        self.clients = clients
        self._session = session

    @classmethod
    def from_config(
        cls, configs: list[UpstreamConfig], *, failures: int, cooldown_s: float, timeout_s: float
    ) -> Fallbacks:
        if not configs:
            return cls([], None)
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=timeout_s),
            auto_decompress=False,
        )
        return cls(
            [RegistryClient(c, session, CircuitBreaker(failures, cooldown_s)) for c in configs],
            session,
        )

    def __bool__(self) -> bool:
        return bool(self.clients)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
