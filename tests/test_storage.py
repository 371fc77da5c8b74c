"""The storage conformance suite, run against the filesystem driver and S3 (moto server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from regsidecar.storage.base import Driver, WritableDriver
from regsidecar.storage.filesystem import FilesystemDriver
from regsidecar.storage.s3 import S3Driver, S3Options
from tests.rig.moto import MotoServer
from tests.storage_conformance import (
    MULTIPART_BYTES,
    DriverConformance,
    ReaderConformance,
    WritableDriverConformance,
    seed,
)

DRIVERS = ["filesystem", "s3", "s3-prefixed"]


async def open_s3(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, prefix: str, **options: Any
) -> tuple[S3Driver, MotoServer, str]:
    """An S3 driver on the test's moto bucket (listing pages of 7 keys)."""
    moto: MotoServer = request.getfixturevalue("moto")
    bucket: str = request.getfixturevalue("bucket")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3 = await S3Driver.open(
        S3Options(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=moto.endpoint_url,
            path_style=True,
            region="us-east-1",
            list_page_size=7,
            **options,
        )
    )
    return s3, moto, bucket


@pytest.fixture(params=DRIVERS)
async def driver(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Driver]:
    if request.param == "filesystem":
        fs = FilesystemDriver(str(tmp_path / "registry"))
        seed(fs.put)
        yield fs
        return
    prefix = "some/root" if request.param == "s3-prefixed" else ""
    s3, moto, bucket = await open_s3(request, monkeypatch, prefix)
    client = moto.client()

    def put(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}" if prefix else key, Body=data)

    seed(put)
    try:
        yield s3
    finally:
        await s3.close()


@pytest.fixture(params=DRIVERS)
async def writable(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[WritableDriver]:
    """An empty store; S3 takes files of MULTIPART_BYTES and more in parts of that size."""
    if request.param == "filesystem":
        yield FilesystemDriver(str(tmp_path / "registry"))
        return
    prefix = "some/root" if request.param == "s3-prefixed" else ""
    s3, _, _ = await open_s3(
        request,
        monkeypatch,
        prefix,
        multipart_threshold_bytes=MULTIPART_BYTES,
        part_bytes=MULTIPART_BYTES,
    )
    try:
        yield s3
    finally:
        await s3.close()


class TestDriver(DriverConformance):
    pass


class TestReader(ReaderConformance):
    pass


class TestWritableDriver(WritableDriverConformance):
    pass
