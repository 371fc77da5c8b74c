"""One pull client that behaves like dockerd's puller (moby ``distribution/pull_v2.go``).

A client is a host: its own :class:`aiohttp.ClientSession`, so its own connections. Each pull
makes the requests docker makes, in docker's order:

1. ``GET /v2/`` (docker's registry ping; 15 s limit);
2. by tag: ``HEAD /v2/<name>/manifests/<tag>`` for the digest (distribution's ``tags.Get``;
   when the HEAD fails or carries no ``Docker-Content-Digest``, a ``GET`` by tag instead),
   then ``GET .../manifests/<digest>``; by digest: the ``GET`` only;
3. an index (OCI index or Docker manifest list): ``GET`` of the ``--platform`` entry by digest;
4. the config (its own download, as docker's config goroutine) and the layers, at most
   ``concurrency`` at a time (docker's ``max-concurrent-downloads``, 3).

Every body is hashed and checked against its digest. Manifest requests carry one ``Accept``
header per media type, as distribution's client adds them (:data:`MANIFEST_ACCEPT`).
Connections are not reused unless ``keep_alive``: docker's registry transport sets
``DisableKeepAlives``; its dialer gives up after 30 s. Retries follow docker's download
manager: a layer download is tried ``attempts`` times (``max-download-attempts``, 5), waiting
``n * retry_delay_s`` after the n-th failure (docker: 5 s, 10 s, ...), but only after a
transport failure or a 5xx (``retryOnError``): a 4xx or a digest mismatch is final, and
manifests and the config are not retried at all.

Failures are reported by kind (:data:`FAILURE_KINDS`), see :func:`classify`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDict

from regsidecar import __version__
from regsidecar.bench.report import FAILURE_KINDS
from regsidecar.oci import mediatypes
from regsidecar.warm import blobs_of, select_platforms

__all__ = ["FAILURE_KINDS", "MANIFEST_ACCEPT", "ClientPull", "ClientResult", "Options", "classify"]

#: docker's puller asks through docker/distribution's client, which adds one ``Accept`` header
#: per type in ``distribution.ManifestMediaTypes()``: every schema docker registers (schema 2,
#: manifest list, OCI index and manifest; schema 1 as its signed type and
#: ``application/json``), in Go's random map order. The order here is fixed.
MANIFEST_ACCEPT = (
    mediatypes.DOCKER_SCHEMA2,
    mediatypes.DOCKER_LIST,
    mediatypes.OCI_INDEX,
    mediatypes.OCI_MANIFEST,
    mediatypes.DOCKER_SCHEMA1_SIGNED,
    "application/json",
)
USER_AGENT = f"regsidecar-bench/{__version__} (pulls like docker/24)"
MAX_MANIFEST_BYTES = mediatypes.MAX_MANIFEST_BYTES
PING_TIMEOUT_S = 15.0  # docker's registry ping client timeout


class PullFailure(Exception):
    """A pull step failed; ``kind`` is one of :data:`FAILURE_KINDS`."""

    def __init__(self, kind: str, detail: str, *, retry: bool = False) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.retry = retry


def classify(exc: BaseException) -> PullFailure:
    """Map an exception raised while pulling to a failure kind.

    ``connect``: no connection (refused, unreachable, the 30 s dial limit); ``reset``: the
    connection broke (closed early, short body, ECONNRESET); ``timeout``: no answer in time;
    ``http``: an unexpected status; ``digest``: a body that does not match its digest;
    ``other``: anything else (bad JSON, no manifest for the platform). Transport failures
    are worth a retry, as in docker's ``retryOnError``.
    """
    if isinstance(exc, PullFailure):
        return exc
    name = f"{type(exc).__name__}: {exc}".strip().rstrip(":")
    if isinstance(
        exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError | ConnectionRefusedError
    ):
        return PullFailure("connect", name, retry=True)
    if isinstance(exc, TimeoutError):
        return PullFailure("timeout", name, retry=True)
    if isinstance(
        exc,
        aiohttp.ClientPayloadError
        | aiohttp.ServerDisconnectedError
        | aiohttp.ClientOSError
        | ConnectionError,
    ):
        return PullFailure("reset", name, retry=True)
    if isinstance(exc, aiohttp.ClientResponseError):
        return PullFailure("http", name, retry=exc.status >= 500)
    return PullFailure("other", name)


@dataclass
class Totals:
    """Running figures over every client of a run (read by the progress line)."""

    clients: int = 0
    running: int = 0
    ok: int = 0
    failed: int = 0
    bytes: int = 0


@dataclass
class ClientResult:
    """One client's outcome, as in ``benchmarks/FORMATS.md`` section 1."""

    client: int
    target: str
    offset_s: float = 0.0
    ready_s: float | None = None
    bytes: int = 0
    requests: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    error_detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "target": self.target,
            "offset_s": round(self.offset_s, 6),
            "ready_s": None if self.ready_s is None else round(self.ready_s, 6),
            "bytes": self.bytes,
            "requests": dict(sorted(self.requests.items())),
            "error": self.error,
            "error_detail": self.error_detail,
        }


