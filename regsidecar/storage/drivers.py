"""The driver a configuration names: S3 (``storage: s3://BUCKET[/PREFIX]``) or a directory."""

from __future__ import annotations

from regsidecar.config import Settings
from regsidecar.storage.filesystem import FilesystemDriver
from regsidecar.storage.s3 import S3Driver


async def open_driver(settings: Settings) -> S3Driver | FilesystemDriver:
    """The store's driver (the caller closes it)."""
    if settings.storage_kind == "s3":
        return await S3Driver.from_settings(settings)
    return FilesystemDriver(settings.filesystem_root)
