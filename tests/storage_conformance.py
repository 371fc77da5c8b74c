"""One behaviour suite for every storage driver (filesystem, S3 on moto, any future one).

A test module binds the ``driver`` fixture to an implementation seeded with :func:`seed` and
inherits :class:`DriverConformance`; every test here then runs against that driver. Writable
drivers also bind ``writable`` (an empty store) and inherit :class:`WritableDriverConformance`.
"""

from __future__ import annotations

import asyncio
import hashlib
from contextlib import aclosing
from pathlib import Path

import pytest

from regsidecar.demo import REPOSITORY, TAG, build_sample
from regsidecar.errors import NotFound, StorageError
from regsidecar.oci.reference import parse_digest
from regsidecar.storage import layout
from regsidecar.storage.base import Driver, WritableDriver
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

    @pytest.mark.parametrize(
        ("start", "end"), [(0, 0), (0, 99), (65536, 65536 + 300_000), (1, None), (0, 10**9)]
    )
    async def test_stream_a_byte_range(self, driver: Driver, start: int, end: int | None) -> None:
        """start..end inclusive; an end past the object stops at its end, as S3 does."""
        key = layout.blob_data(BIG_DIGEST)
        async with aclosing(driver.stream(key, start, end)) as it:  # type: ignore[type-var]
            data = b"".join([c async for c in it])
        assert data == BIG[start : None if end is None else end + 1]

    async def test_stream_from_past_the_end_is_not_found(self, driver: Driver) -> None:
        with pytest.raises(NotFound):
            async with aclosing(driver.stream(layout.blob_data(BIG_DIGEST), len(BIG))) as it:  # type: ignore[type-var]
                async for _ in it:
                    pass

    async def test_stat_gives_the_size(self, driver: Driver) -> None:
        info = await driver.stat(layout.blob_data(BIG_DIGEST))
        assert info.size == len(BIG)
        with pytest.raises(NotFound):
            await driver.stat(layout.blob_data("sha256:" + "0" * 64))

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


# Writable drivers run with a small multipart threshold: MULTIPART_BYTES (S3's smallest part)
# for both threshold and part size, so LARGE_FILE_BYTES goes up in 3 parts, the last short.
MULTIPART_BYTES = 5 * 1024 * 1024
LARGE_FILE_BYTES = 12 * 1024 * 1024 + 3
SMALL_FILE_BYTES = 300 * 1024 + 1


def make_file(path: Path, size: int, seed: int = 0) -> bytes:
    """Write ``size`` bytes that differ per offset and per seed (a misplaced part shows)."""
    block = hashlib.sha256(f"{seed}".encode()).digest() * 2048  # 64 KiB
    data = bytearray()
    counter = 0
    while len(data) < size:
        data += counter.to_bytes(8, "big") + block[8:]
        counter += 1
    path.write_bytes(bytes(data[:size]))
    return bytes(data[:size])


async def read_all(driver: Driver, key: str) -> bytes:
    async with aclosing(driver.stream(key)) as it:  # type: ignore[type-var]
        return b"".join([c async for c in it])


