"""Protocol-level errors (unparseable requests) answered as OCI JSON too.

aiohttp answers a request it cannot parse (a header or request line over its 8 KiB limit, a
malformed request line) from its ``RequestHandler.handle_error`` with a plain-text 400 and logs
a traceback. The middleware never sees these requests, so the answer is shaped here instead:
OCI JSON, 431 for oversized request lines and headers (as Go's net/http, and so distribution,
answers), 400 otherwise, and one warning line in the log: a bad client is not our error. Neither
names more than the kind of error: aiohttp's message quotes the offending line, which may be
a credential.
"""

from __future__ import annotations

import logging
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


class _OCIRequestHandler(RequestHandler):
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
        # docker first tries TLS on a plain-HTTP registry: a ClientHello is not an error here.
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


class _OCIServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _OCIRequestHandler(self, loop=self._loop, **self._kwargs)


class OCIAppRunner(web.AppRunner):
    """An AppRunner whose connections answer unparseable requests with OCI JSON errors."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        kwargs: dict[str, Any] = dict(server._kwargs)
        return _OCIServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            **kwargs,
        )
