"""One blob on its way into the cache, and the clients that read it while it arrives.

A :class:`Download` is the shared state of one digest's fetch: the temp file, the
:class:`~regsidecar.pull.parts.PartPlan` whose **watermark** (the contiguous prefix written)
readers follow, and the outcome. The fetch itself (:mod:`regsidecar.pull.fetch`) writes parts
at their offsets, advances the plan, and ends in :meth:`Download.finish` (digest verified,
file fsynced and published) or :meth:`Download.fail`.

The rule for readers, whole blob or ``Range``: **a response's last byte is released only
after the whole blob has been verified.** Every byte before it streams as soon as the
prefix covers it; a digest mismatch fails the download and every reader's connection is cut
short of its ``Content-Length``, so no client ever holds a complete response of unverified
bytes (a ``Range`` response for bytes 0-99 of a cold blob waits for the whole blob's digest).

>>> download = Download(digest, size, temp, final, PartPlan(size, 16 * MiB))  # doctest: +SKIP
>>> async for chunk in download.open_reader(0, size - 1): ...  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable

from regsidecar.errors import UpstreamUnavailable
from regsidecar.oci.reference import Digest
from regsidecar.pull.parts import Part, PartPlan

READ_CHUNK = 1024 * 1024
SEND_MOST = 8 * 1024 * 1024  # bytes per sendfile call: readers wake at least this often
PACED_MOST = 1024 * 1024  # the same under a rate limit (its grants)


class Download:
    """A blob being written to ``temp_path``; readers follow the plan's watermark."""

    def __init__(
        self, digest: Digest, size: int, temp_path: str, final_path: str, plan: PartPlan
    ) -> None:
        self.digest = digest
        self.key = str(digest)
        self.size = size
        self.temp_path = temp_path
        self.final_path = final_path
        self.plan = plan
        self.verified = False
        self.error: BaseException | None = None
        self.readers = 0
        self.task: asyncio.Task[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []
        self._any_waiters: list[asyncio.Future[None]] = []  # woken by every write
        # Parts a peer is waiting for that nobody has started: the fetch starts them next.
        self.wanted: set[int] = set()
        # Peer fetch: a blob of one part is released to clients only once verified (a small
        # blob, a config: its response is never cut, whatever a peer sent).
        self.hold_until_verified = False
        # Set while bytes peers sent are fetched again from the store (readers wait), and
        # the ranges that turned out wrong: a reader that sent any of them is cut.
        self.repairing = False
        self.repairing_tried = False
        self.damaged: list[tuple[int, int]] = []

    @property
    def watermark(self) -> int:
        return self.plan.watermark

    @property
    def done(self) -> bool:
        return self.verified or self.error is not None

    def _wake(self, *, any_write: bool = False) -> None:
        if any_write:
            waiters, self._any_waiters = self._any_waiters, []
        else:
            waiters, self._waiters = self._waiters + self._any_waiters, []
            self._any_waiters = []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def wrote(self, part: Part, n: int) -> None:
        """``n`` bytes were written at ``part.pos``: wake readers when the prefix grew, and
        peers' readers (any offset) on every write."""
        if self.plan.advance(part, n):
            self._wake()
        elif self._any_waiters:
            self._wake(any_write=True)

    def finish(self) -> None:
        self.verified = True
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self._wake()

    def damage(self, start: int, end: int) -> None:
        """Bytes ``start..end`` (exclusive) were wrong and have been rewritten."""
        self.damaged.append((start, end))

    def start_repair(self) -> None:
        self.repairing = True

    def end_repair(self) -> None:
        self.repairing = False
        self._wake()

    def _sent_damaged(self, start: int, pos: int) -> bool:
        """Whether a reader that sent ``start..pos`` (exclusive) sent a damaged byte."""
        return any(s < pos and start < e for s, e in self.damaged)

    def _want(self, pos: int) -> None:
        part = self.plan.parts[pos // self.plan.part_bytes]
        if not part.claimed and not part.done:
            self.wanted.add(part.index)

    async def changed(self, *, any_write: bool = False) -> None:
        """Wait until the watermark moves (with ``any_write``: until anything is written)
        or the download ends."""
        fut = asyncio.get_running_loop().create_future()
        (self._any_waiters if any_write else self._waiters).append(fut)
        await fut

    def open_reader(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``start..end`` (inclusive) as they arrive; the last one after verification.

        The file is opened now, synchronously, so the rename at publish cannot race the open.
        ``aclose()`` it when done, started or not.
        """
        return GrowingRead(self, start, end)

    def open_peer_reader(self, start: int, end: int) -> GrowingRead:
        """Bytes ``start..end`` for another sidecar, as soon as each is written whatever the
        parts before it, the last one included: a peer verifies the whole blob itself, and
        holding each part's last byte until this host has all the others would chain the
        hosts' parts into a wait on each other."""
        return GrowingRead(self, start, end, verified_last=False)

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

    async def spans(
        self, start: int, end: int, most: int, *, verified_last: bool = True
    ) -> AsyncIterator[tuple[int, int]]:
        """(offset, length) spans of ``start..end`` that may be sent, at most ``most`` long,
        waiting for the download between them; byte ``end`` only once verified (unless not
        ``verified_last``: a peer's reader, which also takes bytes past a gap)."""
        pos = start
        checked = False  # against the repair's damaged ranges (once: later bytes are good)
        while pos <= end:
            if self.error is not None:
                raise UpstreamUnavailable(self.key, f"download failed: {self.error}")
            if self.damaged and not checked and not self.repairing:
                if self._sent_damaged(start, pos):
                    raise UpstreamUnavailable(self.key, "bytes already sent were wrong (a peer's)")
                checked = True
            if self.repairing:
                limit = pos  # wait: bytes are being compared with the store's
            elif self.verified:
                limit = end + 1
            elif verified_last and self.hold_until_verified:
                limit = pos
            elif verified_last:
                limit = min(self.plan.watermark, end)
            else:
                limit = min(self.plan.written_from(pos), end + 1)
                if limit <= pos:
                    self._want(pos)
            ready = limit - pos
            if ready > 0:
                n = min(most, ready)
                yield pos, n
                pos += n
            else:
                await self.changed(any_write=not verified_last)


async def sendfile(
    loop: asyncio.AbstractEventLoop, transport: asyncio.Transport, f: io.FileIO, pos: int, n: int
) -> None:
    """``loop.sendfile``, with a peer that went away reported as ConnectionResetError (asyncio
    says RuntimeError("Transport is closing"), which handlers would take for a bug)."""
    if transport.is_closing():
        raise ConnectionResetError("the peer closed the connection")
    try:
        await loop.sendfile(transport, f, pos, n)
    except RuntimeError as exc:
        if transport.is_closing():
            raise ConnectionResetError("the peer closed the connection") from exc
        raise


class GrowingRead:
    """One reader of a :class:`Download`'s growing file: counted among its readers from the
    moment it is made until :meth:`aclose` (idempotent; also when never iterated, which an
    async generator's ``finally`` would not see)."""

    def __init__(
        self, download: Download, start: int, end: int, *, verified_last: bool = True
    ) -> None:
        self._download = download
        self._start, self._end = start, end
        self._verified_last = verified_last
        self._fd = download._open()
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
        spans = self._download.spans(
            self._start, self._end, READ_CHUNK, verified_last=self._verified_last
        )
        async for pos, n in spans:
            data = os.pread(fd, n, pos)
            if len(data) != n:
                raise UpstreamUnavailable(self._download.key, "cache file shorter than written")
            yield data

    async def send_to(
        self,
        transport: asyncio.Transport,
        *,
        pace: Callable[[int], Awaitable[None]] | None = None,
        sent: Callable[[int], None] | None = None,
    ) -> None:
        """The same bytes, sent with sendfile (page cache to socket inside the kernel: no
        copy through this process; measured ~7 % less CPU for a cold 256 MiB blob), span by
        span as the download releases them. Call instead of iterating, then ``aclose()``.
        ``pace(n)`` is awaited before each span (a rate limit), ``sent(n)`` told after."""
        loop = asyncio.get_running_loop()
        most = SEND_MOST if pace is None else PACED_MOST
        with io.FileIO(self._fd, "rb", closefd=False) as f:
            spans = self._download.spans(
                self._start, self._end, most, verified_last=self._verified_last
            )
            async for pos, n in spans:
                if pace is not None:
                    await pace(n)
                await sendfile(loop, transport, f, pos, n)
                if sent is not None:
                    sent(n)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._chunks is not None:
            await self._chunks.aclose()  # type: ignore[attr-defined]
        os.close(self._fd)
        self._download.readers -= 1
