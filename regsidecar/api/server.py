"""Connections: unparseable requests answered as OCI JSON, slow headers timed out, and a bound.

aiohttp answers a request it cannot parse (a header or request line over its 8 KiB limit, a
malformed request line) from its ``RequestHandler.handle_error`` with a plain-text 400 and logs
a traceback. The middleware never sees these requests, so the answer is shaped here instead:
OCI JSON, 431 for oversized request lines and headers (as Go's net/http, and so distribution,
answers), 400 otherwise, and one warning line in the log: a bad client is not our error. Neither
names more than the kind of error: aiohttp's message quotes the offending line, which may be
a credential.

**Slow clients and connection exhaustion** (:class:`ConnectionGuard`, one for all the
process's listeners). A connection must deliver a complete request head within
``limits.header_timeout_s`` of its first byte (of opening, for a new connection), as nginx's
``client_header_timeout`` asks; else it is closed. At most ``limits.max_connections`` are
open (by default: the file-descriptor limit less a reserve for the cache, the store and the
peers). A connection beyond the bound
takes the place of the one that has waited longest for its request head (a slowloris'), or is
closed at once when every connection is busy with a request: ``/v2/`` keeps answering while
thousands of connections trickle headers. aiohttp answers a request only once its head is
complete, so none of this touches a request in progress or its response.

Accept errors (``EMFILE`` when the process runs out of descriptors anyway) are logged at most
once per ``ACCEPT_LOG_EVERY_S`` with the count since (:func:`quiet_accept_errors`): asyncio
logs one line per failed accept, which under such a load was 170,000 lines in 15 s.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from regsidecar.api.middleware import API_VERSION, API_VERSION_HEADER, error_response
from regsidecar.errors import OCIError

log = logging.getLogger(__name__)


class _BadRequest(OCIError):
    code = "UNSUPPORTED"
    status = 400
    default_message = "malformed HTTP request"


# Set on a request that was a TLS handshake on this plain-HTTP port (docker and skopeo try
# HTTPS first): the access log and the request metrics leave it out; a counter has it.
TLS_PROBE = "regsidecar.tls_probe"

# Descriptors kept free for cache files, S3 and peer connections when the bound is derived.
FD_RESERVE = 256
ACCEPT_LOG_EVERY_S = 10.0


def default_max_connections() -> int:
    """The file-descriptor limit less FD_RESERVE (at least 64)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(64, soft - FD_RESERVE)


class ConnectionGuard:
    """The open connections of one listener, and those waiting for a request head (oldest
    first), each with its deadline."""

    def __init__(self, most: int, header_timeout_s: float, metrics: Callable[[str], None]):
        self.most = most
        self.header_timeout_s = header_timeout_s
        self._count = metrics  # outcome -> counter ("header_timeout", "evicted", "refused")
        self.open: set[_OCIRequestHandler] = set()
        self.waiting: dict[_OCIRequestHandler, asyncio.TimerHandle] = {}

    def opened(self, conn: _OCIRequestHandler) -> bool:
        """Count ``conn`` in; False when it must be closed (every slot busy with requests)."""
        self.open.add(conn)
        if len(self.open) > self.most:
            oldest = next(iter(self.waiting), None)
            if oldest is None:
                self.open.discard(conn)
                self._count("refused")
                return False
            self._count("evicted")
            self._drop(oldest)
        self.arm(conn)
        return True

    def arm(self, conn: _OCIRequestHandler) -> None:
        if conn not in self.waiting:
            loop = asyncio.get_running_loop()
            self.waiting[conn] = loop.call_later(self.header_timeout_s, self._expired, conn)

    def parsed(self, conn: _OCIRequestHandler) -> None:
        timer = self.waiting.pop(conn, None)
        if timer is not None:
            timer.cancel()

    def closed(self, conn: _OCIRequestHandler) -> None:
        self.parsed(conn)
        self.open.discard(conn)

    def _expired(self, conn: _OCIRequestHandler) -> None:
        self.waiting.pop(conn, None)
        self._count("header_timeout")
        self._drop(conn)

    def _drop(self, conn: _OCIRequestHandler) -> None:
        self.parsed(conn)
        self.open.discard(conn)
        conn.force_close()
        if conn.transport is not None:
            conn.transport.abort()


