"""A bound on concurrent upstream downloads, with a bounded queue in front of it.

Beyond ``running + queued`` the caller is refused at once (the API answers 429 with
Retry-After) instead of piling up work until memory, sockets or S3 request rates give out.

>>> limiter = Limiter(running=8, queued=64)
>>> limiter.admit()  # raises TooManyRequests when full  # doctest: +SKIP
>>> async with limiter: ...  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from regsidecar.errors import TooManyRequests


class Limiter:
    """At most ``running`` holders at once and ``queued`` waiting; admission is checked
    synchronously so a refused request costs nothing."""

    def __init__(self, running: int, queued: int) -> None:
        self.running = running
        self.queued = queued
        self._sem = asyncio.Semaphore(running)
        self.admitted = 0  # admitted and not yet finished (running or waiting)

    def admit(self) -> None:
        if self.admitted >= self.running + self.queued:
            raise TooManyRequests(
                f"{self.admitted} upstream downloads in progress or queued; try again shortly",
                retry_after=1,
            )
        self.admitted += 1

    def release_admission(self) -> None:
        self.admitted -= 1

    async def __aenter__(self) -> None:
        await self._sem.acquire()

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._sem.release()
