"""Download readers on tmp files (no servers): they follow the contiguous prefix, and a
response's last byte waits for verification, whole blob or Range."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from regsidecar.errors import UpstreamUnavailable
from regsidecar.oci.reference import parse_digest
from regsidecar.pull.download import Download
from regsidecar.pull.parts import PartPlan

DIGEST = parse_digest("sha256:" + "a" * 64)


def _download(tmp_path: Path, data: bytes, part_bytes: int | None = None) -> Download:
    temp, final = tmp_path / "tmp" / "x.part", tmp_path / "blobs" / "x"
    temp.parent.mkdir()
    final.parent.mkdir()
    temp.write_bytes(data)
    plan = PartPlan(len(data), part_bytes or max(len(data), 1))
    return Download(DIGEST, len(data), str(temp), str(final), plan)


def _write(d: Download, index: int, n: int | None = None) -> None:
    part = d.plan.parts[index]
    part.claimed = True
    d.wrote(part, part.remaining if n is None else n)


async def _read_all(it: object) -> bytes:
    return b"".join([c async for c in it])  # type: ignore[attr-defined]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_reader_holds_back_the_last_byte_until_verified(tmp_path: Path) -> None:
    data = os.urandom(1000)
    d = _download(tmp_path, data)
    _write(d, 0)  # every byte written, not yet verified
    reader = asyncio.create_task(_read_all(d.open_reader(0, len(data) - 1)))
    await _settle()
    assert not reader.done(), "a complete response must wait for verification"
    d.finish()
    assert await reader == data


async def test_a_range_response_also_waits_for_the_whole_blobs_verification(
    tmp_path: Path,
) -> None:
    """Bytes 0-99 of a cold blob are on disk long before the blob is verified: the 100th
    byte still waits for the digest of all of it."""
    data = os.urandom(1000)
    d = _download(tmp_path, data, part_bytes=100)
    _write(d, 0)
    got: list[bytes] = []

    async def read() -> None:
        async for chunk in d.open_reader(0, 99):
            got.append(chunk)

    reader = asyncio.create_task(read())
    await _settle()
    assert b"".join(got) == data[:99] and not reader.done()
    for i in range(1, 10):
        _write(d, i)
    await _settle()
    assert not reader.done(), "all bytes written is not verified"
    d.finish()
    await reader
    assert b"".join(got) == data[:100]


async def test_readers_follow_the_contiguous_prefix_not_parts_written_ahead(
    tmp_path: Path,
) -> None:
    data = os.urandom(300)
    d = _download(tmp_path, data, part_bytes=100)
    got: list[bytes] = []

    async def read() -> None:
        async for chunk in d.open_reader(0, 299):
            got.append(chunk)

    reader = asyncio.create_task(read())
    _write(d, 2)
    _write(d, 1)
    await _settle()
    assert got == [], "parts 1 and 2 are written, but byte 0 is not"
    _write(d, 0, 50)
    await _settle()
    assert b"".join(got) == data[:50]
    _write(d, 0)
    await _settle()
    assert b"".join(got) == data[:299]
    d.finish()
    await reader
    assert b"".join(got) == data


async def test_a_failed_download_fails_its_readers(tmp_path: Path) -> None:
    data = os.urandom(1000)
    d = _download(tmp_path, data)
    _write(d, 0, 500)
    reader = asyncio.create_task(_read_all(d.open_reader(0, len(data) - 1)))
    await _settle()
    d.fail(ValueError("digest mismatch"))
    with pytest.raises(UpstreamUnavailable):
        await reader


async def test_reader_opening_between_publish_and_finish_finds_the_final_file(
    tmp_path: Path,
) -> None:
    """The rename runs in a worker thread: a reader arriving after it but before finish()
    must open the published file, not fail on the vanished temp file."""
    data = os.urandom(1000)
    d = _download(tmp_path, data)
    _write(d, 0)
    os.replace(d.temp_path, d.final_path)  # published, finish() not yet called
    reader = asyncio.create_task(_read_all(d.open_reader(0, len(data) - 1)))
    await asyncio.sleep(0)
    d.finish()
    assert await reader == data


def test_reader_of_a_vanished_download_is_told(tmp_path: Path) -> None:
    d = _download(tmp_path, b"abc")
    os.unlink(d.temp_path)
    with pytest.raises(UpstreamUnavailable):
        d.open_reader(0, 2)


async def test_a_reader_closed_before_its_first_chunk_lets_go_of_its_file(tmp_path: Path) -> None:
    """A response that fails before sending anything (client gone at prepare) closes its
    reader unread: the file is closed and the download no longer counts it as a reader."""
    d = _download(tmp_path, os.urandom(1000))
    fds_before = len(os.listdir("/proc/self/fd"))
    reader = d.open_reader(0, 999)
    assert d.readers == 1
    await reader.aclose()  # type: ignore[attr-defined]
    await reader.aclose()  # type: ignore[attr-defined]  # twice is harmless
    assert d.readers == 0
    assert len(os.listdir("/proc/self/fd")) == fds_before


async def test_a_peer_reader_takes_each_part_as_written_and_the_last_byte_unverified(
    tmp_path: Path,
) -> None:
    """A peer asking for part 2 gets its bytes while parts 0 and 1 are still missing, all of
    them (a peer verifies the whole blob itself), without waiting for verification."""
    data = os.urandom(300)
    d = _download(tmp_path, data, part_bytes=100)
    reader = asyncio.create_task(_read_all(d.open_peer_reader(200, 299)))
    await _settle()
    assert not reader.done()
    assert d.wanted == {2}, "a part nobody fetches is asked for"
    _write(d, 2, 40)
    await _settle()
    assert not reader.done()
    _write(d, 2)
    assert await reader == data[200:]
    assert not d.verified


async def test_a_peer_reader_is_cut_when_the_download_fails(tmp_path: Path) -> None:
    data = os.urandom(200)
    d = _download(tmp_path, data, part_bytes=100)
    _write(d, 1, 50)
    reader = asyncio.create_task(_read_all(d.open_peer_reader(100, 199)))
    await _settle()
    d.fail(RuntimeError("digest mismatch"))
    with pytest.raises(UpstreamUnavailable):
        await reader
