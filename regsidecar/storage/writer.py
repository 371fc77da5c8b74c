"""Write a registry:2 tree the way distribution's push handlers do, over any writable driver.

>>> w = RegistryWriter(driver)  # doctest: +SKIP
>>> await w.put_blob_file(digest, "/var/lib/regsidecar/uploads/<id>/data")  # doctest: +SKIP
>>> await w.link_blob("team/app", digest)  # doctest: +SKIP

Order matters for readers that share the store (other sidecars, a stock registry:2): data is
written before any link names it, and a tag's history (``index``) before its ``current`` link,
so a reader never follows a link to nothing. Deletes remove links only, as distribution does;
blob data stays for ``registry garbage-collect``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from regsidecar.errors import NotFound, StorageError
from regsidecar.oci.reference import Digest, parse_digest
from regsidecar.storage import layout
from regsidecar.storage.base import WritableDriver
from regsidecar.storage.registry import RegistryReader

log = logging.getLogger(__name__)

REFERRER_MAX_BYTES = 64 * 1024


def referrer_entry(descriptor: dict[str, Any]) -> bytes:
    """The stored form of a referrer's descriptor; ValueError when it would not fit
    REFERRER_MAX_BYTES (its annotations are what can make it large)."""
    data = json.dumps(descriptor, sort_keys=True, separators=(",", ":")).encode()
    if len(data) > REFERRER_MAX_BYTES:
        raise ValueError(
            f"the referrer descriptor is {len(data)} bytes; annotations of a manifest with a "
            f"subject must fit the referrers index ({REFERRER_MAX_BYTES // 1024} KiB)"
        )
    return data


def _link(digest: Digest) -> bytes:
    return str(digest).encode("ascii")


class RegistryWriter:
    """Blob data, repository links, tags and the referrers index of a registry:2 tree."""

    def __init__(self, driver: WritableDriver) -> None:
        self.driver = driver
        self.reader = RegistryReader(driver)

    async def has_data(self, digest: Digest, size: int | None = None) -> bool:
        try:
            stored = await self.driver.size(layout.blob_data(digest))
        except NotFound:
            return False
        return size is None or stored == size

    async def put_blob_file(self, digest: Digest, path: str, size: int) -> None:
        """Store verified bytes under their digest, unless the same blob is there already."""
        if not await self.has_data(digest, size):
            await self.driver.write_file(layout.blob_data(digest), path)

    async def put_blob_bytes(self, digest: Digest, data: bytes) -> None:
        if not await self.has_data(digest, len(data)):
            await self.driver.write(layout.blob_data(digest), data)

    async def link_blob(self, name: str, digest: Digest) -> None:
        await self.driver.write(layout.layer_link(name, digest), _link(digest))

    async def put_manifest(self, name: str, digest: Digest, payload: bytes) -> None:
        """The manifest's bytes and its revision link (distribution stores manifests as blobs)."""
        await self.put_blob_bytes(digest, payload)
        await self.driver.write(layout.revision_link(name, digest), _link(digest))

    async def tag(self, name: str, tag: str, digest: Digest, *, new: bool = False) -> None:
        """Point ``name:tag`` at ``digest``; with ``new``, only if the tag has no current
        link (AlreadyExists otherwise: another writer created it first)."""
        await self.driver.write(layout.tag_index_link(name, tag, digest), _link(digest))
        current = layout.tag_current_link(name, tag)
        if new:
            await self.driver.write_new(current, _link(digest))
        else:
            await self.driver.write(current, _link(digest))

    async def current(self, name: str, tag: str) -> Digest | None:
        try:
            return await self.reader.resolve_tag(name, tag)
        except NotFound:
            return None

    async def untag(self, name: str, tag: str) -> None:
        await self.driver.delete_tree(layout.tag_dir(name, tag))

    async def tags_pointing_at(self, name: str, digest: Digest) -> list[str]:
        tags = await self.driver.list_children(layout.tags_dir(name))
        currents = await asyncio.gather(*(self.current(name, t) for t in tags))
        return [t for t, d in zip(tags, currents, strict=True) if d == digest]

    async def unlink_manifest(self, name: str, digest: Digest) -> None:
        # distribution accepts a _layers link for a manifest too (old pushes): drop both.
        await self.driver.delete(layout.revision_link(name, digest))
        await self.driver.delete(layout.layer_link(name, digest))

    async def unlink_blob(self, name: str, digest: Digest) -> None:
        await self.driver.delete(layout.layer_link(name, digest))

    # -- referrers ---------------------------------------------------------------------------

    async def add_referrer(self, name: str, subject: Digest, descriptor: dict[str, Any]) -> None:
        """Record ``descriptor`` in ``subject``'s referrers index. It must fit what
        :meth:`referrers` reads back (:func:`referrer_entry` checks it before a push writes
        anything)."""
        digest = parse_digest(descriptor["digest"])
        await self.driver.write(
            layout.referrer_entry(name, subject, digest), referrer_entry(descriptor)
        )

    async def remove_referrer(self, name: str, subject: Digest, digest: Digest) -> None:
        await self.driver.delete(layout.referrer_entry(name, subject, digest))

    async def referrers(self, name: str, subject: Digest) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose subject is ``subject``: one listing plus one
        small read per referrer, all at once."""
        prefix = layout.referrers_dir(name, subject)
        keys = [k for k in await self.driver.list_keys(prefix) if k.endswith("/descriptor.json")]

        async def read(key: str) -> dict[str, Any] | None:
            try:
                data = await self.driver.get(f"{prefix}/{key}", max_bytes=REFERRER_MAX_BYTES)
            except NotFound:
                return None  # deleted between the listing and the read
            except StorageError as exc:
                if "larger than" not in str(exc):
                    raise
                # Written before entries were bounded: one bad entry must not hide the rest.
                log.warning("oversized referrer entry skipped", extra={"key": f"{prefix}/{key}"})
                return None
            try:
                doc = json.loads(data)
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None

        found = await asyncio.gather(*(read(k) for k in keys))
        return [d for d in found if d is not None]

    # -- audit -------------------------------------------------------------------------------

    async def audit(self, name: str, stamp: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, sort_keys=True).encode() + b"\n"
        await self.driver.write(layout.audit_record(name, stamp), data)
