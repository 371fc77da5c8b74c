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
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

from cachetools import LRUCache

from regsidecar.cache.singleflight import SingleFlight
from regsidecar.cache.store import BlobCache
from regsidecar.clock.skew import SkewEstimator
from regsidecar.config import Settings
from regsidecar.errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    NotFound,
    StorageError,
    TooManyRequests,
    Unavailable,
)
from regsidecar.metrics import Metrics, WindowFigures
from regsidecar.names import Names, write_atomic
from regsidecar.oci import mediatypes
from regsidecar.oci.mediatypes import ManifestInfo
from regsidecar.oci.reference import Digest, Reference, parse_digest
from regsidecar.peers.source import Peers
from regsidecar.pull.download import Download
from regsidecar.pull.downloads import Downloads
from regsidecar.pull.sources import BlobInfo, Chooser, RegistrySource, StoreSource
from regsidecar.pull.window import ConnectionWindow
from regsidecar.signing.enforce import Enforcer
from regsidecar.storage.base import Driver
from regsidecar.storage.drivers import open_driver
from regsidecar.storage.registry import RegistryReader
from regsidecar.storage.s3 import S3Driver
from regsidecar.storage.writer import RegistryWriter
from regsidecar.upstream import CircuitBreaker, Fallbacks, UpstreamConfig

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


def _not_downloading(start: int, end: int) -> AsyncIterator[bytes]:
    raise RuntimeError("blob(download=False) gives a size only")


# Where the last manifest this task asked for came from (hit, miss, store): the handler puts
# it in X-Cache and the access log, without widening manifest()'s return value.
manifest_outcome: contextvars.ContextVar[str] = contextvars.ContextVar(
    "manifest_outcome", default=""
)


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


