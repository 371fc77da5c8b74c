"""Operator endpoints, on the pull listener unless ``ops_listen`` moves them apart.

* ``/healthz``: the process is alive (with the store, sources and clock as detail);
* ``/readyz``: 200 when a pull can be answered (store, fallback or cache), else 503, with the
  reasons as JSON;
* ``/metrics``: Prometheus text;
* ``/-/cache/stats`` (GET), ``/-/cache/gc`` and ``/-/cache/verify`` (POST): what
  ``regsidecar cache`` and ``regsidecar prune`` ask a running sidecar, so the cache is trimmed
  by the process that owns its index and pins. Loopback clients with the control token only
  (``Authorization: Bearer`` the contents of ``DATA_DIR/control.token``, mode 0600, which the
  CLI reads: reading the data directory is the permission, as for docker.sock).
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Any

from aiohttp import web

from regsidecar.api.keys import CONTROL_TOKEN, METRICS, READINESS, REGISTRY
from regsidecar.cache.control import cache_report, gc_report
from regsidecar.errors import Denied, Unauthorized, Unsupported
from regsidecar.metrics import CONTENT_TYPE


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/cache/stats", cache_stats)
    app.router.add_post("/-/cache/gc", cache_gc)
    app.router.add_post("/-/cache/verify", cache_verify)


async def healthz(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    detail: dict[str, Any] = {"status": "ok", "store": registry.driver.description}
    detail["sources"] = registry.chooser.state()
    if registry.peers is not None:
        detail["peers"] = registry.peers.status()
    clock = registry.clock_status()
    if clock is not None:
        detail["clock"] = clock
    return web.json_response(detail)


async def readyz(request: web.Request) -> web.Response:
    state = await request.app[READINESS].check()
    body = {"ready": state.ready, "reason": state.reason, **state.detail}
    return web.json_response(body, status=200 if state.ready else 503)


async def metrics(request: web.Request) -> web.Response:
    resp = web.Response(body=request.app[METRICS].render())
    resp.headers["Content-Type"] = CONTENT_TYPE
    return resp


def _local_cache(request: web.Request) -> Any:
    remote = request.remote or ""
    try:
        loopback = ipaddress.ip_address(remote.split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise Denied("cache administration is for loopback clients only")
    cache = request.app[REGISTRY].cache
    if cache is None:
        raise Unsupported("this sidecar serves a directory store and keeps no cache", status=404)
    token = request.app.get(CONTROL_TOKEN)
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if (
        not token
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(given.strip().encode(), token.encode())
    ):
        raise Unauthorized(
            "cache administration wants the control token (DATA_DIR/control.token)",
            challenge='Bearer realm="regsidecar-control"',
        )
    return cache


async def cache_stats(request: web.Request) -> web.Response:
    return web.json_response(cache_report(_local_cache(request)))


async def cache_gc(request: web.Request) -> web.Response:
    cache = _local_cache(request)
    dry_run = request.query.get("dry_run", "") in ("1", "true")
    return web.json_response(gc_report(cache, dry_run=dry_run))


async def cache_verify(request: web.Request) -> web.Response:
    _local_cache(request)
    checked, removed = await request.app[REGISTRY].verify_cache()
    return web.json_response({"checked": checked, "removed": removed})
