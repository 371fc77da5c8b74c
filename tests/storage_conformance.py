"""One behaviour suite for every storage driver (filesystem, S3 on moto, any future one).

A test module binds the ``driver`` fixture to an implementation seeded with :func:`seed` and
inherits :class:`DriverConformance`; every test here then runs against that driver.
"""

from __future__ import annotations

import hashlib
from contextlib import aclosing

import pytest

from regsidecar.demo import REPOSITORY, TAG, build_sample
from regsidecar.errors import NotFound, StorageError
from regsidecar.oci.reference import parse_digest
from regsidecar.storage import layout
from regsidecar.storage.base import Driver
from regsidecar.storage.registry import RegistryReader

OTHER_REPO = "team/other"
BIG = bytes(range(256)) * 4096 + b"tail"  # 1 MiB + 4 bytes: several stream chunks
BIG_DIGEST = "sha256:" + hashlib.sha256(BIG).hexdigest()
MANY_TAGS = [f"v{i:03d}" for i in range(25)]


def seed(put: object) -> None:
    """Write the fixture tree through ``put(key, bytes)``: the demo image, a second repository
    holding one extra blob (linked only there) and 25 tags, and a dangling tag."""
    from regsidecar.demo import write_sample

    class _Writer:
        def put(self, key: str, data: bytes) -> None:
            put(key, data)  # type: ignore[operator]

    write_sample(_Writer())  # type: ignore[arg-type]
    put(layout.blob_data(BIG_DIGEST), BIG)  # type: ignore[operator]
    put(layout.layer_link(OTHER_REPO, BIG_DIGEST), BIG_DIGEST.encode())  # type: ignore[operator]
    index = build_sample().index
    put(layout.revision_link(OTHER_REPO, index.digest), index.digest.encode())  # type: ignore[operator]
    for tag in MANY_TAGS:
        put(layout.tag_current_link(OTHER_REPO, tag), index.digest.encode())  # type: ignore[operator]
    put(layout.tag_current_link(OTHER_REPO, "broken"), b"not a digest")  # type: ignore[operator]


class DriverConformance:
    """Behaviour every :class:`~regsidecar.storage.base.Driver` must have."""

    async def test_is_a_driver(self, driver: Driver) -> None:
        assert isinstance(driver, Driver)

    async def test_get_returns_small_object(self, driver: Driver) -> None:
        index = build_sample().index
        data = await driver.get(layout.tag_current_link(REPOSITORY, TAG), max_bytes=1024)
        assert data == index.digest.encode()

    async def test_get_missing_key_is_not_found(self, driver: Driver) -> None:
        with pytest.raises(NotFound):
            await driver.get(layout.tag_current_link(REPOSITORY, "nope"), max_bytes=1024)

    async def test_get_refuses_objects_over_max_bytes(self, driver: Driver) -> None:
        with pytest.raises(StorageError) as err:
            await driver.get(layout.blob_data(BIG_DIGEST), max_bytes=1000)
        assert not isinstance(err.value, NotFound)

    async def test_size(self, driver: Driver) -> None:
        assert await driver.size(layout.blob_data(BIG_DIGEST)) == len(BIG)

    async def test_size_of_missing_key_or_directory_is_not_found(self, driver: Driver) -> None:
        with pytest.raises(NotFound):
            await driver.size(layout.blob_data("sha256:" + "0" * 64))
        with pytest.raises(NotFound):
            await driver.size(layout.repository(REPOSITORY))

    async def test_stream_whole_object(self, driver: Driver) -> None:
        async with aclosing(driver.stream(layout.blob_data(BIG_DIGEST))) as it:  # type: ignore[type-var]
            chunks = [c async for c in it]
        assert b"".join(chunks) == BIG
        assert len(chunks) > 1, "streams in chunks, not one whole-object read"

    @pytest.mark.parametrize("offset", [1, 65536, len(BIG) - 1])
    async def test_stream_from_offset(self, driver: Driver, offset: int) -> None:
        async with aclosing(driver.stream(layout.blob_data(BIG_DIGEST), offset)) as it:  # type: ignore[type-var]
            data = b"".join([c async for c in it])
        assert data == BIG[offset:]

    async def test_stream_missing_key_is_not_found(self, driver: Driver) -> None:
        with pytest.raises(NotFound):
            async with aclosing(driver.stream(layout.blob_data("sha256:" + "1" * 64))) as it:  # type: ignore[type-var]
                async for _ in it:
                    pass

    async def test_stream_closed_early_releases_cleanly(self, driver: Driver) -> None:
        async with aclosing(driver.stream(layout.blob_data(BIG_DIGEST))) as it:  # type: ignore[type-var]
            first = await anext(it)
        assert BIG.startswith(first)
        # the driver still works after an abandoned stream
        assert await driver.size(layout.blob_data(BIG_DIGEST)) == len(BIG)

    async def test_list_children_sorted_and_paginated(self, driver: Driver) -> None:
        names = await driver.list_children(layout.tags_dir(OTHER_REPO))
        assert names == sorted([*MANY_TAGS, "broken"])

    async def test_list_children_of_missing_dir_is_empty(self, driver: Driver) -> None:
        assert await driver.list_children(layout.tags_dir("no/such/repo")) == []

    async def test_list_children_does_not_match_name_prefixes(self, driver: Driver) -> None:
        """'team/oth' is not 'team/other': listing is by directory, not string prefix."""
        assert await driver.list_children(layout.tags_dir("team/oth")) == []


