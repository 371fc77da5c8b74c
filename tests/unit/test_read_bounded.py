"""read_bounded collects a body that arrives in pieces (aiohttp's read(n) returns what is
buffered): a manifest larger than one network read must come back whole."""

from __future__ import annotations

from regsidecar.storage.base import read_bounded


class Trickle:
    """A stream that hands out at most ``step`` bytes per read, like a socket buffer."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.step = data, step

    async def read(self, n: int = -1) -> bytes:
        take = min(self.step, n if n >= 0 else len(self.data))
        out, self.data = self.data[:take], self.data[take:]
        return out


async def test_whole_body_from_many_small_reads() -> None:
    body = bytes(range(256)) * 1000
    assert await read_bounded(Trickle(body, 1000), len(body)) == body


async def test_one_byte_over_the_limit_is_reported_not_all_of_it() -> None:
    body = b"x" * 10_000
    got = await read_bounded(Trickle(body, 333), 4096)
    assert len(got) == 4097


async def test_empty_body() -> None:
    assert await read_bounded(Trickle(b"", 10), 100) == b""