@dataclass(frozen=True)
class Options:
    """How one client pulls (docker's defaults)."""

    platform: str = "linux/amd64"
    concurrency: int = 3
    attempts: int = 5
    retry_delay_s: float = 5.0


def new_session(
    *, connect_timeout_s: float = 30.0, keep_alive: bool = False
) -> aiohttp.ClientSession:
    """A session for one client: its own connections, no proxies from the environment, no
    cookies; a fresh connection per request unless ``keep_alive`` (docker's transport)."""
    connector = aiohttp.TCPConnector(limit=0, force_close=not keep_alive)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s),
        headers={"User-Agent": USER_AGENT},
        skip_auto_headers=("Accept",),  # Go sends none; manifest requests set their own
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
    )


class ClientPull:
    """Pulls ``name`` at ``reference`` (a tag or a digest) from ``base_url`` once.

    Raises on failure (see :func:`classify`); ``result`` holds the bytes and requests::

        pull = ClientPull(session, "http://127.0.0.1:5000", "app", "v1", result, Options())
        await pull.run()
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        name: str,
        reference: str,
        result: ClientResult,
        options: Options,
        totals: Totals | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._name = name
        self._reference = reference
        self._result = result
        self._options = options
        self._totals = totals or Totals()
        self._slots = asyncio.Semaphore(options.concurrency)
        self._sleep = sleep
        self.in_flight: set[str] = set()

    async def run(self) -> None:
        await self._ping()
        if ":" in self._reference:  # tags cannot hold a colon
            digest = self._reference
        else:
            digest = await self._resolve_tag()
        doc = await self._manifest(digest)
        if "manifests" in doc:  # an OCI index or a Docker manifest list
            chosen = select_platforms(doc, [self._options.platform])
            if not chosen:
                raise PullFailure("other", f"{digest}: no manifest for {self._options.platform}")
            doc = await self._manifest(chosen[0])
        blobs = blobs_of(doc)
        if not blobs:
            raise PullFailure("other", f"{digest}: an image manifest without config or layers")
        config, layers = blobs[0], blobs[1:]
        try:
            # The first failure cancels the other downloads, as docker's pull context does.
            async with asyncio.TaskGroup() as group:
                group.create_task(self._blob(config[0]))  # docker: not a download slot
                for layer, _ in layers:
                    group.create_task(self._layer(layer))
        except ExceptionGroup as group:
            raise _first(group) from None

    # -- steps --------------------------------------------------------------------------------
    async def _ping(self) -> None:
        async with asyncio.timeout(PING_TIMEOUT_S):
            async with self._request("GET", "/v2/") as resp:
                await resp.read()
                if resp.status != 200:
                    raise _status_failure(resp, "GET /v2/", await _body(resp))

    async def _resolve_tag(self) -> str:
        path = f"/v2/{self._name}/manifests/{self._reference}"
        async with self._request("HEAD", path, headers=_accept()) as resp:
            digest = resp.headers.get("Docker-Content-Digest", "")
            if 200 <= resp.status < 400 and digest:
                return digest
        # distribution's tags.Get: a GET for registries without HEAD, and for the error body
        async with self._request("GET", path, headers=_accept()) as resp:
            body = await self._read_manifest(resp, f"GET {path}")
            return resp.headers.get("Docker-Content-Digest") or _digest_of(body)

    async def _manifest(self, digest: str) -> dict[str, Any]:
        path = f"/v2/{self._name}/manifests/{digest}"
        async with self._request("GET", path, headers=_accept()) as resp:
            body = await self._read_manifest(resp, f"GET {path}")
        _verify(digest, _hasher(digest, body), len(body), f"manifest {digest}")
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise PullFailure("other", f"manifest {digest}: not JSON") from exc
        if not isinstance(doc, dict):
            raise PullFailure("other", f"manifest {digest}: not a JSON object")
        return doc

    async def _read_manifest(self, resp: aiohttp.ClientResponse, what: str) -> bytes:
        if resp.status != 200:
            raise _status_failure(resp, what, await _body(resp))
        body = bytearray()
        async for chunk in resp.content.iter_any():
            body += chunk
            self._count_bytes(len(chunk))
            if len(body) > MAX_MANIFEST_BYTES:
                raise PullFailure("other", f"{what}: manifest over {MAX_MANIFEST_BYTES} bytes")
        return bytes(body)

    async def _layer(self, digest: str) -> None:
        """One layer, in one of the download slots, retried like docker's download manager
        (the slot stays taken while it waits to retry, as docker's transfer does)."""
        async with self._slots:
            attempt = 1
            while True:
                try:
                    await self._blob(digest)
                    return
                except Exception as exc:
                    failure = classify(exc)
                    if not failure.retry or attempt >= self._options.attempts:
                        if attempt > 1:
                            failure.detail += f" (after {attempt} attempts)"
                        if failure is exc:
                            raise
                        raise failure from exc
                await self._sleep(attempt * self._options.retry_delay_s)
                attempt += 1

    async def _blob(self, digest: str) -> None:
        path = f"/v2/{self._name}/blobs/{digest}"
        hasher = _hasher(digest)
        size = 0
        async with self._request("GET", path) as resp:
            if resp.status != 200:
                raise _status_failure(resp, f"GET {path}", await _body(resp))
            async for chunk in resp.content.iter_any():
                hasher.update(chunk)
                size += len(chunk)
                self._count_bytes(len(chunk))
        _verify(digest, hasher, size, f"blob {digest}")

    # -- plumbing -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, headers: CIMultiDict[str] | None = None) -> _Counted:
        return _Counted(self, method, path, headers)

    def _count(self, status: str) -> None:
        self._result.requests[status] = self._result.requests.get(status, 0) + 1

    def _count_bytes(self, n: int) -> None:
        self._result.bytes += n
        self._totals.bytes += n


class _Counted:
    """``async with``: one request, counted by status (``"error"`` when no answer came)."""

    def __init__(
        self, pull: ClientPull, method: str, path: str, headers: CIMultiDict[str] | None
    ) -> None:
        self._pull = pull
        self._method = method
        self._path = path
        self._headers = headers
        self._resp: aiohttp.ClientResponse | None = None
        self._what = f"{method} {path}"

    async def __aenter__(self) -> aiohttp.ClientResponse:
        pull = self._pull
        pull.in_flight.add(self._what)
        try:
            self._resp = await pull._session.request(
                self._method, pull._base + self._path, headers=self._headers
            )
        except BaseException as exc:
            pull._count("error")
            self._done(exc)
            raise
        pull._count(str(self._resp.status))
        return self._resp

    async def __aexit__(self, et: object, exc: BaseException | None, tb: object) -> None:
        self._done(exc)
        if self._resp is not None:
            self._resp.release()

    def _done(self, exc: BaseException | None) -> None:
        # A request cut off by the pull's deadline stays listed: the timeout names it.
        if not isinstance(exc, asyncio.CancelledError):
            self._pull.in_flight.discard(self._what)


def _first(group: BaseExceptionGroup[Exception]) -> Exception:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, Exception)
    return exc


def _accept() -> CIMultiDict[str]:
    return CIMultiDict(("Accept", media_type) for media_type in MANIFEST_ACCEPT)


async def _body(resp: aiohttp.ClientResponse) -> bytes:
    try:
        return await resp.content.read(4096)
    except (aiohttp.ClientError, OSError):
        return b""


def _status_failure(resp: aiohttp.ClientResponse, what: str, body: bytes) -> PullFailure:
    detail = f"{what}: HTTP {resp.status}"
    try:
        err = json.loads(body)["errors"][0]
        detail += f" {err['code']}: {err.get('message', '')}"
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    return PullFailure("http", detail, retry=resp.status >= 500)


def _hasher(digest: str, data: bytes = b"") -> Any:
    algorithm = digest.partition(":")[0]
    if algorithm not in ("sha256", "sha512"):
        raise PullFailure("digest", f"{digest}: unsupported digest algorithm")
    return hashlib.new(algorithm, data)


def _verify(digest: str, hasher: Any, size: int, what: str) -> None:
    got = f"{hasher.name}:{hasher.hexdigest()}"
    if got != digest:
        raise PullFailure("digest", f"{what}: got {got[:19]}... over {size} bytes")


def _digest_of(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()
