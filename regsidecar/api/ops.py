"""Operator endpoints: ``/healthz`` (process alive, with detail) and ``/metrics``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from regsidecar.api.keys import METRICS, REGISTRY
from regsidecar.metrics import CONTENT_TYPE


async def healthz(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    detail: dict[str, Any] = {"status": "ok", "store": registry.driver.description}
    detail["sources"] = registry.sources.state()
    clock = registry.clock_status()
    if clock is not None:
        detail["clock"] = clock
    return web.json_response(detail)


async def metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=request.app[METRICS].render())
    resp.headers["Content-Type"] = CONTENT_TYPE
    return resp
