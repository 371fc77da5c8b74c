"""Readiness: can this sidecar answer a pull right now?

Ready when the primary store answers a cheap listing, or a fallback registry answers
``/v2/``, or the cache holds content it can serve while every upstream is away (stale-if-error).
Not ready only when there is nowhere at all to get an image from. ``/readyz`` reports it, and
``serve`` sends systemd ``READY=1`` the first time it holds.

Probes are cached for a few seconds (and concurrent callers share one probe), so a load
balancer or kubelet polling ``/readyz`` never multiplies into S3 requests.

>>> decide(store_ok=False, fallback_ok=False, cache_entries=3)
(True, 'cache')
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from regsidecar.cache.singleflight import SingleFlight
from regsidecar.errors import StorageError
from regsidecar.service import Registry
from regsidecar.storage import layout


def decide(*, store_ok: bool, fallback_ok: bool, cache_entries: int) -> tuple[bool, str]:
    """Whether a sidecar with these facts can serve, and the reason (what it would serve from)."""
    if store_ok:
        return True, "store"
    if fallback_ok:
        return True, "fallback"
    if cache_entries > 0:
        return True, "cache"
    return False, "no reachable store or fallback, and the cache is empty"


@dataclass(frozen=True)
class ReadyState:
    ready: bool
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)
    checked_at: float = 0.0


class Readiness:
    """Cached, shared readiness probes of one :class:`~regsidecar.service.Registry`."""

    def __init__(
        self,
        registry: Registry,
        *,
        ttl_s: float = 5.0,
        timeout_s: float = 2.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._ttl_s = ttl_s
        self._timeout_s = timeout_s
        self._now = now
        self._last: ReadyState | None = None
        self._flight: SingleFlight[str, ReadyState] = SingleFlight()

    async def check(self, max_age_s: float | None = None) -> ReadyState:
        age = self._ttl_s if max_age_s is None else max_age_s
        last = self._last
        if last is not None and self._now() - last.checked_at < age:
            return last
        return await self._flight.do("probe", self._probe)

    async def _probe(self) -> ReadyState:
        registry = self._registry
        store_ok, store_error = True, ""
        try:
            await asyncio.wait_for(
                registry.driver.list_children(layout.repositories_dir()), self._timeout_s
            )
        except (StorageError, TimeoutError) as exc:
            store_ok, store_error = False, str(exc) or type(exc).__name__
        fallbacks: dict[str, bool] = {}
        if not store_ok:
            clients = registry.fallbacks.clients
            answers = await asyncio.gather(*(c.ping(self._timeout_s) for c in clients))
            fallbacks = {c.name: ok for c, ok in zip(clients, answers, strict=True)}
        entries = len(registry.cache.index) if registry.cache is not None else 0
        ready, reason = decide(
            store_ok=store_ok, fallback_ok=any(fallbacks.values()), cache_entries=entries
        )
        detail: dict[str, Any] = {
            "store": {"name": registry.driver.description, "reachable": store_ok},
            "cache_entries": entries,
        }
        if store_error:
            detail["store"]["error"] = store_error
        if fallbacks:
            detail["fallbacks"] = fallbacks
        self._last = ReadyState(ready, reason, detail, self._now())
        return self._last
