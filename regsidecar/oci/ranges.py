"""HTTP Range parsing for blob requests (RFC 9110 section 14), single ranges only.

>>> parse_range("bytes=0-99", 1000)
ByteRange(start=0, end=99)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from regsidecar.errors import RangeInvalid

# ASCII only (RFC 9110 digits and whitespace); the unit name is case-insensitive.
_RANGE_RE = re.compile(
    r"[ \t]*bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*", re.IGNORECASE
)
_MAX_DIGITS = 19  # anything longer cannot be a real offset; avoids huge int parsing


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive, satisfiable byte range within an object of known size."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """Resolve a ``Range`` header against ``size``.

    Returns None when the whole object should be sent (no header). Raises
    :class:`RangeInvalid` (416, ``Content-Range: bytes */size``) for a malformed, multi-part or
    unsatisfiable range: registries only ever need one range, and a client that sent garbage is
    better told than silently given 200.
    """
    if header is None:
        return None
    m = _RANGE_RE.fullmatch(header)
    if m is None:
        raise RangeInvalid(size, "malformed or multi-part Range header")
    first, last = m.group(1), m.group(2)
    if len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:
        raise RangeInvalid(size, "range offset too large")
    if first == "" and last == "":
        raise RangeInvalid(size, "empty range")
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise RangeInvalid(size)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        raise RangeInvalid(size, "range end before start")
    if start >= size:
        raise RangeInvalid(size)
    return ByteRange(start, end)


# A chunk's Content-Range: the spec's "<start>-<end>"; "bytes <start>-<end>/<total>" (RFC
# 9110) and "bytes=<start>-<end>" are what some clients send instead.
_CHUNK_RE = re.compile(
    r"[ \t]*(?:bytes[ \t]*[ =][ \t]*)?([0-9]{1,19})-([0-9]{1,19})(?:/(?:[0-9]{1,19}|\*))?[ \t]*"
)


def parse_chunk_range(header: str) -> ByteRange:
    """The inclusive range of an upload chunk (PATCH ``Content-Range``).

    >>> parse_chunk_range("0-1023")
    ByteRange(start=0, end=1023)

    Raises :class:`RangeInvalid` (416) when it cannot be read or ends before it starts.
    """
    m = _CHUNK_RE.fullmatch(header)
    if m is None:
        raise RangeInvalid(None, "malformed Content-Range; expected <start>-<end>")
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        raise RangeInvalid(None, "Content-Range ends before it starts")
    return ByteRange(start, end)


_CONTENT_RANGE_RE = re.compile(
    r"[ \t]*bytes[ \t]+([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)[ \t]*"
)


def range_header(start: int, end: int | None) -> dict[str, str]:
    """Request headers for bytes ``start..end`` (inclusive; None: to the end); none for the
    whole object, so a plain GET stays a plain GET.

    >>> range_header(0, None), range_header(5, None), range_header(0, 9)
    ({}, {'Range': 'bytes=5-'}, {'Range': 'bytes=0-9'})
    """
    if start == 0 and end is None:
        return {}
    return {"Range": f"bytes={start}-{'' if end is None else end}"}


def answers_range(status: int, content_range: str | None, start: int, end: int | None) -> bool:
    """Whether a response is exactly the range a :func:`range_header` request asked for: 206
    whose ``Content-Range`` starts at ``start`` (and ends at ``end`` when one was given). A
    server that ignores Range answers 200 with the whole object, whose bytes would otherwise
    land at the wrong offset. A request for the whole object takes 200; an ``end`` past the
    object is answered up to its last byte.

    >>> answers_range(206, "bytes 16-31/40", 16, 31), answers_range(200, None, 16, 31)
    (True, False)
    """
    if start == 0 and end is None:
        return status == 200
    if status != 206 or content_range is None:
        return False
    m = _CONTENT_RANGE_RE.fullmatch(content_range)
    if m is None or int(m.group(1)) != start:
        return False
    if end is None or int(m.group(2)) == end:
        return True
    # An end past the object is answered up to the object's last byte (RFC 9110 14.1.2).
    total = m.group(3)
    return total != "*" and int(m.group(2)) == int(total) - 1 < end
