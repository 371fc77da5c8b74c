"""The peer listener: blobs by digest for the other sidecars of the fleet, and nothing else.

Its own address (``peer_listen``, e.g. ``0.0.0.0:5001``), apart from the pull listener, which
stays on loopback. Two routes::

    GET        /peer/v1/                  200 {"peer": "regsidecar"}: reachable, token good
    GET, HEAD  /peer/v1/blobs/<digest>    the blob (Range), from the cache or from this
                                          host's download of it (started if none runs)

No tags, no manifests by name, no writes, no control endpoints; everything else is 404.
With ``peers.token`` every request needs ``Authorization: Bearer <token>`` (401 otherwise).
At most ``peers.max_uploads`` responses at once (more: 429 with Retry-After, and the asker
goes to its next source) and ``peers.max_upload_bytes_per_s`` for all of them together.

A response says ``X-Regsidecar-Verified: 1`` when its bytes come from a verified file,
``0`` when they come from a download still in flight (sent as each is written, parts out
of order included; the asker verifies the whole blob itself).
"""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
import os
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from regsidecar.api.keys import METRICS, REGISTRY, SETTINGS
from regsidecar.api.middleware import oci_errors
from regsidecar.errors import BlobUnknown, OCIError, StorageError, TooManyRequests, Unauthorized
from regsidecar.oci.ranges import parse_range
from regsidecar.oci.reference import parse_digest
from regsidecar.peers.source import (
    FROM_HEADER,
    INSTANCE_HEADER,
    PEER_PATH,
    SELF_STATUS,
    VERIFIED_HEADER,
)
from regsidecar.pull.download import Download, GrowingRead, sendfile
from regsidecar.service import LocalBlob

log = logging.getLogger(__name__)

SEND_MOST = 1024 * 1024  # bytes per sendfile call (and per rate-limit grant)

TOKEN = web.AppKey("peer_token", str)
INSTANCE = web.AppKey("peer_instance", str)


