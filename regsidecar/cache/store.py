"""Content-addressed blob files on local disk, bounded by size and by the disk's free space.

::

    <root>/blobs/sha256/<hex>        committed, verified content (blobs and manifests alike)
    <root>/tmp/<hex>.<random>        downloads in progress; removed at start-up

A file appears under ``blobs/`` only by an atomic rename after its digest was verified and its
data fsynced, so a crash can leave temp files but never a partial blob. The index is rebuilt
from the directory at start-up: there is no separate database to corrupt.

>>> cache = BlobCache("/var/lib/regsidecar/cache", max_bytes=20 << 30, min_free_bytes=2 << 30)
>>> cache.open()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
from collections.abc import Callable, Iterator

from regsidecar.cache.lru import LruIndex
from regsidecar.oci.reference import Digest
from regsidecar.storage.base import fsync_dir

log = logging.getLogger(__name__)


def _free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class BlobCache:
    """Verified blobs by digest, with LRU eviction that never removes a file in use."""

    def __init__(
        self,
        root: str,
        *,
        max_bytes: int,
        min_free_bytes: int = 0,
        low_watermark: float = 0.9,
        free_bytes: Callable[[str], int] = _free_bytes,
    ) -> None:
        self.root = os.path.abspath(root)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.low_watermark = low_watermark
        self._free_bytes = free_bytes
        self._blobs = os.path.join(self.root, "blobs")
        self._tmp = os.path.join(self.root, "tmp")
        self.index = LruIndex()
        self.evictions = 0
        self._incoming = 0  # bytes of downloads in progress, reserved against the limits

    # -- start-up -----------------------------------------------------------------------------

    def open(self, *, tidy: bool = True) -> None:
        """Create the directories and rebuild the index from disk; with ``tidy`` (the
        sidecar's start-up) also drop leftover temp files and evict down to the limits. An
        operator tool opens with ``tidy=False``: it changes nothing it was not asked to (a
        dry run stays dry) and never touches downloads of a sidecar it failed to detect."""
        os.makedirs(self._tmp, exist_ok=True)
        os.makedirs(self._blobs, exist_ok=True)
        removed = 0
        for entry in os.scandir(self._tmp) if tidy else ():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
        found: list[tuple[float, str, int]] = []
        for alg_dir in os.scandir(self._blobs):
            if not alg_dir.is_dir():
                continue
            for entry in os.scandir(alg_dir.path):
                st = entry.stat()
                # atime may be stale (relatime, noatime); mtime is the commit time.
                found.append(
                    (max(st.st_atime, st.st_mtime), f"{alg_dir.name}:{entry.name}", st.st_size)
                )
        for _, key, size in sorted(found):
            self.index.add(key, size)
        log.info(
            "cache opened",
            extra={
                "root": self.root,
                "entries": len(self.index),
                "bytes": self.index.total,
                "temp_removed": removed,
            },
        )
        if tidy:
            self.evict()

    # -- lookups ------------------------------------------------------------------------------

    def path_for(self, digest: Digest | str) -> str:
        d = str(digest)
        alg, _, hex_ = d.partition(":")
        return os.path.join(self._blobs, alg, hex_)

    def lookup(self, digest: Digest) -> str | None:
        """Path of the cached blob, marking it recently used; None on a miss. A file the
        index knows but the disk no longer has (removed behind the sidecar's back) is
        forgotten and counts as a miss, so it is fetched again rather than answered 404."""
        key = str(digest)
        if not self.index.touch(key):
            return None
        path = self.path_for(key)
        if not os.path.exists(path):
            log.warning("cached blob vanished from disk; fetching it again", extra={"digest": key})
            self.index.remove(key)
            return None
        return path

    def size_of(self, digest: Digest) -> int | None:
        return self.index.size_of(str(digest))

    @contextlib.contextmanager
    def pinned(self, digest: Digest) -> Iterator[None]:
        """Keep ``digest`` from eviction while a response reads it."""
        key = str(digest)
        self.index.pin(key)
        try:
            yield
        finally:
            self.index.unpin(key)

    def read(self, digest: Digest, max_bytes: int) -> bytes | None:
        """Small cached content (a manifest), or None on a miss or a vanished file."""
        path = self.lookup(digest)
        if path is None:
            return None
        try:
            with open(path, "rb") as f:
                return f.read(max_bytes + 1)[: max_bytes + 1]
        except FileNotFoundError:
            self.index.remove(str(digest))
            return None

    # -- writing ------------------------------------------------------------------------------

    def free_bytes(self) -> int:
        """Free bytes on the cache's disk."""
        return self._free_bytes(self.root)

    def temp_path(self, digest: Digest) -> str:
        return os.path.join(self._tmp, f"{digest.hex}.{secrets.token_hex(6)}")

    def reserve(self, size: int) -> None:
        """Make room ahead of a download of ``size`` bytes; pair with :meth:`release`."""
        self._incoming += size
        self.evict()

    def can_hold(self, size: int) -> bool:
        """Whether a new blob of ``size`` bytes fits, counting what eviction could free and the
        downloads already under way. A blob larger than the whole cache never fits."""
        if size > self.max_bytes:
            return False
        free = self._free_bytes(self.root) + self.index.evictable() - self._incoming - size
        return free >= self.min_free_bytes

    def release(self, size: int) -> None:
        """A reserved download ended (recorded or discarded)."""
        self._incoming -= size

    def publish(self, temp: str, digest: Digest) -> str:
        """Atomically move a verified, fsynced temp file into place (file ops only: safe to run
        in a worker thread); call :meth:`record` afterwards on the event loop."""
        final = self.path_for(digest)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.replace(temp, final)
        fsync_dir(os.path.dirname(final))
        return final

    def record(self, digest: Digest, size: int) -> None:
        """Account a published blob and evict if a limit is crossed."""
        self.index.add(str(digest), size)
        self.evict()

    def write_verified(self, digest: Digest, data: bytes) -> str:
        """Verify and publish small content (manifests); file ops only, then :meth:`record`."""
        if hashlib.new(digest.algorithm, data).hexdigest() != digest.hex:
            raise ValueError(f"content does not match {digest}")
        temp = self.temp_path(digest)
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return self.publish(temp, digest)

    def discard(self, temp: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)

    # -- eviction -----------------------------------------------------------------------------

    def evict(self, *, trim: bool = False, dry_run: bool = False) -> list[tuple[str, int]]:
        """Remove least recently used, unpinned blobs until under both limits (with ``trim``:
        down to the low watermark); the ``(digest, size)`` pairs removed, or that would be."""
        victims = self.index.plan(
            max_bytes=self.max_bytes,
            free_bytes=self._free_bytes(self.root),
            min_free_bytes=self.min_free_bytes,
            incoming=self._incoming,
            low_watermark=self.low_watermark,
            trim=trim,
        )
        if dry_run:
            return [(key, self.index.size_of(key) or 0) for key in victims]
        removed = []
        freed = 0
        for key in victims:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path_for(key))
            size = self.index.remove(key)
            removed.append((key, size))
            freed += size
            self.evictions += 1
        if victims:
            log.info("cache evicted", extra={"entries": len(victims), "bytes": freed})
        return removed

    def remove(self, digest: Digest) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path_for(digest))
        self.index.remove(str(digest))

    def verify_all(self) -> tuple[int, list[str]]:
        """Re-hash every cached file; remove those that do not match their name. Returns the
        number checked and the digests removed. Run it on a stopped sidecar's cache (or accept
        that a file evicted meanwhile is simply skipped)."""
        checked, removed = 0, []
        for key in list(self.index.keys()):
            path = self.path_for(key)
            alg, _, hex_ = key.partition(":")
            h = hashlib.new(alg)
            try:
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
            except FileNotFoundError:
                self.index.remove(key)
                continue
            checked += 1
            if h.hexdigest() != hex_:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                self.index.remove(key)
                removed.append(key)
        return checked, removed
