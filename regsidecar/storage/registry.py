"""Distribution's repository-scoped access rules over any :class:`Driver`.

A blob is visible in ``<name>`` only if ``<name>/_layers`` links it; a manifest by digest only
if ``<name>/_manifests/revisions`` links it (distribution also accepts a ``_layers`` link for a
manifest, kept for old pushes; so do we). A tag is ``tags/<tag>/current/link``.

>>> reader = RegistryReader(driver)  # doctest: +SKIP
>>> digest = await reader.resolve_tag("app", "v1")  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio

from regsidecar.errors import DigestInvalid, NotFound, StorageError
from regsidecar.oci.reference import Digest, parse_digest
from regsidecar.storage import layout
from regsidecar.storage.base import Driver

LINK_MAX_BYTES = 1024


class RegistryReader:
    """Reads a registry:2 tree the way distribution's pull handlers do."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def _read_link(self, key: str) -> Digest:
        data = await self.driver.get(key, max_bytes=LINK_MAX_BYTES)
        try:
            return parse_digest(data.decode("ascii").strip())
        except (UnicodeDecodeError, DigestInvalid) as exc:
            raise StorageError(key, "link file does not hold a digest") from exc

    async def resolve_tag(self, name: str, tag: str) -> Digest:
        """The digest a tag points at. Raises NotFound for an unknown tag or repository."""
        return await self._read_link(layout.tag_current_link(name, tag))

    async def _links(self, key: str, digest: Digest) -> bool:
        try:
            return await self._read_link(key) == digest
        except NotFound:
            return False

    async def has_manifest(self, name: str, digest: Digest) -> bool:
        if await self._links(layout.revision_link(name, digest), digest):
            return True
        return await self._links(layout.layer_link(name, digest), digest)

    async def has_blob(self, name: str, digest: Digest) -> bool:
        return await self._links(layout.layer_link(name, digest), digest)

    async def list_tags(self, name: str) -> list[str] | None:
        """Sorted tags of ``name``, or None when the repository does not exist."""
        tags = await self.driver.list_children(layout.tags_dir(name))
        if tags:
            return tags
        # A repository whose tags were all deleted still exists if it has revisions.
        revisions = await self.driver.list_children(f"{layout.repository(name)}/_manifests")
        return [] if revisions else None

    @staticmethod
    def blob_key(digest: Digest) -> str:
        return layout.blob_data(digest)

    async def repositories(self, *, most: int = 100_000, concurrency: int = 8) -> list[str]:
        """Every repository name, sorted, found as distribution's catalog finds them: a
        directory holding ``_layers`` or ``_manifests``; ``_``-directories are not descended
        into, and a repository may hold others (``team`` and ``team/app``). One listing per
        directory, a level at a time, at most ``concurrency`` at once; a store with more
        than ``most`` directories to list is a StorageError (bounded time and memory)."""
        found: list[str] = []
        level = [""]
        gate = asyncio.Semaphore(concurrency)
        listed = 0

        async def children(path: str) -> list[str]:
            async with gate:
                return await self.driver.list_children(_join(layout.repositories_dir(), path))

        while level:
            listed += len(level)
            if listed > most:
                raise StorageError(
                    layout.repositories_dir(), f"more than {most} directories to list"
                )
            listings = await asyncio.gather(*(children(p) for p in level))
            nxt = []
            for parent, names in zip(level, listings, strict=True):
                if parent and ("_layers" in names or "_manifests" in names):
                    found.append(parent)
                nxt += [_join(parent, c) for c in names if not c.startswith("_")]
            level = nxt
        return sorted(found)


def _join(parent: str, child: str) -> str:
    return f"{parent}/{child}" if parent else child
