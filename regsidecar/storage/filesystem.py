"""A registry:2 tree in a local directory, as distribution's filesystem driver writes it.

>>> driver = FilesystemDriver("/var/lib/regsidecar/registry")  # doctest: +SKIP
>>> await driver.write_file(layout.blob_data(digest), staged_path)  # doctest: +SKIP

Small objects (links, manifests) are read inline: they are a page or two, and a thread hop
would cost more than the read. Blob data is served by the API straight from
:meth:`local_path` with sendfile, so it is never copied into the cache.

Writes (push, promotion, the demo image) replace a file atomically, as distribution's driver
does: the content goes to a temporary file in the same directory and is fsynced, the file is
renamed over the key and the directory fsynced, so a reader, or the tree after a crash, holds
the old object or the new one, never part of one. Writes and deletes run in a worker thread:
an fsync may wait on the disk for a long time. A delete removes the directories it leaves
empty, so a directory exists exactly while it holds a key, as in S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from regsidecar.errors import AlreadyExists, NotFound, StorageError
from regsidecar.storage.base import CHUNK, ObjectInfo, fsync_dir, source_size

T = TypeVar("T")
# In-flight temporary files: ".<name>.<random>.tmp" beside the key (no registry key starts
# with a dot); list_keys leaves them out.
_TMP_SUFFIX = ".tmp"


class FilesystemDriver:
    """Driver over a directory (distribution's ``rootdirectory``)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.description = f"filesystem {self.root}"

    def _path(self, key: str) -> str:
        """The path of ``key`` for a read: with every symlink resolved, and NotFound unless
        it is still under the root (distribution never writes a symlink: one that leads out
        of the store, to /etc/shadow or another tree, is nothing of the store's)."""
        path = os.path.realpath(os.path.join(self.root, key))
        real_root = os.path.realpath(self.root)
        if path != real_root and not path.startswith(real_root.rstrip(os.sep) + os.sep):
            raise NotFound(key, "outside the storage root")
        return path

    def _inside(self, key: str, *, root_ok: bool = False) -> str:
        """The path of ``key`` for a write: refused unless it stays under the root."""
        path = os.path.normpath(os.path.join(self.root, key))
        if (root_ok and path == self.root) or path.startswith(self.root.rstrip(os.sep) + os.sep):
            return path
        raise StorageError(key, "key outside the storage root")

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
        return (await self.stat(key)).size

    async def stat(self, key: str) -> ObjectInfo:
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFound(key) from exc
        except OSError as exc:
            raise StorageError(key, exc.strerror or str(exc)) from exc
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(key)
        return ObjectInfo(st.st_size)

    async def stream(
        self, key: str, offset: int = 0, end: int | None = None
    ) -> AsyncIterator[bytes]:
        try:
            f = open(self._path(key), "rb")  # noqa: SIM115 - closed in finally
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NotFound(key) from exc
        try:
            size = os.fstat(f.fileno()).st_size
            if offset and offset >= size:
                raise NotFound(key, "range not satisfiable")
            f.seek(offset)
            left = (min(end, size - 1) if end is not None else size - 1) + 1 - offset
            while left > 0 and (chunk := await asyncio.to_thread(f.read, min(CHUNK, left))):
                left -= len(chunk)
                yield chunk
        finally:
            f.close()

    async def list_children(self, prefix: str) -> list[str]:
        """Subdirectories of ``prefix``; a symlink is none (no walk leaves the store or
        loops). In a worker thread: a catalog walk of a large tree never holds the loop."""
        try:
            path = self._path(prefix)
        except NotFound:
            return []
        return await _in_thread(prefix, _children, path)

    def local_path(self, key: str) -> str | None:
        """The file holding ``key``, resolved and inside the root; NotFound when it is not
        a regular file there (a directory, a symlink out of the store, nothing)."""
        path = self._path(key)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFound(key) from exc
        except OSError as exc:
            raise StorageError(key, exc.strerror or str(exc)) from exc
        if not stat.S_ISREG(st.st_mode):
            raise NotFound(key, "not a file")
        return path

    async def close(self) -> None:
        return None

    # -- WritableDriver -------------------------------------------------------------------

    async def write(self, key: str, data: bytes) -> None:
        await _in_thread(key, _replace, self._inside(key), _bytes(data))

    async def write_new(self, key: str, data: bytes) -> None:
        if not await _in_thread(key, _create, self._inside(key), _bytes(data)):
            raise AlreadyExists(key)

    async def write_file(self, key: str, path: str) -> None:
        """Store the content of ``path`` at ``key``, leaving ``path`` in place. On the same
        filesystem the new file is a hard link to it (no copy), so the caller removes its file
        afterwards rather than writing to it again."""
        target = self._inside(key)
        await source_size(key, path)
        await _in_thread(key, _replace, target, _copy_of(path))

    async def delete(self, key: str) -> None:
        await _in_thread(key, _delete, self._inside(key), self.root)

    async def delete_tree(self, prefix: str) -> None:
        if not prefix.strip("/"):
            raise StorageError(prefix, "refusing to delete the whole store")
        await _in_thread(prefix, _delete_tree, self._inside(prefix), self.root)

    async def list_keys(self, prefix: str) -> list[str]:
        return await _in_thread(prefix, _walk, self._inside(prefix, root_ok=True))

    def put(self, key: str, data: bytes) -> None:
        """:meth:`write` without an event loop (the demo image, test fixtures)."""
        _replace(self._inside(key), _bytes(data))


async def _in_thread(key: str, fn: Callable[..., T], *args: object) -> T:
    try:
        return await asyncio.to_thread(fn, *args)
    except OSError as exc:
        raise StorageError(key, exc.strerror or str(exc)) from exc


# -- the blocking steps, run in a worker thread ---------------------------------------------


def _children(path: str) -> list[str]:
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _replace(path: str, fill: Callable[[str], None]) -> None:
    """Create or replace ``path`` atomically: ``fill(tmp)`` makes a durable file beside it,
    which is renamed over ``path``; then the directory entry is made durable too."""
    directory, name = os.path.split(path)
    for attempt in range(3):
        _makedirs(directory)
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}{_TMP_SUFFIX}")
        try:
            fill(tmp)
            os.replace(tmp, path)
        except FileNotFoundError:
            _unlink_quietly(tmp)
            # A concurrent delete pruned the directory after _makedirs saw it: make it again.
            if attempt == 2:
                raise
            continue
        except BaseException:
            _unlink_quietly(tmp)
            raise
        fsync_dir(directory)
        return


