"""Shared fixtures: real servers on loopback, started once per session where they are costly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from regsidecar.demo import write_sample
from regsidecar.storage.filesystem import FilesystemDriver
from tests.rig.faultproxy import FaultProxy
from tests.rig.moto import MotoServer
from tests.rig.proc import missing
from tests.s3tree import BucketWriter


def require(*binaries: str) -> None:
    """Skip (with the reason) when a real component is not installed here."""
    absent = missing(*binaries)
    if absent:
        pytest.skip(f"not installed: {', '.join(absent)} (run tests/rig/install-deps.sh)")


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    require("moto_server")
    with MotoServer() as server:
        yield server


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    name = f"b-{uuid.uuid4().hex[:12]}"
    moto.create_bucket(name)
    return name


@pytest.fixture
def writer(moto: MotoServer, bucket: str) -> BucketWriter:
    """Writes registry:2 objects straight into the test's bucket."""
    return BucketWriter(moto.client(), bucket)


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of moto (a sidecar's S3 endpoint in fault tests)."""
    with FaultProxy(moto.endpoint_url) as p:
        yield p


def s3_args(endpoint_url: str, bucket: str) -> list[str]:
    """Sidecar flags for ``s3://bucket`` at ``endpoint_url`` (path style, us-east-1)."""
    return [
        "--storage",
        f"s3://{bucket}",
        "--s3-endpoint-url",
        endpoint_url,
        "--s3-path-style",
        "--s3-region",
        "us-east-1",
    ]


@pytest.fixture
def sample_tree(tmp_path: Path) -> Path:
    """A registry:2 tree on disk holding the demo image (regsidecar/hello:latest)."""
    root = tmp_path / "registry"
    write_sample(FilesystemDriver(str(root)))
    return root


def upload_tree(moto: MotoServer, bucket: str, root: Path, prefix: str = "") -> list[str]:
    """Copy a registry:2 tree from disk into the bucket, key for key."""
    client = moto.client()
    keys = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            key = path.relative_to(root).as_posix()
            key = f"{prefix.strip('/')}/{key}" if prefix else key
            client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
            keys.append(key)
    return keys
