"""Structured logs: one JSON object per line on stdout (journald and docker pick them up).

Fields passed with ``extra=`` become top-level keys. Nothing here logs credentials; settings
holding secrets are never passed to a log call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_fileresponse import FileResponse
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

if TYPE_CHECKING:
    from regsidecar.metrics import Metrics

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()) | {
    "message",
    "asctime",
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup(level: str = "info", stream: TextIO | None = None) -> None:
    """JSON lines to ``stream`` (stdout, for journald, by default)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class LineBatcher:
    """Writes lines to a stream in batches: every line added during one event-loop iteration
    goes out in a single write and flush, scheduled with ``call_soon``. Under load many
    requests finish per iteration, so the access log costs one syscall per batch instead of
    one per request, and a line is never held back past the current iteration."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: list[str] = []

    def add(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) == 1:
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        if not lines:
            return
        try:
            self._stream.write("".join(lines))
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed or full: dropping access lines must not break serving


def access_logger_class(
    batcher: LineBatcher, metrics: Metrics, *, write: bool = True
) -> type[AbstractAccessLogger]:
    """An aiohttp access logger: one JSON line per request through ``batcher`` (if ``write``)
    and the request metrics, both taken after the response's last byte.

    aiohttp makes one access logger per connection; the class carries the shared batcher so
    lines from every connection are batched together. Lines hold the path but never a header
    or a query string: nothing a client sends as a credential is logged.
    """

    from regsidecar.api.keys import IDENTITY, ROUTE, SENDFILE_BYTES
    from regsidecar.api.server import TLS_PROBE

    class AccessLogger(AbstractAccessLogger):
        def log(self, request: BaseRequest, response: StreamResponse, time_s: float) -> None:
            if request.get(TLS_PROBE):
                metrics.tls_probes.inc()  # a client trying HTTPS first: not a request
                return
            # Requests the dispatcher never saw are the operator endpoints.
            route = request.get(ROUTE, "ops")
            cache = response.headers.get("X-Cache", "")
            sent = response.body_length + request.get(SENDFILE_BYTES, 0)
            if isinstance(response, FileResponse) and request.method != "HEAD":
                # sendfile bypasses the writer that counts body_length
                sent = max(sent, response.content_length or 0)
            metrics.observe_request(route, request.method, response.status, time_s, cache, sent)
            if not write:
                return
            batcher.add(
                json.dumps(
                    {
                        "ts": round(time.time(), 3),
                        "level": "info",
                        "logger": "regsidecar.access",
                        "msg": "request",
                        "method": request.method,
                        "route": route,
                        "path": request.path,
                        "status": response.status,
                        "bytes_sent": sent,
                        "ms": round(time_s * 1000, 2),
                        "cache": cache,
                        "remote": request.remote,
                        # Who, when a request carried credentials: pushes are attributable.
                        "user": getattr(request.get(IDENTITY), "name", None),
                    },
                    separators=(",", ":"),
                )
                + "\n"
            )

    return AccessLogger