def _create(path: str, fill: Callable[[str], None]) -> bool:
    """Create ``path`` only if it does not exist: ``fill(tmp)`` makes a durable file beside
    it, which is hard-linked to ``path`` and then dropped. False if another writer got there
    first (the kernel decides, whichever process asks)."""
    directory, name = os.path.split(path)
    _makedirs(directory)
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}{_TMP_SUFFIX}")
    try:
        fill(tmp)
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        _unlink_quietly(tmp)
    fsync_dir(directory)
    return True


def _bytes(data: bytes) -> Callable[[str], None]:
    def fill(tmp: str) -> None:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return fill


def _copy_of(source: str) -> Callable[[str], None]:
    def fill(tmp: str) -> None:
        try:
            os.link(source, tmp)
        except FileNotFoundError:
            raise
        except OSError:
            # Another filesystem (EXDEV), or hard links refused here: copy (sendfile on Linux).
            shutil.copyfile(source, tmp)
        else:
            # The link shares the staged file's inode and mode (often 0600): give it the
            # mode a new file here gets, as a copy would have.
            os.chmod(tmp, _new_file_mode())
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    return fill


def _delete(path: str, root: str) -> None:
    try:
        os.unlink(path)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return  # nothing there, or a directory (not an object)
    fsync_dir(_prune(os.path.dirname(path), root))


def _delete_tree(path: str, root: str) -> None:
    try:
        shutil.rmtree(path)
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there, or a file (a key, not a directory of keys)
    fsync_dir(_prune(os.path.dirname(path), root))


def _walk(top: str) -> list[str]:
    def onerror(exc: OSError) -> None:
        # A missing top (or a directory removed while walking) holds no keys.
        if not isinstance(exc, FileNotFoundError | NotADirectoryError):
            raise exc

    keys = []
    for dirpath, _dirs, files in os.walk(top, onerror=onerror):
        rel = os.path.relpath(dirpath, top)
        for name in files:
            if name.startswith(".") and name.endswith(_TMP_SUFFIX):
                continue
            keys.append(name if rel == "." else os.path.join(rel, name).replace(os.sep, "/"))
    return sorted(keys)


def _makedirs(directory: str) -> None:
    """``os.makedirs``, then make each new directory entry durable (fsync its parent)."""
    created = []
    d = directory
    while not os.path.isdir(d):
        created.append(d)
        d = os.path.dirname(d)
    if not created:
        return
    os.makedirs(directory, exist_ok=True)
    for d in reversed(created):
        fsync_dir(os.path.dirname(d))


def _prune(directory: str, root: str) -> str:
    """Remove ``directory`` and its parents while they are empty, never ``root`` itself;
    return the first directory that stays."""
    while directory.startswith(root.rstrip(os.sep) + os.sep):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass  # pruned concurrently
        except OSError:
            break  # not empty
        directory = os.path.dirname(directory)
    return directory


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@functools.cache
def _new_file_mode() -> int:
    """0o666 less the process umask (Linux reports it in /proc; else the usual 022)."""
    umask = 0o022
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    umask = int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o666 & ~umask
