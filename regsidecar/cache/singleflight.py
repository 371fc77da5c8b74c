"""One upstream fetch per key, however many callers ask at once.

:class:`SingleFlight` coalesces concurrent calls for small values (tags, links, manifests).
:class:`BlobFetch` is the shared state of one blob download into a growing temp file, which
readers follow while it is written, so followers stream without waiting for the whole blob.

>>> flights = SingleFlight[str, bytes]()
>>> data = await flights.do("key", load)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Generic, TypeVar

from regsidecar.errors import UpstreamUnavailable

K = TypeVar("K")
V = TypeVar("V")

READ_CHUNK = 256 * 1024


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


class BlobFetch:
    """A blob being written to ``temp_path``; readers follow ``written`` until ``verified``.

    The writer calls :meth:`advance` after each chunk, then :meth:`finish` (digest verified,
    file published at ``final_path``) or :meth:`fail`.
    """

    def __init__(self, key: str, size: int, temp_path: str, final_path: str) -> None:
        self.key = key
        self.size = size
        self.temp_path = temp_path
        self.final_path = final_path
        self.written = 0
        self.verified = False
        self.error: BaseException | None = None
        self.readers = 0
        self._waiters: list[asyncio.Future[None]] = []
        self.task: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        return self.verified or self.error is not None

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def advance(self, n: int) -> None:
        self.written += n
        self._wake()

    def finish(self) -> None:
        self.verified = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self._wake()

    async def _progress(self) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    def open_reader(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start..end`` (inclusive) as they arrive.

        The file is opened now, synchronously, so a rename at commit cannot race the open. The
        blob's last byte is released only once the whole blob is verified: no client ever
        receives a complete response of unverified bytes; on a mismatch every reader's stream
        fails before its end.
        """
        if self.error is not None:
            raise UpstreamUnavailable(self.key, f"download failed: {self.error}")
        # The publish (rename) runs in a worker thread, so between it and finish() the file
        # may already be at its final path: look there next.
        paths = (self.final_path,) if self.verified else (self.temp_path, self.final_path)
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
                break
            except FileNotFoundError:
                continue
        else:
            raise UpstreamUnavailable(self.key, "the download's file vanished")
        self.readers += 1
        return self._read(fd, start, end)

    async def _read(self, fd: int, start: int, end: int) -> AsyncIterator[bytes]:
        pos = start
        try:
            while pos <= end:
                if self.error is not None:
                    raise UpstreamUnavailable(self.key, f"download failed: {self.error}")
                limit = self.size if self.verified else min(self.written, self.size - 1)
                if pos < limit:
                    n = min(READ_CHUNK, limit - pos, end + 1 - pos)
                    data = os.pread(fd, n, pos)
                    if not data:
                        raise UpstreamUnavailable(self.key, "cache file shorter than written")
                    pos += len(data)
                    yield data
                else:
                    await self._progress()
        finally:
            os.close(fd)
            self.readers -= 1
