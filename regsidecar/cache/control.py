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

import json
import os
import urllib.error
import urllib.request
from typing import Any, Protocol

from regsidecar.cache.store import BlobCache
from regsidecar.config import Settings
from regsidecar.datadir import held, read_control_token

Report = dict[str, Any]

# The sidecar is on this host: never route these calls through an HTTP(S)_PROXY.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


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
        self._cache.open(tidy=False)

    def stats(self) -> Report:
        return cache_report(self._cache)

    def gc(self, *, dry_run: bool = False) -> Report:
        return gc_report(self._cache, dry_run=dry_run)

    def verify(self) -> Report:
        checked, removed = self._cache.verify_all()
        return {"checked": checked, "removed": removed}


class SidecarCache:
    """The cache of the sidecar answering at ``base_url`` (its operator listener)."""

    where = "sidecar"

    def __init__(
        self, base_url: str, *, token: str | None = None, timeout_s: float = 600.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _call(self, method: str, path: str) -> Report:
        req = urllib.request.Request(self.base_url + path, method=method, headers=self.headers)
        try:
            with _OPENER.open(req, timeout=self._timeout_s) as resp:
                report: Report = json.load(resp)
        except urllib.error.HTTPError as exc:
            raise CacheControlError(_oci_message(exc)) from exc
        except (urllib.error.URLError, OSError) as exc:
            raise CacheControlError(f"sidecar at {self.base_url}: {exc}") from exc
        return report

    def stats(self) -> Report:
        return self._call("GET", "/-/cache/stats")

    def gc(self, *, dry_run: bool = False) -> Report:
        return self._call("POST", "/-/cache/gc" + ("?dry_run=1" if dry_run else ""))

    def verify(self) -> Report:
        return self._call("POST", "/-/cache/verify")


class CacheControlError(Exception):
    """The running sidecar refused or failed a cache action (message is for the operator)."""


class NoCache(CacheControlError):
    """The store is a directory: blobs are read in place, there is no cache to act on."""


def _oci_message(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read())
        return f"HTTP {exc.code}: {body['errors'][0]['message']}"
    except (ValueError, KeyError, IndexError, TypeError):
        return f"HTTP {exc.code}"


def ops_url(settings: Settings) -> str:
    """Base URL of the sidecar's operator endpoints (a wildcard address is asked on loopback)."""
    host, port = settings.ops_address
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def open_control(settings: Settings, *, probe_timeout_s: float = 2.0) -> CacheControl:
    """The running sidecar's cache if one answers at the configured address, else the
    directory. A sidecar that serves a directory store (no cache) also means the directory.
    The directory only when no sidecar holds it (its lock): a sidecar that did not answer
    (busy, or its ops endpoints on another ops_listen) still trusts its index, and files
    removed under it would be answered as cached. CacheControlError then."""
    sidecar = SidecarCache(ops_url(settings), token=read_control_token(settings.data_dir))
    probe = urllib.request.Request(sidecar.base_url + "/-/cache/stats", headers=sidecar.headers)
    try:
        with _OPENER.open(probe, timeout=probe_timeout_s) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            if "directory store" in _oci_message(exc):
                raise NoCache(_no_cache(f"the sidecar at {sidecar.base_url}")) from exc
            return _local(settings, sidecar.base_url)
        return sidecar  # it is running: its answer (e.g. 403) is the operator's to see
    except (urllib.error.URLError, OSError):
        return _local(settings, sidecar.base_url)
    return sidecar


def _no_cache(who: str) -> str:
    return (
        f"{who} serves a directory store: it reads blobs in place and keeps no cache, so "
        "there is nothing to show, verify or trim"
    )


def _local(settings: Settings, tried: str) -> CacheControl:
    if held(settings.data_dir):
        raise CacheControlError(
            f"a running sidecar holds {settings.data_dir} but did not answer at {tried}; "
            "its files are left alone (give --listen / ops_listen where it serves "
            "/-/cache, or stop it first)"
        )
    return LocalCache(settings)