class WritableDriverConformance:
    """Behaviour every :class:`~regsidecar.storage.base.WritableDriver` must have. Bind
    ``writable`` to an empty store whose multipart threshold and part size (if it has them)
    are ``MULTIPART_BYTES``; what it writes is checked through its own read methods."""

    async def test_is_a_writable_driver(self, writable: WritableDriver) -> None:
        assert isinstance(writable, WritableDriver)

    async def test_write_then_read(self, writable: WritableDriver) -> None:
        key = layout.tag_current_link(REPOSITORY, TAG)
        await writable.write(key, b"sha256:" + b"a" * 64)
        assert await writable.get(key, max_bytes=1024) == b"sha256:" + b"a" * 64
        assert await writable.size(key) == 71
        assert await writable.list_children(layout.tags_dir(REPOSITORY)) == [TAG]

    async def test_write_replaces(self, writable: WritableDriver) -> None:
        await writable.write("a/b/link", b"first, and longer")
        await writable.write("a/b/link", b"second")
        assert await writable.get("a/b/link", max_bytes=1024) == b"second"

    async def test_write_empty_object(self, writable: WritableDriver) -> None:
        await writable.write("a/empty", b"")
        assert await writable.get("a/empty", max_bytes=10) == b""
        assert await writable.size("a/empty") == 0

    async def test_concurrent_writes_of_one_key_leave_one_whole(
        self, writable: WritableDriver
    ) -> None:
        """Atomic replace: after racing writers the object is one of theirs, never a mix."""
        bodies = [bytes([i]) * (64 * 1024 + i) for i in range(8)]
        await asyncio.gather(*(writable.write("race/data", b) for b in bodies))
        assert await read_all(writable, "race/data") in bodies
        assert await writable.list_keys("race") == ["data"]

    @pytest.mark.parametrize("size", [0, SMALL_FILE_BYTES, LARGE_FILE_BYTES])
    async def test_write_file_round_trip(
        self, writable: WritableDriver, tmp_path: Path, size: int
    ) -> None:
        """Small, empty and multipart-sized files come back byte for byte."""
        data = make_file(tmp_path / "staged", size, seed=size)
        key = layout.blob_data("sha256:" + hashlib.sha256(data).hexdigest())
        await writable.write_file(key, str(tmp_path / "staged"))
        assert await writable.size(key) == size
        back = await read_all(writable, key)
        assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()

    @pytest.mark.parametrize("size", [SMALL_FILE_BYTES, LARGE_FILE_BYTES])
    async def test_write_file_leaves_the_source(
        self, writable: WritableDriver, tmp_path: Path, size: int
    ) -> None:
        source = tmp_path / "staged"
        data = make_file(source, size)
        await writable.write_file("blobs/x/data", str(source))
        assert source.read_bytes() == data, "the caller's file is copied, not moved"

    async def test_write_file_replaces(self, writable: WritableDriver, tmp_path: Path) -> None:
        await writable.write("blobs/x/data", b"old content")
        data = make_file(tmp_path / "staged", SMALL_FILE_BYTES, seed=7)
        await writable.write_file("blobs/x/data", str(tmp_path / "staged"))
        assert await read_all(writable, "blobs/x/data") == data

    async def test_write_file_of_missing_source_is_a_storage_error(
        self, writable: WritableDriver, tmp_path: Path
    ) -> None:
        with pytest.raises(StorageError) as err:
            await writable.write_file("blobs/x/data", str(tmp_path / "absent"))
        assert not isinstance(err.value, NotFound)
        assert await writable.list_keys("blobs") == []

    async def test_delete(self, writable: WritableDriver) -> None:
        """The object is gone, and so is the directory it leaves empty (as in S3)."""
        await writable.write("repo/tags/v1/current/link", b"x")
        await writable.write("repo/tags/v2/current/link", b"y")
        await writable.delete("repo/tags/v1/current/link")
        with pytest.raises(NotFound):
            await writable.get("repo/tags/v1/current/link", max_bytes=10)
        assert await writable.list_children("repo/tags") == ["v2"]
        assert await writable.list_keys("repo") == ["tags/v2/current/link"]

    async def test_delete_of_missing_key_is_no_error(self, writable: WritableDriver) -> None:
        await writable.delete("no/such/key")
        await writable.write("some/key", b"x")
        await writable.delete("some/key")
        await writable.delete("some/key")

    async def test_delete_tree(self, writable: WritableDriver) -> None:
        """Everything under the directory goes; a sibling whose name starts alike stays."""
        for key in ["r/a/link", "r/a/b/link", "r/a/b/c/data", "r/ab/link", "r/z"]:
            await writable.write(key, key.encode())
        await writable.delete_tree("r/a")
        assert await writable.list_keys("r") == ["ab/link", "z"]
        assert await writable.list_children("r") == ["ab"]
        with pytest.raises(NotFound):
            await writable.size("r/a/b/c/data")

    async def test_delete_tree_of_many_keys(self, writable: WritableDriver) -> None:
        await asyncio.gather(*(writable.write(f"t/{i:02d}/link", b"x") for i in range(30)))
        await writable.delete_tree("t")
        assert await writable.list_keys("t") == []
        assert await writable.list_children("") == []

    async def test_delete_tree_of_missing_directory_is_no_error(
        self, writable: WritableDriver
    ) -> None:
        await writable.delete_tree("no/such/dir")

    async def test_delete_tree_refuses_the_whole_store(self, writable: WritableDriver) -> None:
        await writable.write("keep/me", b"x")
        for prefix in ["", "/"]:
            with pytest.raises(StorageError):
                await writable.delete_tree(prefix)
        assert await writable.list_keys("keep") == ["me"]

    async def test_list_keys_nested_sorted_and_paginated(self, writable: WritableDriver) -> None:
        """Relative to the prefix, recursive, sorted; more keys than one listing page."""
        keys = [f"d{i % 3}/{'sub/' * (i % 2)}k{i:02d}" for i in range(25)]
        await asyncio.gather(*(writable.write(f"top/{k}", b"x") for k in keys))
        await writable.write("topper/other", b"x")
        assert await writable.list_keys("top") == sorted(keys)
        assert await writable.list_keys("top/") == sorted(keys)
        assert await writable.list_keys("top/d1") == sorted(
            k.removeprefix("d1/") for k in keys if k.startswith("d1/")
        )

    async def test_list_keys_of_missing_directory_is_empty(self, writable: WritableDriver) -> None:
        await writable.write("topper/other", b"x")
        assert await writable.list_keys("top") == []
        assert await writable.list_keys("topper/other") == [], "a key is not a directory"
