"""Blob upload sessions, staged on local disk until their digest is checked.

>>> uploads = Uploads("/var/lib/regsidecar/uploads", ttl_s=86400)  # doctest: +SKIP
>>> session = await uploads.start("team/app")  # doctest: +SKIP
>>> await uploads.append(session, request.content, start=0)  # doctest: +SKIP
>>> path, size = await uploads.finish(session, digest)  # doctest: +SKIP

Each session is a directory ``<root>/<id>/`` holding ``data`` (the bytes so far) and
``info.json`` (repository, start time). Bytes are hashed as they arrive; after a restart the
hash is rebuilt from ``data`` at the end, so a session survives a restart of the sidecar. The
offset is the size of ``data``: a chunk that fails half-way leaves what arrived, and the client
learns the offset from ``GET`` on the session and goes on from there, as the spec allows.
Sessions untouched for ``ttl_s`` are removed.

Each session belongs to the identity that opened it (``owner``). One identity holds at most
``max_sessions`` open sessions and ``max_bytes`` staged in them together; beyond either, the
request is refused 429 (``TOOMANYREQUESTS``): a writer credential, leaked or looping, cannot
fill the disk or the session table, and other writers are not held back by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from regsidecar.errors import BlobUploadUnknown, DigestInvalid, TooManyRequests, Unavailable
from regsidecar.oci.reference import Digest

log = logging.getLogger(__name__)

SESSION_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Bytes handed to the worker thread at once: big enough that the thread hop is noise.
BATCH = 4 * 1024 * 1024
SWEEP_EVERY_S = 600.0


@dataclass
class Session:
    id: str
    name: str
    dir: str
    started: float
    size: int = 0
    # sha256 of data[0:size] while this process saw every byte; None after a restart.
    hasher: Any = None
    owner: str = ""  # the identity that opened it ("" anonymous)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def data(self) -> str:
        return os.path.join(self.dir, "data")


def _hash_file(path: str, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def _append(path: str, hasher: Any, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)
    if hasher is not None:
        hasher.update(data)


class Uploads:
    """The sessions of one sidecar, under ``root``."""

    def __init__(
        self,
        root: str,
        *,
        ttl_s: float,
        max_sessions: int = 64,
        max_bytes: int = 10 * 1024**3,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._now = now
        self._sessions: dict[str, Session] = {}
        self._last_sweep = 0.0
        self._loaded = False

    def _owned(self, owner: str) -> list[Session]:
        if not self._loaded:
            # Sessions kept from before a restart count too.
            self._loaded = True
            with contextlib.suppress(OSError):
                for sid in os.listdir(self.root):
                    if SESSION_ID_RE.fullmatch(sid) and sid not in self._sessions:
                        self._load(sid)
        return [s for s in self._sessions.values() if s.owner == owner]

    def staged(self, owner: str) -> tuple[int, int]:
        """(open sessions, bytes staged) of ``owner``."""
        owned = self._owned(owner)
        return len(owned), sum(s.size for s in owned)

    async def start(self, name: str, owner: str = "") -> Session:
        await self._maybe_sweep()
        count, _ = self.staged(owner)
        if count >= self.max_sessions:
            raise TooManyRequests(
                f"{owner or 'anonymous'} has {count} upload sessions open "
                f"(push.max_open_uploads); finish or cancel some",
                retry_after=60,
            )
        sid = str(uuid.uuid4())
        directory = os.path.join(self.root, sid)
        started = self._now()
        info = json.dumps({"name": name, "started": started, "owner": owner}).encode()

        def create() -> None:
            os.makedirs(directory)
            with open(os.path.join(directory, "data"), "wb"):
                pass
            with open(os.path.join(directory, "info.json"), "wb") as f:
                f.write(info)

        await asyncio.to_thread(create)
        session = Session(sid, name, directory, started, 0, hashlib.sha256(), owner=owner)
        self._sessions[sid] = session
        return session

    def get(self, name: str, sid: str) -> Session:
        """The session ``sid`` of repository ``name``; BLOB_UPLOAD_UNKNOWN otherwise (also for
        another repository's session: a session is not a way into another repository)."""
        if SESSION_ID_RE.fullmatch(sid) is None:
            raise BlobUploadUnknown(detail={"uuid": sid[:64]})
        session = self._sessions.get(sid) or self._load(sid)
        if session is None or session.name != name:
            raise BlobUploadUnknown(detail={"uuid": sid})
        return session

    def _load(self, sid: str) -> Session | None:
        directory = os.path.join(self.root, sid)
        try:
            with open(os.path.join(directory, "info.json"), "rb") as f:
                info = json.load(f)
            size = os.stat(os.path.join(directory, "data")).st_size
            session = Session(
                sid,
                str(info["name"]),
                directory,
                float(info["started"]),
                size,
                owner=str(info.get("owner", "")),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._sessions[sid] = session
        return session

    async def append(self, session: Session, body: AsyncIterator[bytes]) -> int:
        """Append ``body`` to the session; returns the new size. Caller holds session.lock."""
        buf = bytearray()
        try:
            async for chunk in body:
                buf += chunk
                if len(buf) >= BATCH:
                    await self._write(session, bytes(buf))
                    buf.clear()
        finally:
            # Whatever arrived before a client went away is kept: the offset tells the client
            # where to resume.
            if buf:
                await self._write(session, bytes(buf))
        return session.size

    async def _write(self, session: Session, data: bytes) -> None:
        _, staged = self.staged(session.owner)
        if staged + len(data) > self.max_bytes:
            raise TooManyRequests(
                f"{session.owner or 'anonymous'} has {staged} bytes staged in uploads "
                f"(push.max_staged_bytes: {self.max_bytes}); finish or cancel some",
                retry_after=60,
            )
        try:
            await asyncio.to_thread(_append, session.data, session.hasher, data)
        except OSError as exc:
            # A short write leaves the file and the hash out of step: rehash at the end.
            session.hasher = None
            session.size = os.stat(session.data).st_size
            log.warning("upload staging failed", extra={"uuid": session.id, "error": str(exc)})
            raise Unavailable(f"cannot stage the upload: {exc.strerror or exc}") from exc
        session.size += len(data)

    async def finish(self, session: Session, digest: Digest) -> tuple[str, int]:
        """Check the staged bytes against ``digest``; returns (path, size) of the data."""
        if digest.algorithm == "sha256" and session.hasher is not None:
            actual = session.hasher.hexdigest()
        else:
            actual = await asyncio.to_thread(_hash_file, session.data, digest.algorithm)
        if actual != digest.hex:
            raise DigestInvalid(
                "provided digest did not match uploaded content",
                detail={"digest": str(digest), "actual": f"{digest.algorithm}:{actual}"},
            )
        return session.data, session.size

    async def discard(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        await asyncio.to_thread(shutil.rmtree, session.dir, True)

    async def _maybe_sweep(self) -> None:
        now = self._now()
        if now - self._last_sweep < SWEEP_EVERY_S:
            return
        self._last_sweep = now
        removed = await asyncio.to_thread(self._sweep, now)
        for sid in removed:
            self._sessions.pop(sid, None)
        if removed:
            log.info("removed abandoned upload sessions", extra={"count": len(removed)})

    def _sweep(self, now: float) -> list[str]:
        removed: list[str] = []
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return removed
        for entry in entries:
            if not entry.is_dir() or SESSION_ID_RE.fullmatch(entry.name) is None:
                continue
            try:
                touched = os.stat(os.path.join(entry.path, "data")).st_mtime
            except OSError:
                touched = entry.stat().st_mtime
            live = self._sessions.get(entry.name)
            if live is not None and live.lock.locked():
                continue
            if now - touched > self.ttl_s:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.name)
        return removed
