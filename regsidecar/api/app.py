"""Build the aiohttp application and run it.

>>> app = create_app(settings)  # doctest: +SKIP
>>> web.run_app(app)  # doctest: +SKIP

Resources (store client, cache, background downloads) live in the app's ``cleanup_ctx``: they
open before the first request and close after the last, and no module holds global state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator

from aiohttp import web

from regsidecar.api import auth, handlers, ops, push
from regsidecar.api.keys import AUTH, CONTROL_TOKEN, METRICS, READINESS, REGISTRY, SETTINGS
from regsidecar.api.middleware import add_api_version, oci_errors
from regsidecar.api.push import PUSHER, UPLOADS
from regsidecar.api.server import (
    ConnectionGuard,
    OCIAppRunner,
    default_max_connections,
    quiet_accept_errors,
)
from regsidecar.auth.policy import Authenticator
from regsidecar.config import Settings
from regsidecar.datadir import DataDirLock, write_control_token
from regsidecar.logs import LineBatcher, access_logger_class
from regsidecar.metrics import CacheFigures, Metrics
from regsidecar.notify import Notifier, watchdog_interval
from regsidecar.push import Pusher
from regsidecar.readiness import Readiness
from regsidecar.service import Registry
from regsidecar.storage.base import WritableDriver
from regsidecar.uploads import Uploads

log = logging.getLogger(__name__)

# How often changed last-known tags and links are written to disk (and at shutdown).
STATE_SAVE_S = 10.0


async def _registry_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    registry = await Registry.open(settings, app[METRICS])
    app[REGISTRY] = registry
    app[READINESS] = Readiness(registry)
    app[METRICS].watch_breakers(registry.chooser.state)
    app[METRICS].watch_windows(registry.windows)
    cache = registry.cache
    if cache is not None:
        app[METRICS].watch_cache(
            lambda: CacheFigures(
                len(cache.index),
                cache.index.total,
                cache.max_bytes,
                cache.free_bytes(),
                cache.evictions,
            )
        )
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
    assert isinstance(registry.driver, WritableDriver), "both stores can be written"
    app[PUSHER] = Pusher(registry.driver, settings, names=registry.names)
    app[UPLOADS] = Uploads(
        settings.uploads_dir,
        ttl_s=settings.push.upload_ttl_s,
        max_sessions=settings.push.max_open_uploads,
        max_bytes=settings.push.max_staged_bytes,
    )
    loop = asyncio.get_running_loop()
    background = [loop.create_task(_save_state_every(registry, STATE_SAVE_S))]
    if registry.peers is not None:
        app[METRICS].peer_members.set(len(registry.peers.membership.members))
        background.append(loop.create_task(registry.peers.membership.run()))
    yield
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    await registry.close()


async def _save_state_every(registry: Registry, seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await registry.save_state()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[oci_errors])
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[AUTH] = Authenticator.from_settings(settings)  # None: read-only, no credentials
    app.cleanup_ctx.append(_registry_ctx)
    app.on_response_prepare.append(add_api_version)
    if not settings.ops_listen:
        ops.add_routes(app)
    app.router.add_route("*", auth.TOKEN_PATH, auth.token_endpoint)
    app.router.add_post("/-/promote", push.promote)
    app.router.add_route("*", "/{tail:.*}", handlers.dispatch)
    return app


def _ops_app(main: web.Application) -> web.Application:
    """The operator endpoints on their own listener, over the main app's resources."""
    app = web.Application(middlewares=[oci_errors])
    app[SETTINGS] = main[SETTINGS]
    app[METRICS] = main[METRICS]
    app[REGISTRY] = main[REGISTRY]
    app[READINESS] = main[READINESS]
    if CONTROL_TOKEN in main:
        app[CONTROL_TOKEN] = main[CONTROL_TOKEN]
    ops.add_routes(app)
    return app


