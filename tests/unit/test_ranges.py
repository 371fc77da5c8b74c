"""Range header parsing for blob GETs: one satisfiable range, or RANGE_INVALID 416."""

from __future__ import annotations

import pytest

from regsidecar.errors import RangeInvalid
from regsidecar.oci.ranges import ByteRange, answers_range, parse_range, range_header


def test_no_header_means_the_whole_object() -> None:
    assert parse_range(None, 1000) is None


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-99", 1000, ByteRange(0, 99)),
        ("bytes=0-0", 1000, ByteRange(0, 0)),
        ("bytes=999-999", 1000, ByteRange(999, 999)),
        ("bytes=10-", 1000, ByteRange(10, 999)),
        ("bytes=0-", 1000, ByteRange(0, 999)),
        ("bytes=999-", 1000, ByteRange(999, 999)),
        ("bytes=0-", 1, ByteRange(0, 0)),
        ("bytes=-1", 1000, ByteRange(999, 999)),
        ("bytes=-100", 1000, ByteRange(900, 999)),
        ("bytes=-1000", 1000, ByteRange(0, 999)),
        # A suffix longer than the object is the whole object.
        ("bytes=-5000", 1000, ByteRange(0, 999)),
        # An end past the object is clipped to its last byte.
        ("bytes=0-1000", 1000, ByteRange(0, 999)),
        ("bytes=500-123456789", 1000, ByteRange(500, 999)),
        ("bytes=5-5000", 10, ByteRange(5, 9)),
        # 19 digits is still a number; it is clipped like any other end.
        ("bytes=0-9999999999999999999", 1000, ByteRange(0, 999)),
        ("bytes=-9999999999999999999", 1000, ByteRange(0, 999)),
        ("bytes=0000-0009", 1000, ByteRange(0, 9)),
        # Whitespace around the parts is tolerated.
        (" bytes=0-9 ", 1000, ByteRange(0, 9)),
        ("bytes = 0 - 9", 1000, ByteRange(0, 9)),
        ("bytes=\t10-", 1000, ByteRange(10, 999)),
    ],
)
def test_satisfiable_ranges_resolve_against_the_size(
    header: str, size: int, expected: ByteRange
) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [
        # start at or past the end
        ("bytes=1000-", 1000),
        ("bytes=1000-1000", 1000),
        ("bytes=5000-6000", 1000),
        # zero-length object: nothing is satisfiable
        ("bytes=0-", 0),
        ("bytes=0-0", 0),
        ("bytes=-1", 0),
        # a zero-length suffix
        ("bytes=-0", 1000),
        # reversed
        ("bytes=10-5", 1000),
        ("bytes=1-0", 1000),
        # multi-range: registries only serve one range
        ("bytes=0-1,5-6", 1000),
        ("bytes=0-1, 5-6", 1000),
        # garbage
        ("", 1000),
        ("bytes", 1000),
        ("bytes=", 1000),
        ("bytes=-", 1000),
        ("bytes=a-b", 1000),
        ("bytes=0x10-", 1000),
        ("bytes=1.5-2", 1000),
        ("bytes=+1-2", 1000),
        ("bytes=-1-2", 1000),
        ("bytes=--1", 1000),
        ("bytes 0-9", 1000),
        ("bytes:0-9", 1000),
        ("items=0-9", 1000),
        ("0-9", 1000),
        ("bytes=0-9;x", 1000),
        # too many digits to be a real offset
        ("bytes=10000000000000000000-", 1000),
        ("bytes=0-10000000000000000000", 1000),
        ("bytes=-10000000000000000000", 1000),
        ("bytes=" + "9" * 5000 + "-", 1000),
    ],
)
def test_unsatisfiable_or_malformed_ranges_raise_416_with_the_size(header: str, size: int) -> None:
    with pytest.raises(RangeInvalid) as info:
        parse_range(header, size)
    err = info.value
    assert (err.code, err.status) == ("RANGE_INVALID", 416)
    assert err.size == size
    assert err.headers == {"Content-Range": f"bytes */{size}"}


@pytest.mark.parametrize(
    "header",
    [
        "bytes=\u0660-\u0669",  # ARABIC-INDIC DIGIT ZERO..NINE
        "bytes=\uff10-\uff15",  # FULLWIDTH DIGIT ZERO..FIVE
    ],
)
def test_non_ascii_digits_are_not_offsets(header: str) -> None:
    with pytest.raises(RangeInvalid):
        parse_range(header, 100)


@pytest.mark.parametrize("header", ["Bytes=0-9", "BYTES=0-9"])
def test_range_unit_is_case_insensitive(header: str) -> None:
    assert parse_range(header, 100) == ByteRange(0, 9)


@pytest.mark.parametrize(
    ("rng", "size", "length", "content_range"),
    [
        (ByteRange(0, 99), 1000, 100, "bytes 0-99/1000"),
        (ByteRange(0, 0), 1, 1, "bytes 0-0/1"),
        (ByteRange(999, 999), 1000, 1, "bytes 999-999/1000"),
        (ByteRange(10, 999), 1000, 990, "bytes 10-999/1000"),
    ],
)
def test_length_and_content_range_are_inclusive(
    rng: ByteRange, size: int, length: int, content_range: str
) -> None:
    assert rng.length == length
    assert rng.content_range(size) == content_range


@pytest.mark.parametrize(("header", "size"), [("bytes=0-", 7), ("bytes=-3", 7), ("bytes=2-4", 7)])
def test_parsed_range_always_lies_inside_the_object(header: str, size: int) -> None:
    rng = parse_range(header, size)
    assert rng is not None
    assert 0 <= rng.start <= rng.end < size
    assert rng.length == len(bytes(range(size))[rng.start : rng.end + 1])


@pytest.mark.parametrize(
    ("status", "content_range", "start", "end", "ok"),
    [
        (200, None, 0, None, True),
        (206, "bytes 0-99/100", 0, None, False),  # a whole-object GET is a 200
        (206, "bytes 16-31/40", 16, 31, True),
        (200, None, 16, 31, False),  # Range ignored: the whole object at offset 0
        (206, "bytes 0-31/40", 16, 31, False),
        (206, "bytes 16-20/40", 16, 31, False),  # shorter than asked
        (206, "bytes 16-39/40", 16, None, True),
        (206, "bytes 16-39/40", 16, 1000, True),  # an end past the object
        (206, "bytes 16-38/40", 16, 1000, False),
        (206, "bytes 16-39/*", 16, 1000, False),
        (206, "garbage", 16, 31, False),
        (206, None, 16, 31, False),
    ],
)
def test_answers_range(
    status: int, content_range: str | None, start: int, end: int | None, ok: bool
) -> None:
    assert answers_range(status, content_range, start, end) is ok


def test_range_header_only_when_a_range_is_wanted() -> None:
    assert range_header(0, None) == {}
    assert range_header(0, 0) == {"Range": "bytes=0-0"}
    assert range_header(7, None) == {"Range": "bytes=7-"}
