"""A registry:2 tree in a local directory, as distribution's filesystem driver writes it.

>>> driver = FilesystemDriver("/var/lib/regsidecar/registry")  # doctest: +SKIP

Small objects (links, manifests) are read inline: they are a page or two, and a thread hop
would cost more than the read. Blob data is served by the API straight from
:meth:`local_path` with sendfile, so it is never copied into the cache.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator

from regsidecar.errors import NotFound, StorageError
from regsidecar.storage.base import CHUNK


class FilesystemDriver:
    """Driver over a directory (distribution's ``rootdirectory``)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.description = f"filesystem {self.root}"

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key)

    async def get(self, key: str, *, max_bytes: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                data = f.read(max_bytes + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NotFound(key) from exc
        except OSError as exc:
            raise StorageError(key, exc.strerror or str(exc)) from exc
        if len(data) > max_bytes:
            raise StorageError(key, f"object larger than {max_bytes} bytes")
        return data

    async def size(self, key: str) -> int:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFound(key) from exc
        except OSError as exc:
            raise StorageError(key, exc.strerror or str(exc)) from exc
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(key)
        return st.st_size

    async def stream(self, key: str, offset: int = 0) -> AsyncIterator[bytes]:
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - closed in finally
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NotFound(key) from exc
        try:
            f.seek(offset)
            while chunk := await asyncio.to_thread(f.read, CHUNK):
                yield chunk
        finally:
            f.close()

    async def list_children(self, prefix: str) -> list[str]:
        try:
            with os.scandir(self._path(prefix)) as it:
                return sorted(e.name for e in it if e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def local_path(self, key: str) -> str | None:
        return self._path(key)

    async def close(self) -> None:
        return None

    # Writing is for the demo image and tests; the pull path never writes the store.
    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
