"""Pull-through logic: tag -> digest -> manifest -> blobs, from the cache or the store.

The API layer calls four methods (:meth:`Registry.manifest`, :meth:`Registry.blob`,
:meth:`Registry.tags`, :meth:`Registry.close`) and gets plain values back. Storage errors are
translated into OCI errors here; handlers never see a driver exception.

* Tags resolve through a short TTL cache; link checks (is this blob/manifest part of this
  repository?) through a longer one; manifest bytes, immutable per digest, through an
  in-memory LRU and the disk cache.
* A blob that is not local is downloaded once however many clients ask
  (:class:`~regsidecar.cache.singleflight.BlobFetch`): the first request starts a detached
  download task, every request streams the growing file, the digest is checked before the
  file is published, and nothing unverified is ever committed.
* With a filesystem store, blobs are served from the store's own files: no second copy.

>>> registry = await Registry.open(settings)  # doctest: +SKIP
>>> result = await registry.manifest("app", "v1", accepts)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from cachetools import LRUCache, TTLCache

from regsidecar.cache.limiter import Limiter
from regsidecar.cache.singleflight import BlobFetch, SingleFlight
from regsidecar.cache.store import BlobCache
from regsidecar.clock.skew import SkewEstimator
from regsidecar.config import Settings
from regsidecar.errors import (
    BlobUnknown,
    DigestInvalid,
    IntegrityError,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    NotFound,
    StorageError,
    Unavailable,
    UpstreamUnavailable,
)
from regsidecar.metrics import Metrics
from regsidecar.oci import mediatypes
from regsidecar.oci.mediatypes import ManifestInfo
from regsidecar.oci.reference import Digest, Reference, parse_digest
from regsidecar.retry import DeadlineExceeded, RetryPolicy, retrying
from regsidecar.storage.base import Driver
from regsidecar.storage.filesystem import FilesystemDriver
from regsidecar.storage.registry import RegistryReader
from regsidecar.storage.s3 import S3Driver, S3Options

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: Digest
    payload: bytes
    info: ManifestInfo

    @property
    def media_type(self) -> str:
        return self.info.media_type


@dataclass(frozen=True, slots=True)
class LocalBlob:
    """A verified file to send with sendfile; hold :meth:`pinned` while sending."""

    digest: Digest
    path: str
    size: int
    pinned: Callable[[], contextlib.AbstractContextManager[None]]
    source: str  # "store" (a directory store's own file) or "cache"


@dataclass(frozen=True, slots=True)
class StreamingBlob:
    """A blob on its way from the store; :attr:`open` yields bytes start..end inclusive."""

    digest: Digest
    size: int
    open: Callable[[int, int], AsyncIterator[bytes]]


Blob = LocalBlob | StreamingBlob


@contextlib.contextmanager
def _no_pin() -> Iterator[None]:
    yield


@contextlib.asynccontextmanager
async def _closing(it: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """aclosing() for an AsyncIterator that is an async generator at run time."""
    try:
        yield it
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()


def _not_downloading(start: int, end: int) -> AsyncIterator[bytes]:
    raise RuntimeError("blob(download=False) gives a size only")


# After a cache write fails, blobs stream without caching for this long before trying again.
DISK_TROUBLE_COOLDOWN_S = 60.0
# S3 eventual consistency: a linked object not visible yet is asked for again for ~3 s.
_CONSISTENCY = RetryPolicy(max_attempts=5, base_delay_s=0.25, max_delay_s=1.0, deadline_s=3.0)
T = TypeVar("T")


def _matches(digest: Digest, data: bytes) -> bool:
    return hashlib.new(digest.algorithm, data).hexdigest() == digest.hex


def _file_matches(path: str, digest: Digest) -> bool | None:
    """Whether the file hashes to ``digest``; None if it is gone (evicted meanwhile)."""
    h = hashlib.new(digest.algorithm)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except FileNotFoundError:
        return None
    return h.hexdigest() == digest.hex


def _unavailable(exc: StorageError) -> Unavailable:
    return Unavailable("the image store is unavailable", detail={"reason": str(exc)})


class Registry:
    """The pull-through service over one store, with a local cache for remote stores."""

    def __init__(
        self,
        driver: Driver,
        cache: BlobCache | None,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.driver = driver
        self.reader = RegistryReader(driver)
        self.cache = cache
        self.settings = settings
        self.metrics = metrics or Metrics()
        if isinstance(driver, S3Driver):
            driver.on_retry = self.metrics.upstream_retries.inc
        c = settings.cache
        r = settings.retry
        self._retry = RetryPolicy(r.max_attempts, r.base_delay_s, r.max_delay_s, r.deadline_s)
        # Last known answers, served only when every upstream fails (stale-if-error).
        self._stale_tags: TTLCache[tuple[str, str], Digest] = TTLCache(
            65536, c.stale_if_error_s, timer=now
        )
        self._stale_links: TTLCache[tuple[str, str, str], bool] = TTLCache(
            262144, c.stale_if_error_s, timer=now
        )
        # Cached blobs whose bytes were hashed since start (each is checked once per run).
        self._verified: LRUCache[Digest, bool] = LRUCache(1 << 20)
        self._verify_flights: SingleFlight[Digest, bool | None] = SingleFlight()
        self._tags: TTLCache[tuple[str, str], Digest] = TTLCache(65536, c.tag_ttl_s, timer=now)
        self._links: TTLCache[tuple[str, str, str], bool] = TTLCache(
            262144, c.link_ttl_s, timer=now
        )
        self._manifests: LRUCache[Digest, Manifest] = LRUCache(
            c.manifest_memory_bytes, getsizeof=lambda m: len(m.payload) + 256
        )
        self._tag_flights: SingleFlight[tuple[str, str], Digest] = SingleFlight()
        self._link_flights: SingleFlight[tuple[str, str, str], bool] = SingleFlight()
        self._manifest_flights: SingleFlight[Digest, Manifest] = SingleFlight()
        self._fetches: dict[Digest, BlobFetch] = {}
        self._disk_trouble_until = 0.0
        lim = settings.limits
        self._downloads = Limiter(lim.max_upstream_downloads, lim.max_queued_downloads)

    @classmethod
    async def open(cls, settings: Settings, metrics: Metrics | None = None) -> Registry:
        driver: Driver
        cache: BlobCache | None = None
        if settings.storage_kind == "s3":
            s3 = settings.s3
            driver = await S3Driver.open(
                S3Options(
                    bucket=settings.s3_bucket,
                    prefix=settings.s3_prefix,
                    region=s3.region,
                    endpoint_url=s3.endpoint_url,
                    path_style=s3.path_style,
                    connect_timeout_s=s3.connect_timeout_s,
                    read_timeout_s=s3.read_timeout_s,
                    max_connections=s3.max_connections,
                ),
                correct_clock=settings.clock.correct,
                warn_offset_s=settings.clock.max_offset_warn_s,
                retry=RetryPolicy(
                    settings.retry.max_attempts,
                    settings.retry.base_delay_s,
                    settings.retry.max_delay_s,
                    settings.retry.deadline_s,
                ),
            )
            c = settings.cache
            cache = BlobCache(
                settings.cache_dir,
                max_bytes=c.max_bytes,
                min_free_bytes=c.min_free_bytes,
                low_watermark=c.low_watermark,
            )
            await asyncio.to_thread(cache.open)
        else:
            driver = FilesystemDriver(settings.filesystem_root)
        return cls(driver, cache, settings, metrics=metrics)

    @property
    def clock(self) -> SkewEstimator | None:
        """The S3 clock estimate (None for a directory store: nothing is signed)."""
        return self.driver.clock if isinstance(self.driver, S3Driver) else None

    def clock_status(self) -> dict[str, object] | None:
        if not isinstance(self.driver, S3Driver):
            return None
        clock = self.driver.clock
        return {
            "offset_s": round(clock.offset, 3),
            "samples": clock.samples,
            "jumps": clock.jumps,
            "correcting": self.driver.correct_clock,
        }

    async def close(self) -> None:
        for fetch in list(self._fetches.values()):
            if fetch.task is not None:
                fetch.task.cancel()
        tasks = [f.task for f in self._fetches.values() if f.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.driver.close()

    # -- tags and links -----------------------------------------------------------------------

    async def resolve(self, name: str, tag: str) -> Digest:
        key = (name, tag)
        digest = self._tags.get(key)
        if digest is not None:
            return digest

        async def load() -> Digest:
            try:
                d = await self.reader.resolve_tag(name, tag)
            except NotFound as exc:
                raise ManifestUnknown(f"unknown tag {name}:{tag}") from exc
            except StorageError as exc:
                stale = self._stale_tags.get(key)
                if stale is None:
                    raise _unavailable(exc) from exc
                self._serve_stale("tag", f"{name}:{tag}", exc)
                # for one TTL: the next pulls in an outage need not wait out the deadline again
                self._tags[key] = stale
                return stale
            self._tags[key] = self._stale_tags[key] = d
            return d

        return await self._tag_flights.do(key, load)

    async def _linked(self, kind: str, name: str, digest: Digest) -> bool:
        key = (kind, name, str(digest))
        if self._links.get(key):
            return True

        async def load() -> bool:
            try:
                if kind == "manifest":
                    ok = await self.reader.has_manifest(name, digest)
                else:
                    ok = await self.reader.has_blob(name, digest)
            except StorageError as exc:
                if not self._stale_links.get(key):
                    raise _unavailable(exc) from exc
                self._serve_stale("link", f"{name}@{digest}", exc)
                self._links[key] = True
                return True
            if ok:
                self._links[key] = self._stale_links[key] = True
            return ok

        return await self._link_flights.do(key, load)

    def _serve_stale(self, kind: str, what: str, exc: StorageError) -> None:
        log.warning(
            "store unavailable; serving last known state",
            extra={"kind": kind, "ref": what, "error": str(exc)[:200]},
        )
        self.metrics.stale_serves.labels(kind).inc()

    async def _consistent(self, call: Callable[[], Awaitable[T]]) -> T:
        """The repository links this object but the store says it is not there: S3 may not
        show a fresh object everywhere yet, so ask again briefly before believing it."""
        try:
            return await retrying(call, _CONSISTENCY, transient=lambda e: isinstance(e, NotFound))
        except DeadlineExceeded as exc:
            raise NotFound(str(exc)) from exc

    async def tags(self, name: str) -> list[str]:
        try:
            tags = await self.reader.list_tags(name)
        except StorageError as exc:
            raise _unavailable(exc) from exc
        if tags is None:
            raise NameUnknown(detail={"name": name})
        return tags

    # -- manifests ----------------------------------------------------------------------------

    async def manifest(self, name: str, ref: Reference, accepts: frozenset[str]) -> Manifest:
        """The manifest a client with ``accepts`` gets for ``name:ref`` (Accept as distribution)."""
        if ref.digest is not None:
            digest = ref.digest
        else:
            assert ref.tag is not None
            digest = await self.resolve(name, ref.tag)
        if not await self._linked("manifest", name, digest):
            raise ManifestUnknown(f"unknown manifest {name}@{digest}")
        manifest = await self._load_manifest(digest)
        choice = mediatypes.negotiate(manifest.info, accepts, by_tag=ref.tag is not None)
        if choice.substitute is None:
            return manifest
        try:
            sub_digest = parse_digest(choice.substitute)
        except DigestInvalid as exc:
            raise ManifestUnknown("manifest list entry has an invalid digest") from exc
        if not await self._linked("manifest", name, sub_digest):
            raise ManifestUnknown(f"unknown manifest {name}@{sub_digest}")
        sub = await self._load_manifest(sub_digest)
        mediatypes.check_substitute(sub.info, accepts)
        return sub

    async def _load_manifest(self, digest: Digest) -> Manifest:
        m = self._manifests.get(digest)
        if m is not None:
            return m
        return await self._manifest_flights.do(digest, lambda: self._fetch_manifest(digest))

    async def _fetch_manifest(self, digest: Digest) -> Manifest:
        limit = mediatypes.MAX_MANIFEST_BYTES
        if self.cache is not None:
            cached = self.cache.read(digest, limit)
            if cached is not None:
                if _matches(digest, cached):
                    return self._remember(digest, cached)
                log.error(
                    "cached manifest is corrupt; fetching it again", extra={"digest": str(digest)}
                )
                self.metrics.cache_corrupt.inc()
                self.cache.remove(digest)
        key = self.reader.blob_key(digest)
        try:
            payload = await self._consistent(lambda: self.driver.get(key, max_bytes=limit))
        except NotFound as exc:
            raise ManifestUnknown(f"manifest {digest} is linked but its data is missing") from exc
        except StorageError as exc:
            raise _unavailable(exc) from exc
        if not _matches(digest, payload):
            log.error("manifest digest mismatch in the store", extra={"digest": str(digest)})
            raise Unavailable(
                "stored manifest does not match its digest", detail={"digest": str(digest)}
            )
        m = self._remember(digest, payload)
        if self.cache is not None:
            cache = self.cache
            try:
                await asyncio.to_thread(cache.write_verified, digest, payload)
                cache.record(digest, len(payload))
            except OSError as exc:
                # Serving does not depend on the cache write; the next miss tries again.
                log.warning(
                    "manifest cache write failed", extra={"digest": str(digest), "error": str(exc)}
                )
        return m

    def _remember(self, digest: Digest, payload: bytes) -> Manifest:
        try:
            info = mediatypes.detect(payload)
        except ManifestInvalid as exc:
            raise ManifestInvalid(f"stored manifest {digest} is unreadable: {exc.message}") from exc
        m = Manifest(digest, payload, info)
        self._manifests[digest] = m
        return m

    # -- blobs --------------------------------------------------------------------------------

    async def blob(self, name: str, digest: Digest, *, download: bool = True) -> Blob:
        """Where to read ``digest`` from for a client of ``name``.

        ``download=False`` (a HEAD) only learns the size of a blob that is not local: asking
        whether a blob exists must not pull gigabytes into the cache.
        """
        if not await self._linked("blob", name, digest):
            raise BlobUnknown(detail={"digest": str(digest)})
        key = self.reader.blob_key(digest)
        local = self.driver.local_path(key)
        if local is not None:
            try:
                size = os.stat(local).st_size
            except FileNotFoundError as exc:
                raise BlobUnknown(
                    "blob is linked but its data is missing", detail={"digest": str(digest)}
                ) from exc
            return LocalBlob(digest, local, size, _no_pin, "store")
        assert self.cache is not None, "remote stores always have a cache"
        cache = self.cache
        path = cache.lookup(digest)
        cached_size = cache.size_of(digest)
        if path is not None and cached_size is not None and await self._intact(digest, path):
            return LocalBlob(digest, path, cached_size, lambda: cache.pinned(digest), "cache")
        fetch = self._fetches.get(digest)
        if fetch is None:
            try:
                size = await self._consistent(lambda: self.driver.size(key))
            except NotFound as exc:
                raise BlobUnknown(
                    "blob is linked but its data is missing", detail={"digest": str(digest)}
                ) from exc
            except StorageError as exc:
                raise _unavailable(exc) from exc
            # While we asked for the size another request may have started the download, or
            # even finished it.
            path = cache.lookup(digest)
            if path is not None:
                return LocalBlob(digest, path, size, lambda: cache.pinned(digest), "cache")
            fetch = self._fetches.get(digest)
            if fetch is None:
                if not download:
                    return StreamingBlob(digest, size, _not_downloading)
                if not self._cache_usable(size):
                    self.metrics.pass_through.inc()
                    log.warning(
                        "cache disk full or failing; streaming without caching",
                        extra={"digest": str(digest), "bytes": size},
                    )
                    return StreamingBlob(
                        digest, size, partial(self._pass_through, digest, key, size)
                    )
                fetch = self._start_fetch(digest, key, size)
        return StreamingBlob(digest, fetch.size, fetch.open_reader)

    def _cache_usable(self, size: int) -> bool:
        assert self.cache is not None
        if time.monotonic() < self._disk_trouble_until:
            return False
        return self.cache.can_hold(size)

    async def _pass_through(
        self, digest: Digest, key: str, size: int, start: int, end: int
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
                async with _closing(self.driver.stream(key, pos)) as chunks:
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

    async def _intact(self, digest: Digest, path: str) -> bool:
        """Hash a cached blob the first time it is served in this run. A file that no longer
        matches its name (a flipped bit, a tampered disk) is removed so it is fetched again."""
        if self._verified.get(digest):
            return True
        assert self.cache is not None
        cache = self.cache
        with cache.pinned(digest):
            ok = await self._verify_flights.do(
                digest, lambda: asyncio.to_thread(_file_matches, path, digest)
            )
        if ok:
            self._verified[digest] = True
            return True
        if ok is False:
            log.error(
                "cached blob is corrupt; removing it and fetching again",
                extra={"digest": str(digest)},
            )
            self.metrics.cache_corrupt.inc()
            cache.remove(digest)
        return False

    def _start_fetch(self, digest: Digest, key: str, size: int) -> BlobFetch:
        assert self.cache is not None
        self._downloads.admit()  # TooManyRequests (429) when running + queued are full
        fetch = BlobFetch(
            str(digest), size, self.cache.temp_path(digest), self.cache.path_for(digest)
        )
        # Created synchronously so readers can open the file as soon as they hold the fetch.
        try:
            fd = os.open(fetch.temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError:
            self._downloads.release_admission()
            raise
        self.cache.reserve(size)
        self._fetches[digest] = fetch
        # Detached from any one request: a client that goes away does not stop the download,
        # and the first client's deadline does not bound it (a fresh context drops it).
        fetch.task = asyncio.get_running_loop().create_task(
            self._download(fetch, digest, key, fd), context=contextvars.Context()
        )
        return fetch

    async def _download(self, fetch: BlobFetch, digest: Digest, key: str, fd: int) -> None:
        assert self.cache is not None
        cache = self.cache
        released = False
        started = time.monotonic()
        try:
            try:
                async with self._downloads:  # waits for one of the bounded slots
                    started = time.monotonic()
                    await self._transfer(fetch, digest, key, fd)
                await asyncio.to_thread(os.fsync, fd)
            finally:
                os.close(fd)
            await asyncio.to_thread(cache.publish, fetch.temp_path, digest)
            cache.release(fetch.size)
            released = True
            cache.record(digest, fetch.size)
            self._verified[digest] = True
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
            self._downloads.release_admission()

    async def _transfer(self, fetch: BlobFetch, digest: Digest, key: str, fd: int) -> None:
        """Stream the blob into ``fd``, resuming with Range where a connection broke, and
        verify size and digest over the whole of it."""
        h = hashlib.new(digest.algorithm)
        resumes = 0
        while True:
            try:
                # From where we got to: the hash carries on over the whole blob.
                async with _closing(self.driver.stream(key, fetch.written)) as chunks:
                    async for chunk in chunks:
                        if fetch.written + len(chunk) > fetch.size:
                            raise IntegrityError(key, "store sent more bytes than the blob's size")
                        view = memoryview(chunk)
                        while view:
                            view = view[os.write(fd, view) :]
                        h.update(chunk)
                        fetch.advance(len(chunk))
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
        if fetch.written != fetch.size:
            raise UpstreamUnavailable(key, f"short read: {fetch.written} of {fetch.size} bytes")
        if h.hexdigest() != digest.hex:
            raise IntegrityError(key, f"content does not match {digest}")