class _OCIRequestHandler(RequestHandler):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        guard = self._guard()
        if guard is not None and not guard.opened(self):
            self.force_close()
            transport.abort()  # type: ignore[attr-defined]

    def connection_lost(self, exc: BaseException | None) -> None:
        guard = self._guard()
        if guard is not None:
            guard.closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        guard = self._guard()
        if guard is None:
            return
        if self._request_count > before:
            guard.parsed(self)  # a request head is complete: aiohttp takes it from here
        elif data and not self._request_in_progress and not self._messages:
            guard.arm(self)  # the first bytes of the next request on a kept-alive connection

    def _guard(self) -> ConnectionGuard | None:
        manager = self._manager
        return getattr(manager, "guard", None)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        # What aiohttp says about a malformed request quotes the offending line, which can be
        # an Authorization header or a query string: neither the answer nor the log repeats
        # it. Only the kind of error is named.
        kind = type(exc).__name__ if exc is not None else "BadRequest"
        if isinstance(exc, LineTooLong):
            err = _BadRequest("request line or header fields too large", status=431)
        else:
            err = _BadRequest(f"malformed HTTP request ({kind})", status=status)
        # docker and skopeo first try TLS on a plain-HTTP registry: a ClientHello (its first
        # byte 0x16, a handshake record) is no error, and no client request either.
        if isinstance(exc, BadHttpMethod) and _is_tls(str(exc)):
            request[TLS_PROBE] = True
            log.debug("TLS handshake on the plain-HTTP port", extra={"remote": request.remote})
        else:
            level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.WARNING
            log.log(
                level,
                "bad request",
                extra={"status": err.status, "error": kind, "remote": request.remote},
            )
        resp = error_response(err, "GET")
        resp.headers[API_VERSION_HEADER] = API_VERSION
        resp.force_close()
        return resp


def _is_tls(message: str) -> bool:
    """Whether aiohttp's parser error is a TLS ClientHello (aiohttp 3.10+ says so; older
    versions quote the line, which starts with the handshake record's 0x16 0x03)."""
    return "HTTPS traffic" in message or "\\x16\\x03" in message


class _OCIServer(web.Server):
    guard: ConnectionGuard | None = None

    def __call__(self) -> RequestHandler:
        return _OCIRequestHandler(self, loop=self._loop, **self._kwargs)


class OCIAppRunner(web.AppRunner):
    """An AppRunner whose connections answer unparseable requests with OCI JSON errors and,
    with ``guard``, are bounded and must send their request heads in time."""

    def __init__(self, app: web.Application, *, guard: ConnectionGuard | None = None, **kw: Any):
        super().__init__(app, **kw)
        self._guard = guard

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        kwargs: dict[str, Any] = dict(server._kwargs)
        oci = _OCIServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            **kwargs,
        )
        oci.guard = self._guard
        return oci


def quiet_accept_errors(
    loop: asyncio.AbstractEventLoop, *, now: Callable[[], float] = time.monotonic
) -> None:
    """Log asyncio's "socket.accept() out of system resource" at most once per
    ACCEPT_LOG_EVERY_S (with how many were left out); every other loop error as before."""
    last = [-ACCEPT_LOG_EVERY_S]
    left_out = [0]

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if not message.startswith("socket.accept() out of system resource"):
            loop.default_exception_handler(context)
            return
        t = now()
        if t - last[0] < ACCEPT_LOG_EVERY_S:
            left_out[0] += 1
            return
        exc = context.get("exception")
        log.error(
            "cannot accept connections: out of file descriptors or memory",
            extra={"error": str(exc)[:200], "left_out": left_out[0]},
        )
        last[0], left_out[0] = t, 0

    loop.set_exception_handler(handler)
