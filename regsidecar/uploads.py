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
"""

from __future__ import annotations

import asyncio
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

from regsidecar.errors import BlobUploadUnknown, DigestInvalid, Unavailable
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

    def __init__(self, root: str, *, ttl_s: float, now: Callable[[], float] = time.time) -> None:
        self.root = root
        self.ttl_s = ttl_s
        self._now = now
        self._sessions: dict[str, Session] = {}
        self._last_sweep = 0.0

    async def start(self, name: str) -> Session:
        await self._maybe_sweep()
        sid = str(uuid.uuid4())
        directory = os.path.join(self.root, sid)
        started = self._now()
        info = json.dumps({"name": name, "started": started}).encode()

        def create() -> None:
            os.makedirs(directory)
            with open(os.path.join(directory, "data"), "wb"):
                pass
            with open(os.path.join(directory, "info.json"), "wb") as f:
                f.write(info)

        await asyncio.to_thread(create)
        session = Session(sid, name, directory, started, 0, hashlib.sha256())
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
            session = Session(sid, str(info["name"]), directory, float(info["started"]), size)
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