class ReaderConformance:
    """distribution's repository-scoped rules, over every driver."""

    async def test_resolve_tag(self, driver: Driver) -> None:
        reader = RegistryReader(driver)
        assert str(await reader.resolve_tag(REPOSITORY, TAG)) == build_sample().index.digest

    async def test_unknown_tag_is_not_found(self, driver: Driver) -> None:
        with pytest.raises(NotFound):
            await RegistryReader(driver).resolve_tag(REPOSITORY, "missing")

    async def test_corrupt_link_is_a_storage_error_not_a_digest(self, driver: Driver) -> None:
        with pytest.raises(StorageError) as err:
            await RegistryReader(driver).resolve_tag(OTHER_REPO, "broken")
        assert not isinstance(err.value, NotFound)

    async def test_manifest_needs_this_repositorys_revision_link(self, driver: Driver) -> None:
        reader = RegistryReader(driver)
        sample = build_sample()
        index = parse_digest(sample.index.digest)
        amd64 = parse_digest(sample.manifests["amd64"].digest)
        assert await reader.has_manifest(REPOSITORY, index)
        assert await reader.has_manifest(REPOSITORY, amd64)
        assert await reader.has_manifest(OTHER_REPO, index)
        assert not await reader.has_manifest(OTHER_REPO, amd64), "linked only in the demo repo"
        assert not await reader.has_manifest("no/such", index)

    async def test_blob_needs_this_repositorys_layer_link(self, driver: Driver) -> None:
        reader = RegistryReader(driver)
        big = parse_digest(BIG_DIGEST)
        layer = parse_digest(build_sample().blobs[0].digest)
        assert await reader.has_blob(OTHER_REPO, big)
        assert not await reader.has_blob(REPOSITORY, big), "blob data exists but is not linked here"
        assert await reader.has_blob(REPOSITORY, layer)
        assert not await reader.has_blob(OTHER_REPO, layer)

    async def test_manifest_is_not_a_blob(self, driver: Driver) -> None:
        """A manifest digest is visible through the manifests API, not as a layer."""
        reader = RegistryReader(driver)
        index = parse_digest(build_sample().index.digest)
        assert not await reader.has_blob(REPOSITORY, index)

    async def test_list_tags(self, driver: Driver) -> None:
        reader = RegistryReader(driver)
        assert await reader.list_tags(REPOSITORY) == [TAG]
        assert await reader.list_tags("no/such") is None

    async def test_blob_bytes_match_their_digest(self, driver: Driver) -> None:
        reader = RegistryReader(driver)
        for blob in build_sample().blobs:
            digest = parse_digest(blob.digest)
            data = await driver.get(reader.blob_key(digest), max_bytes=1 << 20)
            assert hashlib.sha256(data).hexdigest() == digest.hex
