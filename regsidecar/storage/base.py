"""The storage driver Protocol: read access to a registry:2 tree, by key.

Drivers know nothing of registries; :mod:`regsidecar.storage.layout` maps objects to keys and
:class:`regsidecar.storage.registry.RegistryReader` applies distribution's access rules on top.
Every driver passes the same conformance suite (``tests/storage_conformance.py``).
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from regsidecar.errors import NotFound, StorageError

CHUNK = 256 * 1024
T = TypeVar("T")

# A metrics hook: (method, outcome "ok" | "not_found" | "error", seconds to the answer).
RequestHook = Callable[[str, str, float], None]


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a driver knows of an object without reading it: its size, and its ETag when the
    store has one (S3's tells whether the object was written in parts, and how many)."""

    size: int
    etag: str | None = None


class _Readable(Protocol):
    async def read(self, n: int = -1) -> bytes: ...


async def read_bounded(stream: _Readable, max_bytes: int) -> bytes:
    """Up to ``max_bytes + 1`` bytes of ``stream`` (so "too large" can be told apart).
    aiohttp's ``read(n)`` returns whatever is buffered, up to n, so one call is not enough."""
    buf = bytearray()
    while len(buf) <= max_bytes:
        chunk = await stream.read(max_bytes + 1 - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def fsync_dir(path: str) -> None:
    """Make a rename or a new entry in directory ``path`` durable (blocking: a thread's job)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def source_size(key: str, path: str) -> int:
    """Size of the local regular file ``path`` a write of ``key`` reads from; a missing or odd
    source is the caller's error (StorageError), not a missing key."""
    try:
        st = await asyncio.to_thread(os.stat, path)
    except OSError as exc:
        raise StorageError(key, f"source {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(key, f"source {path} is not a regular file")
    return st.st_size


async def observed(hook: RequestHook | None, method: str, call: Awaitable[T]) -> T:
    """Await ``call`` (one upstream request) and report its outcome and duration to ``hook``."""
    started = time.monotonic()
    outcome = "error"
    try:
        result = await call
        outcome = "ok"
        return result
    except NotFound:
        outcome = "not_found"
        raise
    finally:
        if hook is not None:
            hook(method, outcome, time.monotonic() - started)


@runtime_checkable
class Driver(Protocol):
    """Read-only access to keys of a registry:2 tree.

    Errors: :class:`~regsidecar.errors.NotFound` for a missing key,
    :class:`~regsidecar.errors.UpstreamUnavailable` for transport trouble; nothing else escapes.
    """

    description: str

    async def get(self, key: str, *, max_bytes: int) -> bytes:
        """Whole content of a small object (links, manifests); larger than max_bytes is an error."""
        ...

    async def size(self, key: str) -> int:
        """Size in bytes of the object at ``key``."""
        ...

    async def stat(self, key: str) -> ObjectInfo:
        """Size (and ETag, when the store has one) of the object at ``key``."""
        ...

    def stream(self, key: str, offset: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Content from ``offset`` to ``end`` inclusive (None: to the object's end), in
        chunks; close it (aclosing) when done early. A range past the end is NotFound."""
        ...

    async def list_children(self, prefix: str) -> list[str]:
        """Sorted names directly under the directory ``prefix`` (empty if there is none)."""
        ...

    def local_path(self, key: str) -> str | None:
        """A local file holding the object, when the driver has one (served with sendfile)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class WritableDriver(Driver, Protocol):
    """A driver that can also write (push, promotion). Same errors as :class:`Driver`.

    Writes of one key are atomic: a reader sees the old object or the new one, never part.
    """

    async def write(self, key: str, data: bytes) -> None:
        """Create or replace the small object at ``key`` (links, manifests, audit records)."""
        ...

    async def write_new(self, key: str, data: bytes) -> None:
        """Create the small object at ``key`` only if there is none, atomically against every
        other writer (S3: ``If-None-Match: *``; a directory: a hard link, which fails if the
        name exists); AlreadyExists if there is one."""
        ...

    async def write_file(self, key: str, path: str) -> None:
        """Create or replace ``key`` with the content of the local file ``path`` (a blob);
        large files go up in parts (S3 multipart upload), never whole in memory."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object at ``key``; a missing key is not an error."""
        ...

    async def delete_tree(self, prefix: str) -> None:
        """Remove every object under the directory ``prefix``; none is not an error."""
        ...

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under the directory ``prefix``, recursively, relative to it, sorted."""
        ...
