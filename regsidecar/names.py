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

import json
import logging
import os
import time
from collections.abc import Callable

from cachetools import LRUCache, TTLCache

from regsidecar.cache.singleflight import SingleFlight
from regsidecar.config import Settings
from regsidecar.errors import (
    DigestInvalid,
    ManifestUnknown,
    NameUnknown,
    NotFound,
    StorageError,
    Unavailable,
)
from regsidecar.metrics import Metrics
from regsidecar.oci.reference import Digest, parse_digest
from regsidecar.pull.sources import Chooser
from regsidecar.storage.registry import RegistryReader

log = logging.getLogger(__name__)


class Names:
    """Tag resolution and repository link checks, cached, with stale-if-error."""

    def __init__(
        self,
        reader: RegistryReader,
        chooser: Chooser,
        settings: Settings,
        metrics: Metrics,
        *,
        state_path: str | None = None,
        now: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.chooser = chooser
        self.metrics = metrics
        self.state_path = state_path
        self._wall = wall
        c = settings.cache
        self._stale_s = c.stale_if_error_s
        self._tags: TTLCache[tuple[str, str], Digest] = TTLCache(65536, c.tag_ttl_s, timer=now)
        self._links: TTLCache[tuple[str, str, str], bool] = TTLCache(
            262144, c.link_ttl_s, timer=now
        )
        # Last known answers with the wall time the store last confirmed them; kept on disk
        # too, so a sidecar restarted during an outage still knows them.
        self._known_tags: LRUCache[tuple[str, str], tuple[str, float]] = LRUCache(65536)
        self._known_links: LRUCache[tuple[str, str, str], float] = LRUCache(262144)
        # Each repository's last tag list (bounded in count: a list is as long as a repo has
        # tags), for tags/list in an outage.
        self._known_lists: LRUCache[str, tuple[list[str], float]] = LRUCache(4096)
        self._dirty = False
        self._load()
        self._limits = settings.limits
        self._catalog_ttl_s = c.catalog_ttl_s
        self._now = now
        # The last catalog: (names, monotonic time listed, wall time listed).
        self._catalog: tuple[list[str], float, float] | None = None
        self._catalog_flights: SingleFlight[str, list[str]] = SingleFlight()
        self._tag_flights: SingleFlight[tuple[str, str], Digest] = SingleFlight()
        self._link_flights: SingleFlight[tuple[str, str, str], bool] = SingleFlight()

    async def resolve(self, name: str, tag: str) -> Digest:
        key = (name, tag)
        digest = self._tags.get(key)
        if digest is not None:
            return digest

        async def load() -> Digest:
            try:
                d = await self.chooser.ask(
                    f"{name}:{tag}", lambda source: source.resolve(name, tag)
                )
            except NotFound as exc:
                raise ManifestUnknown(f"unknown tag {name}:{tag}") from exc
            except StorageError as exc:
                stale = self._known_tag(key)
                if stale is None:
                    raise Unavailable.from_storage(exc) from exc
                self._serve_stale("tag", f"{name}:{tag}", exc)
                # for one TTL: the next pulls in an outage need not wait out the deadline again
                self._tags[key] = stale
                return stale
            self._tags[key] = d
            self._known_tags[key] = (str(d), self._wall())
            self._dirty = True
            return d

        return await self._tag_flights.do(key, load)

    async def linked(self, kind: str, name: str, digest: Digest) -> bool:
        key = (kind, name, str(digest))
        if self._links.get(key):
            return True

        async def load() -> bool:
            try:
                if kind == "manifest":
                    ok = await self.chooser.ask(
                        f"{name}@{digest}", lambda source: source.has_manifest(name, digest)
                    )
                else:
                    ok = await self.chooser.ask(
                        f"{name}@{digest}", lambda source: source.has_blob(name, digest)
                    )
            except StorageError as exc:
                if not self._fresh(self._known_links.get(key)):
                    raise Unavailable.from_storage(exc) from exc
                self._serve_stale("link", f"{name}@{digest}", exc)
                self._links[key] = True
                return True
            if ok:
                self._links[key] = True
                self._known_links[key] = self._wall()
                self._dirty = True
            return ok

        return await self._link_flights.do(key, load)

    # -- writes through this sidecar ------------------------------------------------------------
    # A push answers "201 Created" only after the store holds it; the next pull through this
    # sidecar must see it at once, not after a TTL.

    def note_tag(self, name: str, tag: str, digest: Digest) -> None:
        self._tags[(name, tag)] = digest
        self._known_tags[(name, tag)] = (str(digest), self._wall())
        self._dirty = True

    def forget_tag(self, name: str, tag: str) -> None:
        self._tags.pop((name, tag), None)
        self._known_tags.pop((name, tag), None)
        self._dirty = True

    def note_link(self, kind: str, name: str, digest: Digest) -> None:
        key = (kind, name, str(digest))
        self._links[key] = True
        self._known_links[key] = self._wall()
        self._dirty = True
        known = self._catalog
        if known is not None and name not in known[0]:
            # A repository created here is in this sidecar's next catalog at once.
            self._catalog = (sorted([*known[0], name]), known[1], known[2])

    def forget_link(self, kind: str, name: str, digest: Digest) -> None:
        key = (kind, name, str(digest))
        self._links.pop(key, None)
        self._known_links.pop(key, None)
        self._dirty = True

    def _fresh(self, at: float | None) -> bool:
        return at is not None and self._wall() - at <= self._stale_s

    def _known_tag(self, key: tuple[str, str]) -> Digest | None:
        entry = self._known_tags.get(key)
        if entry is None or not self._fresh(entry[1]):
            return None
        return parse_digest(entry[0])

    # -- on disk ------------------------------------------------------------------------------

    def snapshot(self) -> bytes | None:
        """The last known answers as JSON, or None when nothing changed since the last one."""
        if not self._dirty or self.state_path is None:
            return None
        self._dirty = False
        doc = {
            "tags": [[n, t, d, at] for (n, t), (d, at) in self._known_tags.items()],
            "links": [[k, n, d, at] for (k, n, d), at in self._known_links.items()],
            "lists": [[n, tags, at] for n, (tags, at) in self._known_lists.items()],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    def _load(self) -> None:
        if self.state_path is None:
            return
        try:
            with open(self.state_path, "rb") as f:
                doc = json.load(f)
            for n, t, d, at in doc.get("tags", []):
                if self._fresh(at):
                    parse_digest(d)
                    self._known_tags[(n, t)] = (d, at)
            for k, n, d, at in doc.get("links", []):
                if self._fresh(at):
                    self._known_links[(k, n, d)] = at
            for n, tags, at in doc.get("lists", []):
                if self._fresh(at) and all(isinstance(t, str) for t in tags):
                    self._known_lists[n] = (list(tags), at)
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, DigestInvalid) as exc:
            # A damaged state file only costs the stale-if-error memory, never start-up.
            log.warning(
                "ignoring unreadable state file",
                extra={"path": self.state_path, "error": str(exc)[:200]},
            )

    def _serve_stale(self, kind: str, what: str, exc: StorageError) -> None:
        log.warning(
            "store unavailable; serving last known state",
            extra={"kind": kind, "ref": what, "error": str(exc)[:200]},
        )
        self.metrics.stale_serves.labels(kind).inc()

    async def repositories(self) -> list[str]:
        """Every repository of the store (``/v2/_catalog``): one walk of the store per
        ``cache.catalog_ttl_s`` whatever the number of requests (concurrent ones share it),
        bounded by ``limits.catalog_*``; in an outage the last listing (within
        ``cache.stale_if_error_s``)."""
        known = self._catalog
        if known is not None and self._now() - known[1] < self._catalog_ttl_s:
            return known[0]

        async def load() -> list[str]:
            lim = self._limits
            try:
                names = await self.reader.repositories(
                    most=lim.catalog_max_directories, concurrency=lim.catalog_concurrency
                )
            except StorageError as exc:
                last = self._catalog
                if last is None or not self._fresh(last[2]):
                    raise Unavailable.from_storage(exc) from exc
                self._serve_stale("catalog", "_catalog", exc)
                return last[0]
            self._catalog = (names, self._now(), self._wall())
            return names

        return await self._catalog_flights.do("catalog", load)

    async def tags(self, name: str) -> list[str]:
        """The repository's tags from the store; in an outage, the last list it gave (within
        ``cache.stale_if_error_s``), as tags themselves are served."""
        try:
            tags = await self.reader.list_tags(name)
        except StorageError as exc:
            known = self._known_lists.get(name)
            if known is None or not self._fresh(known[1]):
                raise Unavailable.from_storage(exc) from exc
            self._serve_stale("tags", name, exc)
            return list(known[0])
        if tags is None:
            self._known_lists.pop(name, None)
            raise NameUnknown(detail={"name": name})
        self._known_lists[name] = (list(tags), self._wall())
        self._dirty = True
        return tags


def write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never half."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
