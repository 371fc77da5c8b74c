"""Blob downloads from the store into the cache: one per digest, bounded, resumable.

A download runs as a task detached from any request. It waits for one of the bounded slots
(:class:`~regsidecar.cache.limiter.Limiter`), streams the blob into a temp file while hashing,
resumes with a Range request where a connection broke, verifies size and digest, fsyncs and
publishes the file. Readers follow the growing file (:class:`BlobFetch`). When the cache disk
cannot take a blob, :meth:`Downloads.pass_through` streams it straight from the store instead.

>>> downloads = Downloads(cache, settings, metrics, on_verified=seen.add)  # doctest: +SKIP
>>> fetch = downloads.get(digest) or downloads.start(digest, key, size, open_at)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable

from regsidecar.cache.limiter import Limiter
from regsidecar.cache.singleflight import BlobFetch
from regsidecar.cache.store import BlobCache
from regsidecar.config import Settings
from regsidecar.errors import IntegrityError, UpstreamUnavailable
from regsidecar.metrics import Metrics
from regsidecar.oci.reference import Digest

log = logging.getLogger(__name__)

# Opens a blob's bytes from an offset (the primary store, or a fallback registry).
Opener = Callable[[int], AsyncIterator[bytes]]

# After a cache write fails, blobs stream without caching for this long before trying again.
DISK_TROUBLE_COOLDOWN_S = 60.0
# Bytes between background fdatasync calls of a download in progress.
FLUSH_EVERY = 16 * 1024 * 1024


@contextlib.asynccontextmanager
async def _closing(it: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """aclosing() for an AsyncIterator that is an async generator at run time."""
    try:
        yield it
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


class Downloads:
    """The blob downloads in progress, and the policy for starting new ones."""

    def __init__(
        self,
        cache: BlobCache,
        settings: Settings,
        metrics: Metrics,
        *,
        on_verified: Callable[[Digest], None],
    ) -> None:
        self.cache = cache
        self.settings = settings
        self.metrics = metrics
        self._on_verified = on_verified
        self._retry = settings.retry.policy()
        lim = settings.limits
        self._limiter = Limiter(lim.max_upstream_downloads, lim.max_queued_downloads)
        self._fetches: dict[Digest, BlobFetch] = {}
        self._disk_trouble_until = 0.0

    def get(self, digest: Digest) -> BlobFetch | None:
        return self._fetches.get(digest)

    async def close(self) -> None:
        tasks = [f.task for f in self._fetches.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def usable(self, size: int) -> bool:
        """Whether the cache can take a new blob of ``size`` now."""
        if time.monotonic() < self._disk_trouble_until:
            return False
        return self.cache.can_hold(size)

    async def pass_through(
        self, digest: Digest, key: str, size: int, source: Opener, start: int, end: int
    ) -> AsyncIterator[bytes]:
        """Bytes start..end straight from the store, for when the cache cannot take the blob.
        A whole-blob response is still verified: its last chunk is held back until the digest
        matches, so a client never receives a complete, wrong blob."""
        whole = start == 0 and end == size - 1
        h = hashlib.new(digest.algorithm)
        pos = start
        held = b""
        resumes = 0
        while pos <= end:
            try:
                async with _closing(source(pos)) as chunks:
                    async for chunk in chunks:
                        chunk = chunk[: end + 1 - pos]
                        if not chunk:
                            break
                        pos += len(chunk)
                        if whole:
                            h.update(chunk)
                            if held:
                                yield held
                            held = chunk
                        else:
                            yield chunk
                        if pos > end:
                            break
            except UpstreamUnavailable:
                if resumes >= self.settings.retry.max_resumes:
                    raise
                resumes += 1
                self.metrics.blob_resumes.inc()
                await asyncio.sleep(self._retry.backoff(resumes - 1))
                continue
            if pos <= end:
                raise UpstreamUnavailable(key, f"short read: {pos - start} of {end + 1 - start}")
        if whole:
            if h.hexdigest() != digest.hex:
                raise IntegrityError(key, f"content does not match {digest}")
            if held:
                yield held

    def start(self, digest: Digest, key: str, size: int, source: Opener) -> BlobFetch:
        """Begin the one download of ``digest``; readers join through :meth:`get`."""
        self._limiter.admit()  # TooManyRequests (429) when running + queued are full
        fetch = BlobFetch(
            str(digest), size, self.cache.temp_path(digest), self.cache.path_for(digest)
        )
        # Created synchronously so readers can open the file as soon as they hold the fetch.
        try:
            fd = os.open(fetch.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:
            self._limiter.release_admission()
            raise
        self.cache.reserve(size)
        self._fetches[digest] = fetch
        # Detached from any one request: a client that goes away does not stop the download,
        # and the first client's deadline does not bound it (a fresh context drops it).
        fetch.task = asyncio.get_running_loop().create_task(
            self._download(fetch, digest, key, fd, source), context=contextvars.Context()
        )
        return fetch

    async def _download(
        self, fetch: BlobFetch, digest: Digest, key: str, fd: int, source: Opener
    ) -> None:
        cache = self.cache
        released = False
        started = time.monotonic()
        try:
            try:
                async with self._limiter:  # waits for one of the bounded slots
                    started = time.monotonic()
                    await self._transfer(fetch, digest, key, fd, source)
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)
            await asyncio.to_thread(cache.publish, fetch.temp_path, digest)
            cache.release(fetch.size)
            released = True
            cache.record(digest, fetch.size)
            self._on_verified(digest)
            fetch.finish()
            log.info(
                "blob cached",
                extra={
                    "digest": str(digest),
                    "bytes": fetch.size,
                    "seconds": round(time.monotonic() - started, 3),
                    "readers": fetch.readers,
                },
            )
        except BaseException as exc:
            fetch.fail(exc)
            cache.discard(fetch.temp_path)
            if isinstance(exc, OSError):
                # The cache disk failed (full, I/O error): stream without caching for a while.
                self._disk_trouble_until = time.monotonic() + DISK_TROUBLE_COOLDOWN_S
                self.metrics.cache_write_errors.inc()
            if not released:
                cache.release(fetch.size)
            level = logging.ERROR if isinstance(exc, IntegrityError) else logging.WARNING
            log.log(level, "blob download failed", extra={"digest": str(digest), "error": str(exc)})
            if not isinstance(exc, Exception):
                raise
        finally:
            self._fetches.pop(digest, None)
            self._limiter.release_admission()

    async def _transfer(
        self, fetch: BlobFetch, digest: Digest, key: str, fd: int, source: Opener
    ) -> None:
        """Stream the blob into ``fd``, resuming with Range where a connection broke, and
        verify size and digest over the whole of it."""
        h = hashlib.new(digest.algorithm)
        resumes = 0
        # Written data goes to disk in the background while the download goes on, so the
        # fsync before publishing (which holds every reader's last byte) has only the tail left.
        flushed_to = 0
        flush: asyncio.Future[None] | None = None
        try:
            while True:
                try:
                    # From where we got to: the hash carries on over the whole blob.
                    async with _closing(source(fetch.written)) as chunks:
                        async for chunk in chunks:
                            if fetch.written + len(chunk) > fetch.size:
                                raise IntegrityError(
                                    key, "store sent more bytes than the blob's size"
                                )
                            view = memoryview(chunk)
                            while view:
                                view = view[os.write(fd, view) :]
                            h.update(chunk)
                            fetch.advance(len(chunk))
                            if fetch.written - flushed_to >= FLUSH_EVERY and (
                                flush is None or flush.done()
                            ):
                                if flush is not None:
                                    flush.result()  # a failed flush is a failing disk
                                flushed_to = fetch.written
                                flush = asyncio.ensure_future(asyncio.to_thread(os.fdatasync, fd))
                except UpstreamUnavailable as exc:
                    if fetch.written >= fetch.size:
                        break
                    if resumes >= self.settings.retry.max_resumes:
                        raise
                    resumes += 1
                    self.metrics.blob_resumes.inc()
                    log.warning(
                        "blob download interrupted; resuming",
                        extra={
                            "digest": str(digest),
                            "offset": fetch.written,
                            "resume": resumes,
                            "error": str(exc)[:200],
                        },
                    )
                    await asyncio.sleep(self._retry.backoff(resumes - 1))
                    continue
                break
        finally:
            # Never leave a flush running on a descriptor the caller is about to close.
            if flush is not None:
                with contextlib.suppress(OSError):
                    await asyncio.shield(flush)
        if flush is not None:
            flush.result()
        if fetch.written != fetch.size:
            raise UpstreamUnavailable(key, f"short read: {fetch.written} of {fetch.size} bytes")
        if h.hexdigest() != digest.hex:
            raise IntegrityError(key, f"content does not match {digest}")
