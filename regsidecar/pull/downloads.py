"""Blob downloads into the cache: one per digest, bounded, verified before anything is kept.

:meth:`Downloads.start` creates the temp file synchronously (so readers can open it at once)
and starts a task detached from any request: a client that goes away does not stop it, and
the first client's deadline does not bound it. The task waits for one of the bounded slots
(:class:`~regsidecar.cache.limiter.Limiter`), runs the :class:`~regsidecar.pull.fetch.Fetcher`
(parallel ranged parts, hashed as the prefix grows), fsyncs, publishes the file by rename and
releases every reader's last byte. When the cache disk cannot take a blob,
:meth:`Downloads.pass_through` streams it straight from its source instead, under the same
rule: a response's last byte waits for the whole blob's digest.

>>> downloads = Downloads(cache, chooser, settings, metrics, on_verified=seen.add)  # doctest: +SKIP
>>> download = downloads.get(digest) or downloads.start(digest, "app", info)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING

from regsidecar.cache.limiter import Limiter
from regsidecar.cache.store import BlobCache
from regsidecar.config import Settings
from regsidecar.errors import IntegrityError, UpstreamUnavailable
from regsidecar.metrics import Metrics
from regsidecar.oci.reference import Digest
from regsidecar.pull.download import Download
from regsidecar.pull.fetch import Fetcher, FetchOptions, closing
from regsidecar.pull.intake import Intake
from regsidecar.pull.parts import PartPlan, choose_part_bytes
from regsidecar.pull.sources import BlobInfo, Chooser

if TYPE_CHECKING:
    from regsidecar.peers.source import Peers

log = logging.getLogger(__name__)

# After a cache write fails, blobs stream without caching for this long before trying again.
DISK_TROUBLE_COOLDOWN_S = 60.0


def plan_for(info: BlobInfo, settings: Settings) -> PartPlan:
    """The parts of a blob: the configured part size, or the object's own multipart part
    size; one part (a single GET, resumed if it breaks) when one connection is all a blob
    may have."""
    d = settings.download
    if d.connections_per_blob <= 1:
        return PartPlan(info.size, max(info.size, 1))
    hint = info.part_bytes if d.align_to_multipart else None
    part = choose_part_bytes(info.size, d.part_bytes, hint, max_parts=d.max_parts_per_blob)
    return PartPlan(info.size, part)


class Downloads:
    """The blob downloads in progress, and the policy for starting new ones."""

    def __init__(
        self,
        cache: BlobCache,
        chooser: Chooser,
        settings: Settings,
        metrics: Metrics,
        *,
        on_verified: Callable[[Digest], None],
        peers: Peers | None = None,
    ) -> None:
        self.cache = cache
        self.peers = peers
        self.chooser = chooser
        self.settings = settings
        self.metrics = metrics
        self._on_verified = on_verified
        self._options = FetchOptions(
            connections_per_blob=settings.download.connections_per_blob,
            parallel_after_s=settings.download.parallel_after_s,
            stall_s=settings.download.stall_s,
            peer_stall_s=settings.peers.stall_s,
            peer_patience_s=settings.peers.patience_s,
            max_resumes=settings.retry.max_resumes,
            retry=settings.retry.policy(),
        )
        lim = settings.limits
        self.intake = Intake()  # every download's received bytes: is the link busy?
        self._limiter = Limiter(lim.max_upstream_downloads, lim.max_queued_downloads)
        self._downloads: dict[Digest, Download] = {}
        self._disk_trouble_until = 0.0

    def get(self, digest: Digest) -> Download | None:
        return self._downloads.get(digest)

    async def close(self) -> None:
        tasks = [d.task for d in self._downloads.values() if d.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def usable(self, size: int) -> bool:
        """Whether the cache can take a new blob of ``size`` now."""
        if time.monotonic() < self._disk_trouble_until:
            return False
        return self.cache.can_hold(size)

    def start(self, digest: Digest, repo: str, info: BlobInfo) -> Download:
        """Begin the one download of ``digest``; readers join through :meth:`get`."""
        self._limiter.admit()  # TooManyRequests (429) when running + queued are full
        download = Download(
            digest,
            info.size,
            self.cache.temp_path(digest),
            self.cache.path_for(digest),
            plan_for(info, self.settings),
        )
        # Created synchronously so readers can open the file as soon as they hold it.
        try:
            fd = os.open(download.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:
            self._limiter.release_admission()
            raise
        self.cache.reserve(info.size)
        self._downloads[digest] = download
        peers = self.peers
        peered = peers is not None and bool(peers.membership.others()) and not peers.avoided(digest)
        # A small blob from peers reaches clients whole and verified (never a cut response).
        download.hold_until_verified = peered and len(download.plan.parts) == 1
        # Detached from any one request (a fresh context also drops the request's deadline).
        download.task = asyncio.get_running_loop().create_task(
            self._run(download, repo, fd, peered=peered), context=contextvars.Context()
        )
        return download

    async def _run(self, download: Download, repo: str, fd: int, *, peered: bool) -> None:
        cache, digest = self.cache, download.digest
        released = False
        started = time.monotonic()
        peers = self.peers
        route = partial(peers.route, digest) if peers is not None and peered else None
        fetcher = Fetcher(
            download,
            fd,
            self.chooser,
            repo,
            self._options,
            self.metrics,
            route=route,
            intake=self.intake,
        )
        try:
            try:
                async with self._limiter:  # waits for one of the bounded slots
                    started = time.monotonic()
                    try:
                        await fetcher.run()
                    except IntegrityError:
                        if peers is None or not fetcher.peer_spans or not download.plan.complete:
                            raise
                        await self._repair(download, fetcher, peers)
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)
            await asyncio.to_thread(cache.publish, download.temp_path, digest)
            cache.release(download.size)
            released = True
            cache.record(digest, download.size)
            self._on_verified(digest)
            download.finish()
            log.info(
                "blob cached",
                extra={
                    "digest": str(digest),
                    "bytes": download.size,
                    "seconds": round(time.monotonic() - started, 3),
                    "readers": download.readers,
                    "parts": len(download.plan.parts),
                    "part_bytes": download.plan.part_bytes,
                    "requests": fetcher.requests,
                    "connections": fetcher.most_connections,
                    "sources": sorted(fetcher.sources),
                },
            )
        except BaseException as exc:
            download.fail(exc)
            cache.discard(download.temp_path)
            if isinstance(exc, OSError):
                # The cache disk failed (full, I/O error): stream without caching for a while.
                self._disk_trouble_until = time.monotonic() + DISK_TROUBLE_COOLDOWN_S
                self.metrics.cache_write_errors.inc()
            if isinstance(exc, IntegrityError) and not download.repairing_tried:
                self.metrics.download_corrupt.inc()
            if not released:
                cache.release(download.size)
            level = logging.ERROR if isinstance(exc, IntegrityError) else logging.WARNING
            log.log(level, "blob download failed", extra={"digest": str(digest), "error": str(exc)})
            if not isinstance(exc, Exception):
                raise
        finally:
            self._downloads.pop(digest, None)
            self._limiter.release_admission()

    async def _repair(self, download: Download, fetcher: Fetcher, peers: Peers) -> None:
        """The blob failed verification and peers sent some of it: what they sent is fetched
        again from the store and compared; the peers whose bytes were wrong answer for it
        (quarantine, or a strike for bytes they were still receiving themselves), and the
        blob is published if it now verifies. Readers wait meanwhile; one that had already
        sent a wrong byte is cut (its client retries), the others go on."""
        digest = download.digest
        self.metrics.download_corrupt.inc()
        log.error(
            "blob from peers failed verification; checking their bytes against the store",
            extra={"digest": str(digest), "peer_spans": len(fetcher.peer_spans)},
        )
        peers.avoid(digest)
        download.repairing_tried = True
        download.start_repair()
        try:
            wrong = await fetcher.repair()
        finally:
            download.end_repair()
        peers.blame(wrong, f"sent wrong bytes of {digest}")
        log.warning(
            "blob repaired from the store",
            extra={
                "digest": str(digest),
                "peers": sorted(wrong),
                "damaged_bytes": sum(e - s for s, e in download.damaged),
            },
        )

    async def pass_through(
        self, digest: Digest, repo: str, size: int, start: int, end: int
    ) -> AsyncIterator[bytes]:
        """Bytes ``start..end`` straight from the source, for when the cache cannot take the
        blob. The whole blob is read and hashed whatever the range, and the response's last
        piece is held back until the digest matches."""
        h = hashlib.new(digest.algorithm)
        pos = 0
        held = b""
        failures = 0
        while pos < size:
            source = self.chooser.pick(str(digest))
            try:
                async with closing(source.open(repo, digest, pos, None)) as chunks:
                    async for chunk in chunks:
                        chunk = chunk[: size - pos]
                        h.update(chunk)
                        lo, hi = max(pos, start), min(pos + len(chunk), end + 1)
                        if lo < hi:
                            if held:
                                yield held
                            held = chunk[lo - pos : hi - pos]
                        pos += len(chunk)
                        if pos >= size:
                            break
                if pos < size:
                    raise UpstreamUnavailable(str(digest), f"short read: {pos} of {size}")
            except UpstreamUnavailable:
                source.breaker.failure()
                failures += 1
                if failures > self.settings.retry.max_resumes:
                    raise
                self.metrics.blob_resumes.inc()
                await asyncio.sleep(self._options.retry.backoff(failures - 1))
                continue
            source.breaker.success()
        if h.hexdigest() != digest.hex:
            raise IntegrityError(str(digest), f"content does not match {digest}")
        if held:
            yield held
