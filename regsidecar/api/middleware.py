"""The one place OCI error JSON is rendered, and headers every response carries.

Handlers raise :class:`~regsidecar.errors.OCIError`; anything else that escapes is a bug,
logged with its traceback and answered as ``UNKNOWN`` 500 JSON, never a traceback page.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from regsidecar.api.keys import SETTINGS
from regsidecar.errors import OCIError, StorageError, Unavailable, Unsupported
from regsidecar.retry import request_deadline

log = logging.getLogger(__name__)

API_VERSION_HEADER = "Docker-Distribution-API-Version"
API_VERSION = "registry/2.0"

# aiohttp's own HTTP errors (bad method, body too large...) mapped to spec codes.
_HTTP_CODES = {405: "UNSUPPORTED", 413: "SIZE_INVALID", 429: "TOOMANYREQUESTS"}


def error_response(err: OCIError, method: str) -> web.Response:
    """The error as OCI JSON. For HEAD the body is set all the same: aiohttp then sends its
    Content-Length and no body, as the spec's HEAD answers want."""
    return web.Response(
        status=err.status,
        body=json.dumps(err.body()).encode(),
        content_type="application/json",
        headers=err.headers,
    )


@web.middleware
async def oci_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        with request_deadline(request.app[SETTINGS].retry.deadline_s):
            return await handler(request)
    except OCIError as err:
        return error_response(err, request.method)
    except StorageError as exc:  # a service path that forgot to translate: still a clean 503
        log.error("untranslated storage error", extra={"error": str(exc)})
        return error_response(Unavailable(detail={"reason": str(exc)}), request.method)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "UNSUPPORTED")
        http_err = Unsupported(exc.reason, status=exc.status)
        http_err.code = code  # type: ignore[misc]
        return error_response(http_err, request.method)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path, "method": request.method})
        return error_response(OCIError("internal error; see the sidecar's log"), request.method)


async def add_api_version(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, errors and sendfile included, carries the header."""
    response.headers[API_VERSION_HEADER] = API_VERSION
