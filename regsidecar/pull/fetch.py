"""Fetch one blob into its temp file: parallel ranged parts, a hasher that follows the prefix.

The state machine of aws-c-s3's auto-ranged GET, with one difference: the first request is a
plain GET of the whole blob, so a small or fast blob costs exactly one request. While it
runs, every ``EXPAND_EVERY_S`` the fetch asks whether that one connection would take longer
than ``parallel_after_s`` for the rest; if so it claims further parts (in order, so the
prefix grows at the front) for new connections, as many as ``connections_per_blob`` and the
source's :class:`~regsidecar.pull.window.ConnectionWindow` allow. The first response stops
at the first part someone else holds::

    first GET  ──part 0──────────▶ stops (part 1 is taken)   then takes part 8 ...
    range 1                        ──part 1──▶ part 9 ...
    range 2                        ──part 2──▶ ...
    hasher     follows the watermark, in order, in a worker thread; fdatasync every 16 MiB

A failed or cut part is retried by itself, from the byte it got to, through the
:class:`~regsidecar.pull.sources.Chooser` (so its breaker and the fallbacks apply per part),
at most ``retry.max_resumes`` times; the other parts go on. Memory is one network buffer
per connection: parts are written at their offsets as they arrive (``os.pwrite``).

>>> await Fetcher(download, fd, chooser, "app", options, metrics).run()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from regsidecar.errors import Busy, IntegrityError, NotFound, StorageError, UpstreamUnavailable
from regsidecar.metrics import Metrics
from regsidecar.pull.download import Download
from regsidecar.pull.intake import Intake
from regsidecar.pull.parts import Part
from regsidecar.pull.sources import BlobSource, Chooser
from regsidecar.pull.window import ConnectionWindow
from regsidecar.retry import RetryPolicy

log = logging.getLogger(__name__)

# How often a running download reconsiders its number of connections.
EXPAND_EVERY_S = 0.05
# The first connection's rate is measured from WARMUP_S after its first byte (TCP slow start
# and a fresh process's first chunks would understate it), over at least MIN_SAMPLE_S.
WARMUP_S = 0.05
MIN_SAMPLE_S = 0.1
# The hasher reads the written prefix in spans of at least this much (fewer thread hops),
# at most HASH_MOST at a time.
HASH_LEAST = 4 * 1024 * 1024
HASH_MOST = 16 * 1024 * 1024
# Bytes between background fdatasync calls, so the fsync that holds every reader's last byte
# has only the tail left.
FLUSH_EVERY = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FetchOptions:
    connections_per_blob: int = 8
    parallel_after_s: float = 1.0
    stall_s: float = 5.0  # a request that delivers nothing for this long is given up on
    peer_stall_s: float = 5.0  # the same for a peer (peers.stall_s)
    # ... unless this host's link is busy with other responses: then at most this long
    peer_patience_s: float = 30.0
    max_resumes: int = 10  # per part
    retry: RetryPolicy = field(default_factory=RetryPolicy)


@contextlib.asynccontextmanager
async def closing(it: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """aclosing() for an AsyncIterator that is an async generator at run time."""
    try:
        yield it
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


def _hash_span(h: hashlib._Hash, fd: int, offset: int, n: int) -> None:
    """Hash ``n`` bytes of ``fd`` at ``offset`` (a worker thread's job: hashlib releases
    the GIL on large updates, so the event loop goes on meanwhile)."""
    end = offset + n
    while offset < end:
        data = os.pread(fd, min(1024 * 1024, end - offset), offset)
        if not data:
            raise IntegrityError(str(fd), "cache file shorter than its written prefix")
        h.update(data)
        offset += len(data)


def _differing(a: bytes, b: bytes) -> tuple[int, int]:
    """The range (end exclusive) from the first to the last byte where ``a`` and ``b`` (of
    one length) differ; they do.

    >>> _differing(b"abcdef", b"abxdyf")
    (2, 5)
    """
    n = min(len(a), len(b))
    first = next((i for i in range(n) if a[i] != b[i]), n)
    last = next((i for i in range(n - 1, first - 1, -1) if a[i] != b[i]), first)
    return first, last + 1


class Stalled(UpstreamUnavailable):
    """A response that delivered nothing for ``stall_s``."""


@dataclass(frozen=True, slots=True)
class PeerSpan:
    """Bytes ``start..end`` (exclusive) one peer's response wrote, and whether the peer said
    they came from a blob it had verified."""

    start: int
    end: int
    peer: str
    verified: bool


@dataclass(slots=True)
class _Lease:
    """The part a worker holds now (an open-ended response moves it along)."""

    part: Part


class Fetcher:
    """Runs one :class:`Download` to a verified temp file (the caller fsyncs and publishes)."""

    def __init__(
        self,
        download: Download,
        fd: int,
        chooser: Chooser,
        repo: str,
        options: FetchOptions,
        metrics: Metrics,
        *,
        route: Callable[[int], Sequence[BlobSource]] | None = None,
        intake: Intake | None = None,
    ) -> None:
        """``route(offset)``: the peers to ask for the part at ``offset`` before the store
        (None: no peer fetch; with it every part is its own ranged request from the start,
        each from its own tree's parent). ``intake``: what this host receives, every
        download together (shared; it decides whether a silent peer is waited for)."""
        self.download = download
        self.fd = fd
        self.chooser = chooser
        self.repo = repo
        self.options = options
        self.metrics = metrics
        self._route = route
        self.intake = intake if intake is not None else Intake()
        self._routes: dict[int, Sequence[BlobSource]] = {}
        # Only a download for a repository may ask the fallback registries (a peer's
        # request names a digest only): without one, the store is the last source.
        self._store_only = not repo
        self._workers: set[asyncio.Task[None]] = set()
        self._first_byte_at: float | None = None
        self._sample_from: tuple[float, int] | None = None  # (time, bytes written then)
        # For the "blob cached" log line and the benchmarks.
        self.requests = 0
        self.most_connections = 0
        self.sources: set[str] = set()
        # What peers sent: (start, end exclusive, peer URL, said verified), per response.
        self.peer_spans: list[PeerSpan] = []

    async def run(self) -> None:
        hasher = asyncio.create_task(self._hash())
        try:
            await self._fetch_all()
            await hasher
        finally:
            for task in (*self._workers, hasher):
                task.cancel()
            await asyncio.gather(*self._workers, hasher, return_exceptions=True)

    # -- connections ----------------------------------------------------------------------

    async def _fetch_all(self) -> None:
        plan = self.download.plan
        first = plan.claim()
        if first is None:
            return  # an empty blob
        # With parallel_after_s 0 ranged parts start at once: the first request is ranged too
        # (and with peers: each part comes from its own tree). The first connection is never
        # refused (the download slots bound those).
        window = self._first_source(first).window
        window.opened()
        open_ended = self.options.parallel_after_s > 0 and self._route is None
        self._spawn(first, window, open_ended=open_ended)
        self._expand()
        while self._workers:
            done, _ = await asyncio.wait(
                self._workers, timeout=EXPAND_EVERY_S, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                self._workers.discard(task)
                task.result()  # a part that gave up fails the download
            if plan.complete:
                # Every byte is in. A response still open (a first GET stalled after its
                # part, waiting to learn that the next part is taken) has nothing left to
                # give: run()'s clean-up cancels it.
                return
            self._expand()
            if not self._workers and not plan.complete:
                # Every worker stopped for the window while parts remain: one goes on.
                part = plan.claim()
                if part is not None:
                    window = self._first_source(part).window
                    window.opened()
                    self._spawn(part, window, open_ended=False)

    def _spawn(self, part: Part, window: ConnectionWindow, *, open_ended: bool) -> None:
        """A worker for ``part`` holding one connection of ``window`` (already counted there)
        until it ends."""
        task = asyncio.create_task(self._worker(part, window, open_ended))
        self._workers.add(task)
        self.most_connections = max(self.most_connections, len(self._workers))

    def _peers_for(self, part: Part) -> Sequence[BlobSource]:
        """The part's ancestors, worked out once per download (hashing every member)."""
        assert self._route is not None
        peers = self._routes.get(part.start)
        if peers is None:
            peers = self._routes[part.start] = self._route(part.start)
        return peers

    def _first_source(self, part: Part) -> BlobSource:
        """Where ``part`` is asked for first: its tree's parent, or the store."""
        if self._route is not None:
            for peer in self._peers_for(part):
                if peer.breaker.state != "open":
                    return peer
        return self.chooser.primary if self._store_only else self.chooser.current()

    def _expand(self) -> None:
        plan = self.download.plan
        if self.download.wanted:
            self._start_wanted()
        want = min(self.options.connections_per_blob - len(self._workers), plan.unclaimed())
        if want <= 0 or not self._worth_more():
            return
        if self._route is not None:
            self._expand_by_part(want)
            return
        window = self.chooser.current().window
        granted = window.grant(want)
        for _ in range(granted):
            part = plan.claim()
            if part is None:
                window.closed()  # granted but not needed after all
                continue
            self._spawn(part, window, open_ended=False)

    def _start_wanted(self) -> None:
        """Start the parts another sidecar is waiting for now, beyond connections_per_blob
        if need be: its request would otherwise sit silent until it gave up on this host
        (stall_s) and fetched the part from the store itself."""
        plan, wanted = self.download.plan, self.download.wanted
        for index in sorted(wanted):
            part = plan.parts[index]
            if part.claimed or part.done:
                continue
            window = self._first_source(part).window
            window.opened()
            self._spawn(plan.take(part), window, open_ended=False)
        wanted.clear()

    def _expand_by_part(self, want: int) -> None:
        """With peers, parts come from different sources: each free part (in order) opens
        when its own source's window has room; a full one (the store's) does not hold back
        the parts behind it that come from peers."""
        plan = self.download.plan
        for part in plan.free():
            if want <= 0:
                return
            window = self._first_source(part).window
            if window.grant(1) == 0:
                continue
            self._spawn(plan.take(part), window, open_ended=False)
            want -= 1

    def _worth_more(self) -> bool:
        """Whether the connections running would take longer than ``parallel_after_s`` for
        what is left, at the rate they have shown since the warm-up after the first byte."""
        if self.options.parallel_after_s <= 0 or self._route is not None:
            return True
        if self._first_byte_at is None:
            return False
        now, plan = time.monotonic(), self.download.plan
        if self._sample_from is None:
            if now - self._first_byte_at >= WARMUP_S:
                self._sample_from = (now, plan.written)
            return False
        since, written = self._sample_from
        if now - since < MIN_SAMPLE_S:
            return False
        rate = (plan.written - written) / (now - since)
        return rate <= 0 or (plan.size - plan.written) / rate > self.options.parallel_after_s

    async def _worker(self, part: Part | None, window: ConnectionWindow, open_ended: bool) -> None:
        plan = self.download.plan
        try:
            while part is not None:
                await self._fetch_part(part, open_ended)
                open_ended = False
                if window.over() and len(self._workers) > 1:
                    return  # the window shrank: this connection stops, the others go on
                if self._route is not None:
                    return  # the next part's source may be another: _expand opens it
                part = plan.claim()
        finally:
            window.closed()

    async def _fetch_part(self, part: Part, open_ended: bool) -> None:
        """Fetch ``part`` (and, on an open-ended response, the free parts after it) to its
        end, retrying it by itself from where it got to."""
        plan = self.download.plan
        lease = _Lease(part)
        failures = 0
        given_up: set[BlobSource] = set()  # peers that failed this part
        try:
            while not lease.part.done:
                source = self._pick(lease.part, given_up)
                end = None if open_ended and plan.tail_free(lease.part) else lease.part.end
                try:
                    await self._request(source, lease, end)
                except StorageError as exc:
                    if source.name == "peer":
                        # Down, busy, stalled, cut or refused: the next ancestor (or the
                        # store) goes on from the byte this one got to, at once.
                        self._leave_peer(source, lease.part, exc)
                        given_up.add(source)
                        continue
                    source.breaker.failure()
                    if not isinstance(exc, UpstreamUnavailable):
                        raise
                    source.window.throttled()
                    failures += 1
                    if failures > self.options.max_resumes:
                        raise
                    self.metrics.blob_resumes.inc()
                    log.warning(
                        "blob part interrupted; resuming",
                        extra={
                            "digest": self.download.key,
                            "offset": lease.part.pos,
                            "part": lease.part.index,
                            "source": source.name,
                            "resume": failures,
                            "error": str(exc)[:200],
                        },
                    )
                    await asyncio.sleep(self.options.retry.backoff(failures - 1))
                    continue
                source.breaker.success()
        finally:
            plan.release(lease.part)

    def _leave_peer(self, peer: BlobSource, part: Part, exc: StorageError) -> None:
        """A peer failed ``part``. A peer that is slow or has every upload slot taken is busy,
        not broken: its circuit stays closed for the other parts."""
        if not isinstance(exc, Stalled | Busy):
            peer.breaker.failure()
        self.metrics.peer_errors.inc()
        log.info(
            "peer part interrupted; asking the next source",
            extra={
                "digest": self.download.key,
                "offset": part.pos,
                "peer": getattr(peer, "url", ""),
                "error": str(exc)[:200],
            },
        )

    def _pick(self, part: Part, given_up: set[BlobSource]) -> BlobSource:
        """The part's next source: its tree's ancestors not yet given up on (and whose
        circuits let a request through), then the store and its fallbacks."""
        if self._route is not None:
            for peer in self._peers_for(part):
                if peer not in given_up and peer.breaker.allow():
                    return peer
        if self._store_only:
            return self.chooser.primary
        return self.chooser.pick(self.download.key)

    async def _request(self, source: BlobSource, lease: _Lease, end: int | None) -> None:
        """One GET from ``lease.part.pos`` to ``end`` (None: the blob's end, running on into
        free parts, which ``lease`` then holds). Raises UpstreamUnavailable when it ends
        short of the part's end."""
        download, window = self.download, source.window
        part = lease.part
        self.requests += 1
        self.sources.add(source.name)
        self.metrics.observe_download_request(source.name, ranged=part.pos > 0 or end is not None)
        begin = part.pos
        chunks = source.open(self.repo, download.digest, part.pos, end)
        try:
            async with closing(chunks):
                while (chunk := await self._next(chunks, source.name)) is not None:
                    if self._first_byte_at is None:
                        self._first_byte_at = time.monotonic()
                    window.received(len(chunk))
                    self.intake.add(len(chunk))
                    self.metrics.upstream_bytes(source.name, len(chunk))
                    more = self._store(lease, chunk, open_ended=end is None)
                    if not more and end is None:
                        # Done, and the next part is someone else's: stop reading (a ranged
                        # response instead ends by itself, and its connection is reused).
                        return
        except NotFound as exc:
            # The blob was there a moment ago (its size was read): a transient answer.
            raise UpstreamUnavailable(download.key, f"{source.name}: {exc}") from exc
        finally:
            if source.name == "peer" and lease.part.pos > begin:
                self.peer_spans.append(
                    PeerSpan(
                        begin,
                        lease.part.pos,
                        getattr(source, "url", "peer"),
                        bool(getattr(chunks, "verified", False)),
                    )
                )
        if not lease.part.done:
            raise UpstreamUnavailable(
                download.key,
                f"{source.name}: short read at {lease.part.pos} of part {lease.part.index}",
            )

    async def _next(self, chunks: AsyncIterator[bytes], source: str) -> bytes | None:
        """The next chunk of a response, or None at its end. A response that gives nothing
        for ``stall_s`` (headers included) is given up on, and its part resumed on a new
        connection: AWS advises retrying slow S3 requests rather than waiting them out, and
        a starved TCP connection can otherwise sit silent until the read timeout (30 s).

        A peer's response is waited for longer, up to ``peer_patience_s``, while this
        host's link is busy with other responses (:mod:`regsidecar.pull.intake`): it is
        starved by them, and another request would only join the queue."""
        if source == "peer":
            return await self._next_from_peer(chunks)
        limit = self.options.stall_s
        try:
            async with asyncio.timeout(limit):
                return await anext(chunks)
        except StopAsyncIteration:
            return None
        except TimeoutError as exc:
            raise Stalled(self.download.key, f"{source}: nothing for {limit:g} s") from exc

    async def _next_from_peer(self, chunks: AsyncIterator[bytes]) -> bytes | None:
        """:meth:`_next` for a peer: silent for ``peer_stall_s``, it is left unless this
        host's link is busy, and then at the latest after ``peer_patience_s``."""
        loop = asyncio.get_running_loop()
        limit, most = self.options.peer_stall_s, self.options.peer_patience_s
        began = loop.time()
        timer: asyncio.TimerHandle | None = None

        def check() -> None:
            nonlocal timer
            if loop.time() - began + limit <= most and self.intake.busy(limit):
                timer = loop.call_later(limit, check)  # starved by this host's own traffic
            else:
                deadline.reschedule(loop.time())

        try:
            async with asyncio.timeout(None) as deadline:
                timer = loop.call_later(limit, check)
                try:
                    return await anext(chunks)
                finally:
                    timer.cancel()
        except StopAsyncIteration:
            return None
        except TimeoutError as exc:
            waited = loop.time() - began
            raise Stalled(self.download.key, f"peer: nothing for {waited:.3g} s") from exc

    def _store(self, lease: _Lease, chunk: bytes, *, open_ended: bool) -> bool:
        """Write ``chunk`` at the leased part's position. An open-ended response runs on into
        the next part while that part is free (the lease moves to it); False when the
        response must stop here (its part is done and the rest is not ours)."""
        plan, view = self.download.plan, memoryview(chunk)
        part = lease.part
        while view:
            if part.done:
                nxt = plan.claim_next(part) if open_ended else None
                if nxt is None:
                    if open_ended and part.index == len(plan.parts) - 1:
                        raise IntegrityError(
                            self.download.key, "source sent more bytes than the blob's size"
                        )
                    return False
                plan.release(part)
                part = lease.part = nxt
            n = min(len(view), part.remaining)
            piece = view[:n]
            written = 0
            while written < n:
                written += os.pwrite(self.fd, piece[written:], part.pos + written)
            self.download.wrote(part, n)
            view = view[n:]
        return open_ended or not part.done

    # -- verification ---------------------------------------------------------------------

    async def _hash(self) -> None:
        """Hash the prefix as it becomes contiguous, in order, off the event loop; then
        compare the whole with the digest. Written data goes to disk in the background
        meanwhile (fdatasync every FLUSH_EVERY, never waited for here), so the fsync that
        holds every reader's last byte has only the tail left."""
        download = self.download
        plan, size = download.plan, download.size
        h = hashlib.new(download.digest.algorithm)
        rfd = os.open(download.temp_path, os.O_RDONLY)
        hashed = flushed = 0
        flush: asyncio.Future[None] | None = None
        try:
            while hashed < size:
                ready = plan.watermark - hashed
                if ready < HASH_LEAST and plan.watermark < size:
                    await download.changed()
                    continue
                if plan.written - flushed >= FLUSH_EVERY and (flush is None or flush.done()):
                    if flush is not None:
                        flush.result()  # a failed flush is a failing disk
                    flushed = plan.written
                    flush = asyncio.ensure_future(asyncio.to_thread(os.fdatasync, self.fd))
                n = min(ready, HASH_MOST)
                await asyncio.to_thread(_hash_span, h, rfd, hashed, n)
                hashed += n
        finally:
            os.close(rfd)
            # Never leave a flush running on a descriptor the caller is about to close.
            if flush is not None:
                with contextlib.suppress(OSError):
                    await asyncio.shield(flush)
        if flush is not None:
            flush.result()
        if h.hexdigest() != download.digest.hex:
            raise IntegrityError(download.key, f"content does not match {download.digest}")

    # -- repair ---------------------------------------------------------------------------

    async def repair(self) -> dict[str, bool]:
        """After a whole blob failed verification with bytes from peers in it: fetch every
        span peers sent again from the store, compare, write the store's bytes where they
        differ (those ranges become the download's ``damaged``: a reader that already sent
        any of them is cut), and hash the whole file again. Returns the peers whose bytes
        differed (URL -> whether they had said verified); IntegrityError if the blob still
        does not match (the store's own bytes or a non-peer part are wrong)."""
        download = self.download
        wrong: dict[str, bool] = {}
        spans = sorted(self.peer_spans, key=lambda s: s.start)
        limit = asyncio.Semaphore(max(1, self.options.connections_per_blob))

        async def check(span: PeerSpan) -> None:
            async with limit:
                if await self._refetch(span.start, span.end):
                    wrong[span.peer] = wrong.get(span.peer, False) or span.verified

        await asyncio.gather(*(check(s) for s in spans))
        h = hashlib.new(download.digest.algorithm)
        rfd = os.open(download.temp_path, os.O_RDONLY)
        try:
            await asyncio.to_thread(_hash_span, h, rfd, 0, download.size)
        finally:
            os.close(rfd)
        if h.hexdigest() != download.digest.hex:
            raise IntegrityError(
                download.key, f"content does not match {download.digest} (after repair)"
            )
        return wrong

    async def _refetch(self, start: int, end: int) -> bool:
        """Bytes ``start..end`` (exclusive) again from the store; where they differ from the
        file, overwrite them and mark the range damaged. True if anything differed."""
        rfd = os.open(self.download.temp_path, os.O_RDONLY)
        try:
            return await self._compare(self.chooser.primary, rfd, start, end)
        finally:
            os.close(rfd)

    async def _compare(self, source: BlobSource, rfd: int, start: int, end: int) -> bool:
        download = self.download
        pos, differed = start, False
        failures = 0
        while pos < end:
            try:
                async with closing(source.open(self.repo, download.digest, pos, end - 1)) as it:
                    while pos < end and (chunk := await self._next(it, source.name)) is not None:
                        chunk = chunk[: end - pos]
                        have = os.pread(rfd, len(chunk), pos)
                        if have != chunk:
                            differed = True
                            lo, hi = _differing(have, chunk)
                            download.damage(pos + lo, pos + hi)
                            os.pwrite(self.fd, chunk, pos)
                        pos += len(chunk)
                if pos < end:
                    raise UpstreamUnavailable(download.key, f"short read at {pos}")
            except (UpstreamUnavailable, NotFound) as exc:
                failures += 1
                if failures > self.options.max_resumes:
                    raise UpstreamUnavailable(download.key, f"repair: {exc}") from exc
                await asyncio.sleep(self.options.retry.backoff(failures - 1))
        return differed
