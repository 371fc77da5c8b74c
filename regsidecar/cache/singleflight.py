"""One upstream fetch per key, however many callers ask at once.

:class:`SingleFlight` coalesces concurrent calls for small values (tags, links, manifests).
Blobs have their own: :class:`regsidecar.pull.download.Download`, one growing file that
readers follow while it is written.

>>> flights = SingleFlight[str, bytes]()
>>> data = await flights.do("key", load)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Run ``fn`` once per key among concurrent callers; every caller gets its result or error."""

    def __init__(self) -> None:
        self._calls: dict[K, asyncio.Future[V]] = {}

    async def do(self, key: K, fn: Callable[[], Awaitable[V]]) -> V:
        fut = self._calls.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._calls[key] = fut
            try:
                fut.set_result(await fn())
            except asyncio.CancelledError:
                fut.cancel()
                raise
            except BaseException as exc:
                fut.set_exception(exc)
                # Retrieve it once so an unawaited failure is not reported as "never retrieved".
                fut.exception()
                raise
            finally:
                del self._calls[key]
            return fut.result()
        # shield: a follower that is cancelled must not cancel the leader's work
        return await asyncio.shield(fut)