class Registry:
    """The pull-through service over one store, with a local cache for remote stores."""

    def __init__(
        self,
        driver: Driver,
        cache: BlobCache | None,
        settings: Settings,
        *,
        metrics: Metrics | None = None,
        fallbacks: Fallbacks | None = None,
        peers: Peers | None = None,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.driver = driver
        self.peers = peers
        self.reader = RegistryReader(driver)
        self.cache = cache
        self.settings = settings
        self.metrics = metrics or Metrics()
        if isinstance(driver, S3Driver):
            driver.on_retry = self.metrics.upstream_retries.inc
            driver.on_request = partial(self.metrics.observe_upstream, "primary")
        c = settings.cache
        self.fallbacks = fallbacks or Fallbacks([], None)
        for client in self.fallbacks.clients:
            client.on_request = partial(self.metrics.observe_upstream, client.name)
        d = settings.download
        window = partial(
            ConnectionWindow,
            d.max_connections,
            initial=d.connections_per_blob,
            floor=d.connections_per_blob,
        )
        store = StoreSource(
            driver, window(), CircuitBreaker(settings.breaker.failures, settings.breaker.cooldown_s)
        )
        if isinstance(driver, S3Driver):
            driver.on_throttle = store.window.throttled
        self.chooser = Chooser(
            store, [RegistrySource(client, window()) for client in self.fallbacks.clients]
        )
        # Last known tags and links survive a restart only where stale-if-error matters: a
        # remote store (a directory store is always there).
        state = os.path.join(settings.data_dir, "state", "known-names.json") if cache else None
        self.names = Names(
            self.reader, self.chooser, settings, self.metrics, state_path=state, now=now
        )
        # The signature policy (None: every manifest is served, as before).
        self.enforcer = Enforcer.from_settings(settings, self, self.metrics)
        # Cached blobs whose bytes were hashed since start (each is checked once per run).
        self._verified: LRUCache[Digest, bool] = LRUCache(1 << 20)
        self._verify_flights: SingleFlight[Digest, bool | None] = SingleFlight()
        self._manifests: LRUCache[Digest, Manifest] = LRUCache(
            c.manifest_memory_bytes, getsizeof=lambda m: len(m.payload) + 256
        )
        self._manifest_flights: SingleFlight[Digest, tuple[Manifest, str]] = SingleFlight()
        self._size_flights: SingleFlight[Digest, BlobInfo] = SingleFlight()
        self.downloads = (
            Downloads(
                cache,
                self.chooser,
                settings,
                self.metrics,
                on_verified=self._mark_verified,
                peers=peers,
            )
            if cache is not None
            else None
        )

    @classmethod
    async def open(cls, settings: Settings, metrics: Metrics | None = None) -> Registry:
        driver = await open_driver(settings)
        cache: BlobCache | None = None
        if isinstance(driver, S3Driver):
            c = settings.cache
            cache = BlobCache(
                settings.cache_dir,
                max_bytes=c.max_bytes,
                min_free_bytes=c.min_free_bytes,
                low_watermark=c.low_watermark,
            )
            await asyncio.to_thread(cache.open)
        fallbacks = Fallbacks.from_config(
            [
                UpstreamConfig(
                    u.url, u.username, u.password.get_secret_value() if u.password else None
                )
                for u in settings.upstreams
            ],
            failures=settings.breaker.failures,
            cooldown_s=settings.breaker.cooldown_s,
            timeout_s=settings.s3.read_timeout_s,
        )
        metrics = metrics or Metrics()
        peers = None
        if settings.peers.enabled:
            from regsidecar.peers.fleet import open_peers

            peers = await open_peers(settings, metrics)
        return cls(driver, cache, settings, metrics=metrics, fallbacks=fallbacks, peers=peers)

    @property
    def clock(self) -> SkewEstimator | None:
        """The S3 clock estimate (None for a directory store: nothing is signed)."""
        return self.driver.clock if isinstance(self.driver, S3Driver) else None

    def windows(self) -> dict[str, WindowFigures]:
        """Each source's download window, for the metrics."""
        return {
            s.name: WindowFigures(
                s.window.limit, s.window.in_flight, s.window.throttles, s.window.best_per_conn
            )
            for s in self.chooser.sources
        }

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

    async def save_state(self) -> None:
        """Write the last known tags and links if they changed (off the event loop)."""
        data = self.names.snapshot()
        if data is None or self.names.state_path is None:
            return
        try:
            await asyncio.to_thread(write_atomic, self.names.state_path, data)
        except OSError as exc:
            log.warning("could not save state", extra={"error": str(exc)})

    async def close(self) -> None:
        await self.save_state()
        if self.downloads is not None:
            await self.downloads.close()
        await self.fallbacks.close()
        if self.peers is not None:
            await self.peers.close()
        await self.driver.close()

    async def tags(self, name: str) -> list[str]:
        return await self.names.tags(name)

    async def repositories(self) -> list[str]:
        return await self.names.repositories()

    # -- manifests ----------------------------------------------------------------------------

    async def manifest(self, name: str, ref: Reference, accepts: frozenset[str]) -> Manifest:
        """The manifest a client with ``accepts`` gets for ``name:ref`` (Accept as distribution)."""
        if ref.digest is not None:
            digest = ref.digest
        else:
            assert ref.tag is not None
            digest = await self.names.resolve(name, ref.tag)
        if not await self.names.linked("manifest", name, digest):
            raise ManifestUnknown(f"unknown manifest {name}@{digest}")
        manifest = await self._load_manifest(name, digest)
        if self.enforcer is not None:
            await self.enforcer.require(name, digest, tag=ref.tag, payload=manifest.payload)
        choice = mediatypes.negotiate(manifest.info, accepts, by_tag=ref.tag is not None)
        if choice.substitute is None:
            return manifest
        try:
            sub_digest = parse_digest(choice.substitute)
        except DigestInvalid as exc:
            raise ManifestUnknown("manifest list entry has an invalid digest") from exc
        if not await self.names.linked("manifest", name, sub_digest):
            raise ManifestUnknown(f"unknown manifest {name}@{sub_digest}")
        sub = await self._load_manifest(name, sub_digest)
        mediatypes.check_substitute(sub.info, accepts)
        if self.enforcer is not None:
            await self.enforcer.require(name, sub_digest, tag=ref.tag, payload=sub.payload)
        return sub

    async def require_promotable(
        self, name: str, digest: Digest, targets: Sequence[tuple[str, str]]
    ) -> None:
        """403 DENIED unless each target (repository, tag)'s policy accepts ``name@digest``,
        with the signatures found in ``name`` (a promotion moves them along)."""
        if self.enforcer is None:
            return
        try:
            payload = await self.manifest_bytes(name, digest)
        except NotFound as exc:
            raise ManifestUnknown(f"unknown manifest {name}@{digest}") from exc
        for repo, tag in targets:
            await self.enforcer.require(repo, digest, tag=tag, payload=payload, signatures_in=name)

    # -- what the signature policy reads (regsidecar.signing.enforce.SignatureStore) ----------

    async def tag_digest(self, name: str, tag: str) -> Digest | None:
        try:
            return await self.names.resolve(name, tag)
        except ManifestUnknown:
            return None

    async def manifest_bytes(self, name: str, digest: Digest) -> bytes:
        if not await self.names.linked("manifest", name, digest):
            raise NotFound(str(digest), f"not a manifest of {name}")
        return (await self._load_manifest(name, digest)).payload

    async def blob_bytes(self, digest: Digest, max_bytes: int) -> bytes:
        return await self.driver.get(self.reader.blob_key(digest), max_bytes=max_bytes)

    async def referrer_digests(self, name: str, subject: Digest) -> list[Digest]:
        list_keys = getattr(self.driver, "list_keys", None)
        if list_keys is None:
            return []
        found = await RegistryWriter(self.driver).referrers(name, subject)  # type: ignore[arg-type]
        out = []
        for d in found:
            try:
                out.append(parse_digest(str(d.get("digest", ""))))
            except DigestInvalid:
                continue
        return out

    async def _load_manifest(self, name: str, digest: Digest) -> Manifest:
        m = self._manifests.get(digest)
        if m is not None:
            manifest_outcome.set("hit" if self.cache is not None else "store")
            return m
        m, outcome = await self._manifest_flights.do(
            digest, lambda: self._fetch_manifest(name, digest)
        )
        manifest_outcome.set(outcome)
        return m

    async def _fetch_manifest(self, name: str, digest: Digest) -> tuple[Manifest, str]:
        """The manifest and where it came from: hit (disk cache), miss (upstream) or store
        (a directory store, which needs no cache)."""
        limit = mediatypes.MAX_MANIFEST_BYTES
        if self.cache is not None:
            cached = self.cache.read(digest, limit)
            if cached is not None:
                if _matches(digest, cached):
                    return self._remember(digest, cached), "hit"
                log.error(
                    "cached manifest is corrupt; fetching it again", extra={"digest": str(digest)}
                )
                self.metrics.cache_corrupt.inc()
                self.cache.remove(digest)
        try:
            payload = await self.chooser.ask(
                str(digest), lambda source: source.manifest(name, digest, limit)
            )
        except NotFound as exc:
            raise ManifestUnknown(f"manifest {digest} is linked but its data is missing") from exc
        except StorageError as exc:
            raise Unavailable.from_storage(exc) from exc
        if not _matches(digest, payload):
            log.error("manifest digest mismatch in the store", extra={"digest": str(digest)})
            raise Unavailable(
                "stored manifest does not match its digest", detail={"digest": str(digest)}
            )
        m = self._remember(digest, payload)
        if self.cache is None:
            return m, "store"
        cache = self.cache
        try:
            await asyncio.to_thread(cache.write_verified, digest, payload)
            cache.record(digest, len(payload))
        except OSError as exc:
            # Serving does not depend on the cache write; the next miss tries again.
            log.warning(
                "manifest cache write failed", extra={"digest": str(digest), "error": str(exc)}
            )
        return m, "miss"

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
        if not await self.names.linked("blob", name, digest):
            raise BlobUnknown(detail={"digest": str(digest)})
        key = self.reader.blob_key(digest)
        try:
            local = self.driver.local_path(key)
            size = os.stat(local).st_size if local is not None else 0
        except (NotFound, FileNotFoundError) as exc:
            raise BlobUnknown(
                "blob is linked but its data is missing", detail={"digest": str(digest)}
            ) from exc
        except StorageError as exc:
            raise Unavailable.from_storage(exc) from exc
        if local is not None:
            return LocalBlob(digest, local, size, _no_pin, "store")
        assert self.cache is not None and self.downloads is not None, "remote stores cache"
        downloads = self.downloads
        held = await self._held(digest)
        if isinstance(held, LocalBlob):
            return held
        running = held
        if running is None:
            try:
                # Concurrent first requests for one blob ask its size once.
                info = await self._size_flights.do(
                    digest,
                    lambda: self.chooser.ask(str(digest), lambda source: source.stat(name, digest)),
                )
            except NotFound as exc:
                raise BlobUnknown(
                    "blob is linked but its data is missing", detail={"digest": str(digest)}
                ) from exc
            except StorageError as exc:
                raise Unavailable.from_storage(exc) from exc
            arrived = self._arrived(digest, info.size)
            if isinstance(arrived, LocalBlob):
                return arrived
            running = arrived
            if running is None:
                if not download:
                    return StreamingBlob(digest, info.size, _not_downloading)
                if not downloads.usable(info.size):
                    self.metrics.pass_through.inc()
                    log.warning(
                        "cache disk full or failing; streaming without caching",
                        extra={"digest": str(digest), "bytes": info.size},
                    )
                    return StreamingBlob(
                        digest,
                        info.size,
                        partial(downloads.pass_through, digest, name, info.size),
                    )
                running = downloads.start(digest, name, info)
        return StreamingBlob(digest, running.size, running.open_reader)

    async def peer_blob(
        self, digest: Digest, *, download: bool = True
    ) -> LocalBlob | Download | StreamingBlob:
        """``digest`` for another sidecar (the peer listener): the verified cached file, or
        this host's download of it, started now if none runs (its parts from this host's
        own tree parents or the store; never the fallback registries, which need a
        repository). No repository link is checked: peers ask by digest only, as any member
        of the fleet may. ``download=False`` (HEAD) never starts one: a blob this host does
        not hold is answered with its size only (a StreamingBlob that cannot be opened)."""
        downloads = self.downloads
        if self.cache is None or downloads is None:
            raise BlobUnknown("this sidecar has no cache to share")
        held = await self._held(digest)
        if held is not None:
            return held
        try:
            info = await self._size_flights.do(
                digest, lambda: self.chooser.primary.stat("", digest)
            )
        except NotFound as exc:
            raise BlobUnknown(detail={"digest": str(digest)}) from exc
        except StorageError as exc:
            raise Unavailable.from_storage(exc) from exc
        arrived = self._arrived(digest, info.size)
        if arrived is not None:
            return arrived
        if not download:
            return StreamingBlob(digest, info.size, _not_downloading)
        if not downloads.usable(info.size):
            raise TooManyRequests("this sidecar's cache cannot take the blob now")
        return downloads.start(digest, "", info)

    async def _held(self, digest: Digest) -> LocalBlob | Download | None:
        """The verified cached file of ``digest``, else its download in progress, if any."""
        assert self.cache is not None and self.downloads is not None
        cache = self.cache
        path = cache.lookup(digest)
        size = cache.size_of(digest)
        if path is not None and size is not None and await self._intact(digest, path):
            return LocalBlob(digest, path, size, lambda: cache.pinned(digest), "cache")
        return self.downloads.get(digest)

    def _arrived(self, digest: Digest, size: int) -> LocalBlob | Download | None:
        """What :meth:`_held` would say now, after an await (the size request): another
        request may have started the download meanwhile, or even finished it."""
        assert self.cache is not None and self.downloads is not None
        cache = self.cache
        path = cache.lookup(digest)
        if path is not None:
            return LocalBlob(digest, path, size, lambda: cache.pinned(digest), "cache")
        return self.downloads.get(digest)

    async def adopt(self, digest: Digest, path: str, size: int) -> None:
        """Keep a copy of a blob this sidecar has just verified and stored (a push) in the
        cache, a hard link when the disk allows, so the first pull on this host is a hit.
        Best effort: a full or failing cache disk only costs that first pull a download."""
        cache = self.cache
        if cache is None or cache.lookup(digest) is not None or not cache.can_hold(size):
            return

        def link() -> None:
            temp = cache.temp_path(digest)
            try:
                os.link(path, temp)
            except OSError:
                shutil.copyfile(path, temp)
            try:
                fd = os.open(temp, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                cache.publish(temp, digest)
            except BaseException:
                cache.discard(temp)
                raise

        try:
            await asyncio.to_thread(link)
        except OSError as exc:
            log.warning("pushed blob not cached", extra={"digest": str(digest), "error": str(exc)})
            return
        cache.record(digest, size)
        self._mark_verified(digest)

    async def verify_cache(self) -> tuple[int, list[str]]:
        """Re-hash every cached file (off the event loop, each pinned while it is read) and
        remove the corrupt ones; the number checked and the digests removed."""
        assert self.cache is not None, "only a remote store has a cache"
        cache = self.cache
        checked, removed = 0, []
        for key in list(cache.index.keys()):
            digest = parse_digest(key)
            with cache.pinned(digest):
                ok = await asyncio.to_thread(_file_matches, cache.path_for(digest), digest)
            if ok is None:
                continue  # evicted meanwhile
            checked += 1
            if ok:
                self._verified[digest] = True
                continue
            log.error("cached blob is corrupt; removing it", extra={"digest": key})
            self.metrics.cache_corrupt.inc()
            self._verified.pop(digest, None)
            self._manifests.pop(digest, None)
            cache.remove(digest)
            removed.append(key)
        return checked, removed

    def _mark_verified(self, digest: Digest) -> None:
        self._verified[digest] = True

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