async def _notify_when_ready(app: web.Application, notifier: Notifier) -> None:
    """Tell systemd READY=1 the first time a pull can be answered; until then say why not."""
    readiness = app[READINESS]
    waiting_logged = False
    while True:
        state = await readiness.check(max_age_s=1.0)
        if state.ready:
            notifier.send("READY=1", f"STATUS=serving from {state.reason}")
            log.info("ready", extra={"serving_from": state.reason})
            return
        notifier.send(f"STATUS=waiting: {state.reason}")
        if not waiting_logged:
            log.warning("not ready yet", extra={"reason": state.reason, **state.detail})
            waiting_logged = True
        await asyncio.sleep(1.0)


async def _watchdog(notifier: Notifier, interval_s: float) -> None:
    # The ping proves the event loop still turns: a wedged loop misses it and systemd restarts.
    while True:
        notifier.send("WATCHDOG=1")
        await asyncio.sleep(interval_s)


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM, then drain and close. Holds the data directory's lock
    throughout (DataDirBusy when another sidecar runs on it)."""
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    try:
        await _serve(settings, ready, write_control_token(settings.data_dir))
    finally:
        lock.release()


async def _serve(settings: Settings, ready: asyncio.Event | None, control_token: str) -> None:
    app = create_app(settings)
    app[CONTROL_TOKEN] = control_token
    batcher = LineBatcher(sys.stdout)
    quiet_accept_errors(asyncio.get_running_loop())
    lim = settings.limits
    most = lim.max_connections or default_max_connections()

    # One bound for every listener of the process: the descriptors are the process's.
    closed = app[METRICS].connections_closed
    shared = ConnectionGuard(most, lim.header_timeout_s, lambda r: closed.labels(r).inc())

    runner = OCIAppRunner(
        app,
        guard=shared,
        # Always installed: it also feeds the request metrics; it writes lines only if asked.
        access_log_class=access_logger_class(batcher, app[METRICS], write=settings.log.access),
        access_log=logging.getLogger("regsidecar.access"),
        handle_signals=False,
        shutdown_timeout=10.0,
    )
    await runner.setup()
    runners: list[web.AppRunner] = [runner]
    site = web.TCPSite(runner, settings.host, settings.port, backlog=1024, reuse_address=True)
    await site.start()
    if settings.ops_listen:
        ops_runner = OCIAppRunner(
            _ops_app(app),
            guard=shared,
            handle_signals=False,
            # The same access log as the pull listener (it also feeds the request metrics).
            access_log_class=access_logger_class(batcher, app[METRICS], write=settings.log.access),
            access_log=logging.getLogger("regsidecar.access"),
        )
        await ops_runner.setup()
        runners.append(ops_runner)
        host, port = settings.ops_address
        await web.TCPSite(ops_runner, host, port, reuse_address=True).start()
    peer_address = settings.peer_address
    if peer_address is not None:
        from regsidecar.peers.fleet import peer_token
        from regsidecar.peers.listener import create_peer_app

        peer_runner = OCIAppRunner(
            create_peer_app(app, peer_token(settings)),
            guard=shared,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=5.0,
        )
        await peer_runner.setup()
        runners.append(peer_runner)
        host, port = peer_address
        await web.TCPSite(peer_runner, host, port, backlog=1024, reuse_address=True).start()
    log.info(
        "listening",
        extra={
            "listen": settings.listen,
            "ops_listen": settings.ops_listen or settings.listen,
            "peer_listen": settings.peer_listen or None,
            "store": app[REGISTRY].driver.description,
        },
    )
    notifier = Notifier.from_env()
    loop = asyncio.get_running_loop()
    tasks = []
    if notifier.enabled:
        tasks.append(loop.create_task(_notify_when_ready(app, notifier)))
        interval = watchdog_interval(os.environ, os.getpid())
        if interval is not None:
            tasks.append(loop.create_task(_watchdog(notifier, interval)))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        notifier.send("STOPPING=1", "STATUS=draining")
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for r in reversed(runners):
            await r.cleanup()
        notifier.close()
        batcher.flush()
