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
        fails before its end. ``aclose()`` it when done, started or not.
        """
        return GrowingRead(self, start, end)

    def _open(self) -> int:
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
        return fd

    async def _windows(self, start: int, end: int, most: int) -> AsyncIterator[tuple[int, int]]:
        """(offset, length) spans of ``start..end`` that are on disk, at most ``most`` long,
        waiting for the download between them."""
        pos = start
        while pos <= end:
            if self.error is not None:
                raise UpstreamUnavailable(self.key, f"download failed: {self.error}")
            limit = self.size if self.verified else min(self.written, self.size - 1)
            ready = min(limit, end + 1) - pos
            if ready > 0:
                n = min(most, ready)
                yield pos, n
                pos += n
            else:
                await self._progress()


class GrowingRead:
    """One reader of a :class:`BlobFetch`'s growing file: counted among its readers from
    the moment it is made until :meth:`aclose` (idempotent; also when never iterated, which
    an async generator's ``finally`` would not see)."""

    def __init__(self, fetch: BlobFetch, start: int, end: int) -> None:
        self._fetch = fetch
        self._start, self._end = start, end
        self._fd = fetch._open()
        self._closed = False
        self._chunks: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self._chunks is None:
            self._chunks = self._read()
        try:
            return await anext(self._chunks)
        except BaseException:
            # The end, or a failure: either way this reader is done.
            await self.aclose()
            raise

    async def _read(self) -> AsyncIterator[bytes]:
        fd = self._fd
        async for pos, n in self._fetch._windows(self._start, self._end, READ_CHUNK):
            data = os.pread(fd, n, pos)
            if len(data) != n:
                raise UpstreamUnavailable(self._fetch.key, "cache file shorter than written")
            yield data

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._chunks is not None:
            await self._chunks.aclose()  # type: ignore[attr-defined]
        os.close(self._fd)
        self._fetch.readers -= 1
