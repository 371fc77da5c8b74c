"""SingleFlight coalescing and BlobFetch readers, on tmp files (no servers)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from regsidecar.cache.singleflight import BlobFetch, SingleFlight
from regsidecar.errors import UpstreamUnavailable


async def test_concurrent_calls_run_once_and_share_the_result() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    calls = 0
    gate = asyncio.Event()

    async def load() -> int:
        nonlocal calls
        calls += 1
        await gate.wait()
        return 42

    tasks = [asyncio.create_task(flights.do("k", load)) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(*tasks) == [42] * 10
    assert calls == 1


async def test_a_failure_reaches_every_caller_and_the_next_call_retries() -> None:
    flights: SingleFlight[str, int] = SingleFlight()
    gate = asyncio.Event()

    async def boom() -> int:
        await gate.wait()
        raise ValueError("upstream broke")

    tasks = [asyncio.create_task(flights.do("k", boom)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)

    async def ok() -> int:
        return 7

    assert await flights.do("k", ok) == 7


def _fetch(tmp_path: Path, data: bytes) -> BlobFetch:
    temp, final = tmp_path / "tmp" / "x.part", tmp_path / "blobs" / "x"
    temp.parent.mkdir()
    final.parent.mkdir()
    temp.write_bytes(data)
    return BlobFetch("k", len(data), str(temp), str(final))


async def _read_all(it: object) -> bytes:
    return b"".join([c async for c in it])  # type: ignore[attr-defined]


async def test_reader_holds_back_the_last_byte_until_verified(tmp_path: Path) -> None:
    data = os.urandom(1000)
    fetch = _fetch(tmp_path, data)
    fetch.advance(len(data))  # every byte written, not yet verified
    reader = asyncio.create_task(_read_all(fetch.open_reader(0, len(data) - 1)))
    await asyncio.sleep(0.01)
    assert not reader.done(), "a complete response must wait for verification"
    fetch.finish()
    assert await reader == data


async def test_a_failed_download_fails_its_readers(tmp_path: Path) -> None:
    data = os.urandom(1000)
    fetch = _fetch(tmp_path, data)
    fetch.advance(500)
    reader = asyncio.create_task(_read_all(fetch.open_reader(0, len(data) - 1)))
    await asyncio.sleep(0.01)
    fetch.fail(ValueError("digest mismatch"))
    with pytest.raises(UpstreamUnavailable):
        await reader


async def test_reader_opening_between_publish_and_finish_finds_the_final_file(
    tmp_path: Path,
) -> None:
    """The rename runs in a worker thread: a reader arriving after it but before finish()
    must open the published file, not fail on the vanished temp file."""
    data = os.urandom(1000)
    fetch = _fetch(tmp_path, data)
    fetch.advance(len(data))
    os.replace(fetch.temp_path, fetch.final_path)  # published, finish() not yet called
    reader = asyncio.create_task(_read_all(fetch.open_reader(0, len(data) - 1)))
    await asyncio.sleep(0)
    fetch.finish()
    assert await reader == data


def test_reader_of_a_vanished_download_is_told(tmp_path: Path) -> None:
    fetch = _fetch(tmp_path, b"abc")
    os.unlink(fetch.temp_path)
    with pytest.raises(UpstreamUnavailable):
        fetch.open_reader(0, 2)


async def test_a_reader_closed_before_its_first_chunk_lets_go_of_its_file(tmp_path: Path) -> None:
    """A response that fails before sending anything (client gone at prepare) closes its
    reader unread: the file is closed and the fetch no longer counts it as a reader."""
    fetch = _fetch(tmp_path, os.urandom(1000))
    fds_before = len(os.listdir("/proc/self/fd"))
    reader = fetch.open_reader(0, 999)
    assert fetch.readers == 1
    await reader.aclose()  # type: ignore[attr-defined]
    await reader.aclose()  # type: ignore[attr-defined]  # twice is harmless
    assert fetch.readers == 0
    assert len(os.listdir("/proc/self/fd")) == fds_before