class RateLimit:
    """A token bucket of ``rate`` bytes/s (burst: one second's worth) shared by every peer
    upload; time is injected. ``delay(n)`` is how long to wait before sending ``n`` bytes
    (the bytes are taken at once: waiting callers queue behind each other).

    >>> t = [0.0]
    >>> r = RateLimit(100, now=lambda: t[0])
    >>> r.delay(100), r.delay(50)
    (0.0, 0.5)
    """

    def __init__(self, rate: float, *, now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._now = now
        self._tokens = rate
        self._at = now()

    def delay(self, n: int) -> float:
        t = self._now()
        self._tokens = min(self.rate, self._tokens + (t - self._at) * self.rate)
        self._at = t
        self._tokens -= n
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class UploadGate:
    """How many peer responses may be sent at once, and how fast together."""

    def __init__(self, most: int, rate: int) -> None:
        self.most = most
        self.active = 0
        self.limit = RateLimit(rate) if rate > 0 else None

    def enter(self) -> None:
        if self.active >= self.most:
            raise TooManyRequests("every peer upload slot is taken; ask another source")
        self.active += 1

    def leave(self) -> None:
        self.active -= 1

    async def pace(self, n: int) -> None:
        if self.limit is not None:
            wait = self.limit.delay(n)
            if wait > 0:
                await asyncio.sleep(wait)


GATE = web.AppKey("peer_gate", UploadGate)


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The token when one is set; and a request from this very sidecar (its own instance id:
    it listed itself under a name it could not tell was its own) is answered 508, once."""
    own = request.app.get(INSTANCE)
    if own and request.headers.get(INSTANCE_HEADER) == own:
        raise OCIError("this is the asking sidecar itself", status=SELF_STATUS)
    token = request.app.get(TOKEN)
    if token:
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), token.encode()
        ):
            request.app[METRICS].peer_uploads.labels("refused").inc()
            raise Unauthorized("a peer token is required", challenge='Bearer realm="peers"')
    return await handler(request)


async def ping(request: web.Request) -> web.Response:
    return web.json_response({"peer": "regsidecar"})


async def not_found(request: web.Request) -> web.Response:
    raise OCIError("the peer listener serves blobs by digest only", status=404)


async def blob(request: web.Request) -> web.StreamResponse:
    digest = parse_digest(request.match_info["digest"])
    metrics = request.app[METRICS]
    gate = request.app[GATE]
    try:
        gate.enter()  # 429 when every slot is taken
    except TooManyRequests:
        metrics.peer_uploads.labels("busy").inc()
        raise
    try:
        try:
            found = await request.app[REGISTRY].peer_blob(digest, download=request.method == "GET")
        except BlobUnknown:
            metrics.peer_uploads.labels("missing").inc()
            raise
        except TooManyRequests:
            metrics.peer_uploads.labels("busy").inc()
            raise
        size = found.size
        rng = parse_range(request.headers.get("Range"), size)
        start, end = (rng.start, rng.end) if rng else (0, size - 1)
        verified = isinstance(found, LocalBlob) or (isinstance(found, Download) and found.verified)
        resp = web.StreamResponse(status=206 if rng else 200)
        resp.headers.update(
            {
                "Docker-Content-Digest": str(digest),
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
                VERIFIED_HEADER: "1" if verified else "0",
            }
        )
        if rng:
            resp.headers["Content-Range"] = rng.content_range(size)
        resp.content_length = end - start + 1
        if request.method == "HEAD" or size == 0:
            await resp.prepare(request)
            await resp.write_eof()
            return resp
        metrics.peer_uploads.labels("served").inc()
        await _send(request, resp, found, start, end, gate)
        return resp
    finally:
        gate.leave()


async def _send(
    request: web.Request,
    resp: web.StreamResponse,
    found: object,
    start: int,
    end: int,
    gate: UploadGate,
) -> None:
    metrics = request.app[METRICS]
    transport = request.transport
    if isinstance(found, LocalBlob):
        with found.pinned():
            fd = os.open(found.path, os.O_RDONLY)
        reader: GrowingRead | None = None
    else:
        assert isinstance(found, Download)
        reader = found.open_peer_reader(start, end)  # opens the file now
        fd = -1
    try:
        await resp.prepare(request)
        if transport is None:
            return
        loop = asyncio.get_running_loop()
        if reader is not None:
            await reader.send_to(transport, pace=gate.pace, sent=metrics.peer_upload_bytes.inc)
        else:
            with io.FileIO(fd, "rb", closefd=False) as f:
                pos = start
                while pos <= end:
                    n = min(SEND_MOST, end + 1 - pos)
                    await gate.pace(n)
                    await sendfile(loop, transport, f, pos, n)
                    metrics.peer_upload_bytes.inc(n)
                    pos += n
        await resp.write_eof()
    except (OCIError, StorageError) as exc:
        # The download failed under this response: cut it short of its length.
        log.warning("peer upload aborted", extra={"error": str(exc), "peer": _who(request)})
        if transport is not None:
            transport.abort()
    except ConnectionError:
        log.debug("peer went away", extra={"peer": _who(request)})
    finally:
        if reader is not None:
            await reader.aclose()
        if fd >= 0:
            os.close(fd)


def _who(request: web.Request) -> str:
    return request.headers.get(FROM_HEADER, "") or (request.remote or "")


def create_peer_app(main: web.Application, token: str | None) -> web.Application:
    """The peer listener's app over the main app's registry and metrics."""
    settings = main[SETTINGS]
    app = web.Application(middlewares=[oci_errors, require_token])
    app[SETTINGS] = settings
    app[METRICS] = main[METRICS]
    app[REGISTRY] = main[REGISTRY]
    if token:
        app[TOKEN] = token
    peers = main[REGISTRY].peers
    if peers is not None:
        app[INSTANCE] = peers.instance
    app[GATE] = UploadGate(settings.peers.max_uploads, settings.peers.max_upload_bytes_per_s)
    app.router.add_get(f"{PEER_PATH}/", ping)
    app.router.add_route("GET", f"{PEER_PATH}/blobs/{{digest}}", blob)
    app.router.add_route("HEAD", f"{PEER_PATH}/blobs/{{digest}}", blob)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app
