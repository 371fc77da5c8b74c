"""Push, delete and promotion: the write side, over the same registry:2 tree pulls read.

>>> pusher = Pusher(driver, settings, names=registry.names)  # doctest: +SKIP
>>> digest, pushed, tags = await pusher.put_manifest("app", ref, body, ctype)  # doctest: +SKIP
>>> await pusher.promote("app", digest, [("app", "production")], by="ci")  # doctest: +SKIP

Every write goes through :class:`~regsidecar.storage.writer.RegistryWriter`, which lays the
objects out exactly as distribution does, so a stock registry:2 on the same bucket serves
what was pushed here, and promotes what it pushed. Authorization happens before any method
here is called (:mod:`regsidecar.api.auth`); tag-protection rules are enforced here, because
they also bind ``regsidecar promote`` run without a sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fnmatch
import hashlib
import json
import logging
import secrets
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from regsidecar.config import Settings, TagRule
from regsidecar.errors import (
    AlreadyExists,
    BlobUnknown,
    Denied,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NotFound,
    OCIError,
    StorageError,
    Unavailable,
    Unsupported,
)
from regsidecar.names import Names
from regsidecar.oci import mediatypes
from regsidecar.oci.manifest import PushedManifest, parse_pushed
from regsidecar.oci.reference import (
    Digest,
    Reference,
    parse_digest,
    parse_name,
    parse_reference,
    parse_tag,
)
from regsidecar.storage import layout
from regsidecar.storage.base import WritableDriver
from regsidecar.storage.writer import RegistryWriter, referrer_entry

log = logging.getLogger(__name__)
audit_log = logging.getLogger("regsidecar.audit")

# Existence checks of one manifest's references in flight at once.
CHECKS_IN_FLIGHT = 16

Rule = Literal["immutable", "promote-only"]
T = TypeVar("T")


class PromotionInvalid(OCIError):
    """A promotion request that does not name an image and tags."""

    code = "UNSUPPORTED"
    status = 400


def tag_rule(rules: Sequence[TagRule], name: str, tag: str) -> Rule | None:
    """The first protection rule matching ``name:tag`` (globs, case-sensitive), if any."""
    for r in rules:
        if fnmatch.fnmatchcase(tag, r.tags) and fnmatch.fnmatchcase(name, r.repositories):
            return r.rule
    return None


def check_tag_move(
    rule: Rule | None, tag: str, current: Digest | None, new: Digest | None, *, promotion: bool
) -> None:
    """Refuse (DENIED) a tag move the rule forbids. ``new`` None is a delete; writing the
    digest a tag already holds is always allowed (retries, re-pushes)."""
    if rule is None or (current is not None and current == new):
        return
    if rule == "immutable" and current is not None:
        raise Denied(f"tag {tag} is immutable: it already points at {current}")
    if rule == "promote-only" and not promotion:
        raise Denied(f"tag {tag} moves only by promotion (regsidecar promote)")


def manifest_digest(payload: bytes, reference: Reference) -> Digest:
    """The payload's digest, in the reference's algorithm when pushed by digest."""
    algorithm = reference.digest.algorithm if reference.digest is not None else "sha256"
    digest = Digest(algorithm, hashlib.new(algorithm, payload).hexdigest())
    if reference.digest is not None and reference.digest != digest:
        raise DigestInvalid(
            "manifest digest did not match the reference",
            detail={"reference": str(reference.digest), "actual": str(digest)},
        )
    return digest


def audit_stamp(when: datetime.datetime) -> str:
    """A key part that sorts by time and never collides."""
    return when.strftime("%Y%m%dT%H%M%S.%fZ") + "-" + secrets.token_hex(4)


def parse_promotion(source: Any, tags: Any) -> tuple[tuple[str, Digest], list[tuple[str, str]]]:
    """``repo@digest`` and targets ``tag`` or ``repo:tag`` (same repository if none)."""
    if not isinstance(source, str) or "@" not in source:
        raise PromotionInvalid("source must be REPOSITORY@DIGEST")
    repo, _, digest_text = source.partition("@")
    name = parse_name(repo)
    digest = parse_digest(digest_text)
    if not isinstance(tags, list) or not tags or not all(isinstance(t, str) for t in tags):
        raise PromotionInvalid("tags must be a non-empty list of TAG or REPOSITORY:TAG")
    targets = []
    for t in tags:
        target_repo, sep, tag = t.rpartition(":")
        ref = parse_reference(tag)
        if ref.tag is None:
            raise PromotionInvalid("a promotion target is a tag, not a digest")
        targets.append((parse_name(target_repo) if sep else name, ref.tag))
    return (name, digest), targets


@dataclass(frozen=True, slots=True)
class TagMove:
    repository: str
    tag: str
    old: Digest | None
    new: Digest

    def as_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "tag": self.tag,
            "old": str(self.old) if self.old else None,
            "new": str(self.new),
        }


class Pusher:
    """Writes of one sidecar (or of one ``regsidecar promote`` run)."""

    def __init__(
        self,
        driver: WritableDriver,
        settings: Settings,
        *,
        names: Names | None = None,
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.writer = RegistryWriter(driver)
        self.reader = self.writer.reader
        self.settings = settings
        self.rules = settings.push.protect
        self.names = names
        self._now = now
        self._locks: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    @contextlib.asynccontextmanager
    async def _holding(self, pairs: Iterable[tuple[str, str]]) -> AsyncIterator[None]:
        """Hold the (repository, tag) locks of ``pairs`` (in sorted order: no deadlock), so a
        rule check and the write it allows are one step for concurrent requests here. Other
        writers of the store (another sidecar, registry:2) are not serialized with these."""
        held = []
        for key in sorted(set(pairs)):
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = asyncio.Lock()
            held.append(lock)
        async with contextlib.AsyncExitStack() as stack:
            for lock in held:
                await stack.enter_async_context(lock)
            yield

    async def _store(self, call: Awaitable[T]) -> T:
        """Storage trouble while writing is the store's unavailability, not the client's."""
        try:
            return await call
        except StorageError as exc:
            raise Unavailable.from_storage(exc) from exc

    # -- blobs --------------------------------------------------------------------------------

    async def commit_blob(self, name: str, digest: Digest, path: str, size: int) -> None:
        """Store a verified staged file and link it into ``name``."""
        await self._store(self.writer.put_blob_file(digest, path, size))
        await self._store(self.writer.link_blob(name, digest))
        if self.names is not None:
            self.names.note_link("blob", name, digest)

    async def mount(self, name: str, digest: Digest, source: str | None) -> bool:
        """Link a blob ``source`` already holds (None: the store holds, for a caller who may
        pull everything) into ``name``; False when there is nothing to mount."""
        if source is not None:
            ok = await self._store(self.reader.has_blob(source, digest))
        else:
            ok = await self._store(self.writer.has_data(digest))
        if not ok:
            return False
        await self._store(self.writer.link_blob(name, digest))
        if self.names is not None:
            self.names.note_link("blob", name, digest)
        return True

    async def delete_blob(self, name: str, digest: Digest) -> None:
        self._deletes_enabled()
        if not await self._store(self.reader.has_blob(name, digest)):
            raise BlobUnknown(detail={"digest": str(digest)})
        await self._store(self.writer.unlink_blob(name, digest))
        if self.names is not None:
            self.names.forget_link("blob", name, digest)

    # -- manifests ----------------------------------------------------------------------------

    async def put_manifest(
        self,
        name: str,
        reference: Reference,
        payload: bytes,
        content_type: str | None,
        extra_tags: Iterable[str] = (),
    ) -> tuple[Digest, PushedManifest, list[str]]:
        """Validate and store a manifest, tag it; returns its digest, what it held and the
        tags written."""
        digest = manifest_digest(payload, reference)
        pushed = parse_pushed(payload, content_type)
        tags = list(dict.fromkeys([*([reference.tag] if reference.tag else []), *extra_tags]))
        for tag in tags:
            parse_tag(tag)
        await self._check_references(name, pushed)
        async with self._holding((name, t) for t in tags):
            await self._put_checked(name, digest, payload, pushed, tags)
        return digest, pushed, tags

    async def _put_checked(
        self, name: str, digest: Digest, payload: bytes, pushed: PushedManifest, tags: list[str]
    ) -> None:
        currents = await asyncio.gather(*(self._current(name, t) for t in tags))
        for tag, current in zip(tags, currents, strict=True):
            rule = tag_rule(self.rules, name, tag)
            check_tag_move(rule, tag, current, digest, promotion=False)
        descriptor: dict[str, Any] | None = None
        if pushed.subject is not None:
            descriptor = {
                "mediaType": pushed.media_type,
                "digest": str(digest),
                "size": len(payload),
            }
            if pushed.artifact_type:
                descriptor["artifactType"] = pushed.artifact_type
            if pushed.annotations:
                descriptor["annotations"] = pushed.annotations
            try:
                referrer_entry(descriptor)  # refused before anything is written
            except ValueError as exc:
                raise ManifestInvalid(str(exc)) from exc
        await self._store(self.writer.put_manifest(name, digest, payload))
        if pushed.subject is not None and descriptor is not None:
            await self._store(self.writer.add_referrer(name, pushed.subject.digest, descriptor))
        for tag, current in zip(tags, currents, strict=True):
            await self._write_tag(name, tag, digest, current)
        if self.names is not None:
            self.names.note_link("manifest", name, digest)
            for tag in tags:
                self.names.note_tag(name, tag, digest)

    async def _write_tag(self, name: str, tag: str, digest: Digest, current: Digest | None) -> None:
        """Point the tag at ``digest``. A tag an ``immutable`` rule protects that had no
        current link when checked is created only if there is still none: another sidecar, or
        a promotion, may create it at the same moment, and the store (S3's If-None-Match,
        a directory's hard link) lets exactly one of them. The others are refused as any
        move of an immutable tag is, unless the winner wrote the same digest."""
        new = current is None and tag_rule(self.rules, name, tag) == "immutable"
        try:
            await self.writer.tag(name, tag, digest, new=new)
        except AlreadyExists:
            winner = await self._current(name, tag)
            if winner != digest:
                raise Denied(f"tag {tag} is immutable: it already points at {winner}") from None
        except StorageError as exc:
            raise Unavailable.from_storage(exc) from exc

    async def _copy_signatures(self, name: str, repo: str, digest: Digest) -> None:
        """The image's signature companion (tag ``sha256-<hex>.sig``, as cosign and
        containers/image write it), if ``name`` has one, goes with it into ``repo``: a
        signature policy there finds it where it looks."""
        tag = f"{digest.algorithm}-{digest.hex}.sig"
        sig = await self._current(name, tag)
        if sig is None:
            return
        await self._link_image(name, repo, sig)
        await self._store(self.writer.tag(repo, tag, sig))
        if self.names is not None:
            self.names.note_tag(repo, tag, sig)

    async def _current(self, name: str, tag: str) -> Digest | None:
        return await self._store(self.writer.current(name, tag))

    async def _check_references(self, name: str, pushed: PushedManifest) -> None:
        gate = asyncio.Semaphore(CHECKS_IN_FLIGHT)

        async def present(kind: str, digest: Digest) -> tuple[Digest, bool]:
            async with gate:
                if kind == "blob":
                    return digest, await self._store(self.reader.has_blob(name, digest))
                return digest, await self._store(self.reader.has_manifest(name, digest))

        checks = [present("blob", d) for d in pushed.blobs]
        checks += [present("manifest", d) for d in pushed.manifests]
        for digest, ok in await asyncio.gather(*checks):
            if not ok:
                raise ManifestBlobUnknown(
                    "manifest references a blob or manifest unknown to this repository",
                    detail={"digest": str(digest)},
                )

    async def delete_manifest(self, name: str, reference: Reference) -> None:
        """By tag: remove the tag. By digest: unlink the manifest and every tag on it."""
        self._deletes_enabled()
        if reference.tag is not None:
            async with self._holding([(name, reference.tag)]):
                await self._untag_checked(name, reference.tag)
            return
        digest = reference.digest
        assert digest is not None
        if not await self._store(self.reader.has_manifest(name, digest)):
            raise ManifestUnknown(f"unknown manifest {name}@{digest}")
        tags = await self._store(self.writer.tags_pointing_at(name, digest))
        async with self._holding((name, t) for t in tags):
            await self._delete_checked(name, digest, tags)

    async def _untag_checked(self, name: str, tag: str) -> None:
        current = await self._current(name, tag)
        if current is None:
            raise ManifestUnknown(f"unknown tag {name}:{tag}")
        check_tag_move(tag_rule(self.rules, name, tag), tag, current, None, promotion=False)
        await self._store(self.writer.untag(name, tag))
        if self.names is not None:
            self.names.forget_tag(name, tag)

    async def _delete_checked(self, name: str, digest: Digest, tags: list[str]) -> None:
        for tag in tags:
            check_tag_move(tag_rule(self.rules, name, tag), tag, digest, None, promotion=False)
        subject = await self._subject_of(digest)
        for tag in tags:
            await self._store(self.writer.untag(name, tag))
        await self._store(self.writer.unlink_manifest(name, digest))
        if subject is not None:
            await self._store(self.writer.remove_referrer(name, subject, digest))
        if self.names is not None:
            self.names.forget_link("manifest", name, digest)
            for tag in tags:
                self.names.forget_tag(name, tag)

    async def _subject_of(self, digest: Digest) -> Digest | None:
        try:
            payload = await self.writer.driver.get(
                layout.blob_data(digest), max_bytes=mediatypes.MAX_MANIFEST_BYTES
            )
            doc = json.loads(payload)
            subject = doc.get("subject") if isinstance(doc, dict) else None
            return parse_digest(subject["digest"]) if isinstance(subject, dict) else None
        except (NotFound, ValueError, KeyError, TypeError, DigestInvalid):
            return None
        except StorageError as exc:
            raise Unavailable.from_storage(exc) from exc

    def _deletes_enabled(self) -> None:
        if not self.settings.push.delete:
            raise Unsupported("deletes are disabled (push.delete is false)")

    # -- referrers ----------------------------------------------------------------------------

    async def referrers(
        self, name: str, subject: Digest, artifact_type: str | None
    ) -> list[dict[str, Any]]:
        found = await self._store(self.writer.referrers(name, subject))
        if artifact_type is not None:
            found = [d for d in found if d.get("artifactType") == artifact_type]
        return sorted(found, key=lambda d: str(d.get("digest", "")))

    # -- promotion ----------------------------------------------------------------------------

    async def promote(
        self, name: str, digest: Digest, targets: Sequence[tuple[str, str]], *, by: str
    ) -> list[TagMove]:
        """Point each (repository, tag) of ``targets`` at ``name@digest``, writing links only:
        no blob is copied. Into another repository, the image's blobs and child manifests
        are linked there first (distribution's cross-repository mount, done for the client).
        Each move is audited (log line and a record in the store)."""
        if not await self._store(self.reader.has_manifest(name, digest)):
            raise ManifestUnknown(f"unknown manifest {name}@{digest}")
        async with self._holding(targets):
            return await self._promote_checked(name, digest, targets, by=by)

    async def _promote_checked(
        self, name: str, digest: Digest, targets: Sequence[tuple[str, str]], *, by: str
    ) -> list[TagMove]:
        currents = await asyncio.gather(*(self._current(r, t) for r, t in targets))
        for (repo, tag), current in zip(targets, currents, strict=True):
            check_tag_move(tag_rule(self.rules, repo, tag), tag, current, digest, promotion=True)
        for repo in dict.fromkeys(r for r, _ in targets if r != name):
            await self._link_image(name, repo, digest)
            await self._copy_signatures(name, repo, digest)
        moves = []
        for (repo, tag), current in zip(targets, currents, strict=True):
            await self._write_tag(repo, tag, digest, current)
            if self.names is not None:
                self.names.note_tag(repo, tag, digest)
            move = TagMove(repo, tag, current, digest)
            moves.append(move)
            await self._audit(move, by=by, source=f"{name}@{digest}")
        return moves

    async def _link_image(
        self,
        source: str,
        target: str,
        digest: Digest,
        seen: dict[Digest, asyncio.Future[None]] | None = None,
    ) -> None:
        """Link ``digest`` (a manifest or index) and everything under it into ``target``, each
        distinct manifest once however many entries name it: ``seen`` holds the linking of
        every manifest taken on in this promotion, and an index that names one again waits
        for that instead (its own link is still written after all of its children's)."""
        seen = {} if seen is None else seen
        linking = seen.get(digest)
        if linking is None:
            linking = seen[digest] = asyncio.ensure_future(
                self._link_one(source, target, digest, seen)
            )
        await linking

    async def _link_one(
        self, source: str, target: str, digest: Digest, seen: dict[Digest, asyncio.Future[None]]
    ) -> None:
        payload = await self._store(
            self.writer.driver.get(
                layout.blob_data(digest), max_bytes=mediatypes.MAX_MANIFEST_BYTES
            )
        )
        try:
            pushed = parse_pushed(payload, None)
        except ManifestInvalid as exc:
            raise ManifestInvalid(f"cannot promote {digest}: {exc.message}") from exc
        gate = asyncio.Semaphore(CHECKS_IN_FLIGHT)

        async def child(d: Digest) -> None:
            async with gate:
                present = await self._store(self.reader.has_manifest(source, d))
            if present:
                await self._link_image(source, target, d, seen)

        async def blob(d: Digest) -> None:
            async with gate:
                if not await self._store(self.reader.has_blob(source, d)):
                    raise ManifestBlobUnknown(
                        f"{source} lacks a blob of {digest}", detail={"digest": str(d)}
                    )
                await self._store(self.writer.link_blob(target, d))

        # Children and blobs at once; the manifest's own revision link last, so the target
        # never names a manifest whose parts it does not link yet.
        children = dict.fromkeys(pushed.manifests)
        await asyncio.gather(*map(child, children), *map(blob, dict.fromkeys(pushed.blobs)))
        await self._store(self.writer.put_manifest(target, digest, payload))
        if self.names is not None:
            self.names.note_link("manifest", target, digest)

    async def _audit(self, move: TagMove, *, by: str, source: str) -> None:
        when = self._now()
        record = {
            "time": when.isoformat().replace("+00:00", "Z"),
            "action": "promote",
            "by": by,
            "source": source,
            **move.as_json(),
        }
        audit_log.info("tag promoted", extra=record)
        await self._store(self.writer.audit(move.repository, audit_stamp(when), record))
