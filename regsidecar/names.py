"""Where names point: tag -> digest, and "does this repository link that digest?".

Both are read from the store through short TTL caches (tags: ``cache.tag_ttl_s``, positive
link answers: ``cache.link_ttl_s``), with concurrent lookups coalesced. Every answer is also
kept for ``cache.stale_if_error_s``: when the store fails (after retries), the last known answer
is served, with a warning and ``regsidecar_stale_serves{kind}``, and put back in the TTL cache so
the next pulls of an outage do not wait out the deadline again (stale-if-error).

>>> names = Names(reader, settings, metrics)  # doctest: +SKIP
>>> digest = await names.resolve("app", "v1")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from cachetools import TTLCache

from regsidecar.cache.singleflight import SingleFlight
from regsidecar.config import Settings
from regsidecar.errors import ManifestUnknown, NameUnknown, NotFound, StorageError, Unavailable
from regsidecar.metrics import Metrics
from regsidecar.oci.reference import Digest
from regsidecar.storage.registry import RegistryReader
from regsidecar.upstream import Sources

log = logging.getLogger(__name__)


class Names:
    """Tag resolution and repository link checks, cached, with stale-if-error."""

    def __init__(
        self,
        reader: RegistryReader,
        sources: Sources,
        settings: Settings,
        metrics: Metrics,
        *,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader
        self.sources = sources
        self.metrics = metrics
        c = settings.cache
        self._tags: TTLCache[tuple[str, str], Digest] = TTLCache(65536, c.tag_ttl_s, timer=now)
        self._links: TTLCache[tuple[str, str, str], bool] = TTLCache(
            262144, c.link_ttl_s, timer=now
        )
        self._stale_tags: TTLCache[tuple[str, str], Digest] = TTLCache(
            65536, c.stale_if_error_s, timer=now
        )
        self._stale_links: TTLCache[tuple[str, str, str], bool] = TTLCache(
            262144, c.stale_if_error_s, timer=now
        )
        self._tag_flights: SingleFlight[tuple[str, str], Digest] = SingleFlight()
        self._link_flights: SingleFlight[tuple[str, str, str], bool] = SingleFlight()

    async def resolve(self, name: str, tag: str) -> Digest:
        key = (name, tag)
        digest = self._tags.get(key)
        if digest is not None:
            return digest

        async def load() -> Digest:
            try:
                d = await self.sources.ask(
                    f"{name}:{tag}",
                    lambda: self.reader.resolve_tag(name, tag),
                    lambda upstream: upstream.resolve(name, tag),
                )
            except NotFound as exc:
                raise ManifestUnknown(f"unknown tag {name}:{tag}") from exc
            except StorageError as exc:
                stale = self._stale_tags.get(key)
                if stale is None:
                    raise Unavailable.from_storage(exc) from exc
                self._serve_stale("tag", f"{name}:{tag}", exc)
                # for one TTL: the next pulls in an outage need not wait out the deadline again
                self._tags[key] = stale
                return stale
            self._tags[key] = self._stale_tags[key] = d
            return d

        return await self._tag_flights.do(key, load)

    async def linked(self, kind: str, name: str, digest: Digest) -> bool:
        key = (kind, name, str(digest))
        if self._links.get(key):
            return True

        async def load() -> bool:
            try:
                if kind == "manifest":
                    ok = await self.sources.ask(
                        f"{name}@{digest}",
                        lambda: self.reader.has_manifest(name, digest),
                        lambda upstream: upstream.has_manifest(name, digest),
                    )
                else:
                    ok = await self.sources.ask(
                        f"{name}@{digest}",
                        lambda: self.reader.has_blob(name, digest),
                        lambda upstream: upstream.has_blob(name, digest),
                    )
            except StorageError as exc:
                if not self._stale_links.get(key):
                    raise Unavailable.from_storage(exc) from exc
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

    async def tags(self, name: str) -> list[str]:
        try:
            tags = await self.reader.list_tags(name)
        except StorageError as exc:
            raise Unavailable.from_storage(exc) from exc
        if tags is None:
            raise NameUnknown(detail={"name": name})
        return tags
