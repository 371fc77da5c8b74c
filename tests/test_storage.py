"""The storage conformance suite, run against the filesystem driver and S3 (moto server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from regsidecar.storage.base import Driver
from regsidecar.storage.filesystem import FilesystemDriver
from regsidecar.storage.s3 import S3Driver, S3Options
from tests.rig.moto import MotoServer
from tests.storage_conformance import DriverConformance, ReaderConformance, seed


@pytest.fixture(params=["filesystem", "s3", "s3-prefixed"])
async def driver(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Driver]:
    if request.param == "filesystem":
        fs = FilesystemDriver(str(tmp_path / "registry"))
        seed(fs.put)
        yield fs
        return
    moto: MotoServer = request.getfixturevalue("moto")
    bucket: str = request.getfixturevalue("bucket")
    prefix = "some/root" if request.param == "s3-prefixed" else ""
    client = moto.client()

    def put(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{key}" if prefix else key, Body=data)

    seed(put)
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
        )
    )
    try:
        yield s3
    finally:
        await s3.close()


class TestDriver(DriverConformance):
    pass


class TestReader(ReaderConformance):
    pass
