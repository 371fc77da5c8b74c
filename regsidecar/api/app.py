"""Build the aiohttp application and run it.

>>> app = create_app(settings)  # doctest: +SKIP
>>> web.run_app(app)  # doctest: +SKIP

Resources (store client, cache, background downloads) live in the app's ``cleanup_ctx``: they
open before the first request and close after the last, and no module holds global state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from regsidecar.api import handlers, ops
from regsidecar.api.keys import METRICS, REGISTRY, SETTINGS
from regsidecar.api.middleware import add_api_version, oci_errors
from regsidecar.api.server import OCIAppRunner
from regsidecar.config import Settings
from regsidecar.logs import LineBatcher, access_logger_class
from regsidecar.metrics import Metrics
from regsidecar.service import Registry

log = logging.getLogger(__name__)

# How often changed last-known tags and links are written to disk (and at shutdown).
STATE_SAVE_S = 10.0


async def _registry_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    registry = await Registry.open(settings, app[METRICS])
    app[REGISTRY] = registry
    app[METRICS].watch_breakers(registry.sources.state)
    clock = registry.clock
    if clock is not None:
        app[METRICS].watch_clock(lambda: clock.offset, lambda: clock.jumps)
    log.info(
        "store opened",
        extra={
            "store": registry.driver.description,
            "cache": registry.cache.root if registry.cache else None,
        },
    )
    saver = asyncio.get_running_loop().create_task(_save_state_every(registry, STATE_SAVE_S))
    yield
    saver.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await saver
    await registry.close()


async def _save_state_every(registry: Registry, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await registry.save_state()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[oci_errors])
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_registry_ctx)
    app.on_response_prepare.append(add_api_version)
    app.router.add_get("/healthz", ops.healthz)
    app.router.add_get("/metrics", ops.metrics)
    app.router.add_route("*", "/{tail:.*}", handlers.dispatch)
    return app


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM, then drain and close."""
    app = create_app(settings)
    batcher = LineBatcher(sys.stdout)
    runner = OCIAppRunner(
        app,
        access_log_class=access_logger_class(batcher),
        # aiohttp wants a Logger to enable access logging; lines go through the batcher.
        access_log=logging.getLogger("regsidecar.access") if settings.log.access else None,
        handle_signals=False,
        shutdown_timeout=10.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024, reuse_address=True)
    await site.start()
    log.info(
        "listening", extra={"listen": settings.listen, "store": app[REGISTRY].driver.description}
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()
        batcher.flush()
