"""The byte ranges of one blob download, and the contiguous prefix they have filled so far.

Pure: no I/O, no clock. A blob of ``size`` bytes is cut into parts of ``part_bytes`` (the last
one shorter). Workers claim parts in order (as aws-c-s3's ranged GET issues them), write what
they fetch at the part's offset and advance it; the **watermark** is the end of the prefix in
which every byte is written, which is what readers and the hasher follow::

    size 40, part_bytes 16:   part 0 [0..15]   part 1 [16..31]   part 2 [32..39]
    written:                  ################ ######.......... ####....
                                                     ^ watermark 22 (part 2's bytes wait)

A part that fails keeps how far it got (``pos``): released, it is claimed again from there.
The first worker of a download may read one open-ended response across part boundaries: it
continues into the next part only while nobody else has touched it (:meth:`PartPlan.claim_next`).

>>> plan = PartPlan(40, 16)
>>> first = plan.claim(); second = plan.claim()
>>> plan.advance(second, 6)
False
>>> plan.advance(first, 16), plan.watermark
(True, 22)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

MiB = 1024 * 1024

# S3's ETag of an object written by a multipart upload: the MD5 of the parts' MD5s, "-", and
# the number of parts. A single PUT's ETag has no suffix; other servers' ETags (nginx's
# "mtime-size" in hex) are not 32 hex digits before the dash.
_MULTIPART_ETAG = re.compile(r'(?:W/)?"?[0-9a-fA-F]{32}-([0-9]{1,5})"?')


def multipart_part_bytes(size: int, etag: str | None) -> int | None:
    """The part size a multipart upload of ``size`` bytes into N parts (from its ETag) used,
    assuming all parts but the last are equal, as every uploader does (distribution's S3
    driver, the AWS CLI, regsidecar's own push). Among the sizes that fit, the smallest whole
    MiB is taken (uploaders pick round sizes); None when the ETag is not a multipart one.

    >>> multipart_part_bytes(100 * MiB, '"0123456789abcdef0123456789abcdef-10"') == 10 * MiB
    True
    >>> multipart_part_bytes(100 * MiB, '"0123456789abcdef0123456789abcdef"') is None
    True
    """
    if not etag or size <= 0:
        return None
    m = _MULTIPART_ETAG.fullmatch(etag.strip())
    if m is None:
        return None
    n = int(m.group(1))
    if n < 2:
        return None  # one part: it is the whole object, nothing to align to
    least = math.ceil(size / n)
    for candidate in (math.ceil(least / MiB) * MiB, least):
        if (n - 1) * candidate < size <= n * candidate:
            return candidate
    return None


def choose_part_bytes(
    size: int,
    default: int,
    hint: int | None,
    *,
    max_parts: int = 0,
    least: int = 5 * MiB,
    most: int = 64 * MiB,
) -> int:
    """Part size for fetching a blob of ``size`` bytes.

    ``default``, or the object's own multipart part size (``hint``) when it is known and
    sensible (AWS: GETs aligned with the upload's parts perform best). With ``max_parts``,
    larger blobs get larger parts, so no blob needs more than that many GETs: when a fleet
    pulls one blob, every host's GETs land on one S3 prefix (about 5,500 GET/s), and there
    the number of requests, not their size, is what runs out. Parts stay whole multiples of
    the upload's part size (aligned) or of 1 MiB.

    >>> choose_part_bytes(100 * MiB, 16 * MiB, 10 * MiB) == 10 * MiB
    True
    >>> choose_part_bytes(100 * MiB, 16 * MiB, 1 * MiB) == 16 * MiB
    True
    >>> choose_part_bytes(1536 * MiB, 16 * MiB, None, max_parts=16) == 96 * MiB
    True
    """
    aligned = hint is not None and least <= hint <= most
    part = hint if aligned and hint is not None else default
    if max_parts > 0 and size > part * max_parts:
        unit = part if aligned else MiB
        part = math.ceil(size / max_parts / unit) * unit
    return part


@dataclass(slots=True)
class Part:
    """Bytes ``start..end`` (inclusive) of the blob; ``pos`` is the next byte to fetch."""

    index: int
    start: int
    end: int
    pos: int
    claimed: bool = False

    @property
    def done(self) -> bool:
        return self.pos > self.end

    @property
    def remaining(self) -> int:
        return self.end + 1 - self.pos

    @property
    def untouched(self) -> bool:
        return self.pos == self.start


class PartPlan:
    """Parts of one blob, who holds which, and the contiguous prefix written so far."""

    def __init__(self, size: int, part_bytes: int) -> None:
        if size < 0 or part_bytes <= 0:
            raise ValueError("size must be >= 0 and part_bytes > 0")
        self.size = size
        self.part_bytes = part_bytes
        self.parts = [
            Part(i, start, min(start + part_bytes, size) - 1, start)
            for i, start in enumerate(range(0, size, part_bytes))
        ]
        self.written = 0  # bytes written in all parts
        self._first_open = 0  # index of the first part not done
        self.watermark = 0

    @property
    def complete(self) -> bool:
        return self.watermark >= self.size

    def unclaimed(self) -> int:
        """Parts nobody holds that still have bytes to fetch."""
        return sum(1 for p in self.parts[self._first_open :] if not p.claimed and not p.done)

    def claimed(self) -> int:
        return sum(1 for p in self.parts[self._first_open :] if p.claimed)

    def claim(self) -> Part | None:
        """The lowest part nobody holds that is not done, now held by the caller."""
        for p in self.parts[self._first_open :]:
            if not p.claimed and not p.done:
                p.claimed = True
                return p
        return None

    def free(self) -> list[Part]:
        """The parts nobody holds that still have bytes to fetch, in order."""
        return [p for p in self.parts[self._first_open :] if not p.claimed and not p.done]

    def take(self, part: Part) -> Part:
        """Hold ``part`` (one of :meth:`free`'s)."""
        if part.claimed or part.done:
            raise ValueError(f"part {part.index} is not free")
        part.claimed = True
        return part

    def written_from(self, pos: int) -> int:
        """The end (exclusive) of the bytes written without a gap from ``pos``: what a
        reader of any range may have now, parts written out of order included.

        >>> plan = PartPlan(40, 16)
        >>> plan.advance(plan.parts[1], 6)
        False
        >>> plan.written_from(0), plan.written_from(16), plan.written_from(18)
        (0, 22, 22)
        """
        cur = max(pos, self.watermark)
        while cur < self.size:
            part = self.parts[cur // self.part_bytes]
            if part.pos <= cur:
                break
            cur = part.pos  # part written up to here; on into the next part if it is done
        return min(cur, self.size)

    def claim_next(self, part: Part) -> Part | None:
        """The part right after ``part``, for a response that runs on past ``part``'s end:
        only if nobody holds it and nothing of it was fetched yet (the response's bytes are
        its bytes from its first one)."""
        i = part.index + 1
        if i >= len(self.parts):
            return None
        nxt = self.parts[i]
        if nxt.claimed or not nxt.untouched:
            return None
        nxt.claimed = True
        return nxt

    def release(self, part: Part) -> None:
        """Give a part back (its worker stopped); what it fetched stays fetched."""
        part.claimed = False

    def tail_free(self, part: Part) -> bool:
        """Whether every part after ``part`` is untouched and held by nobody, so one
        open-ended request from ``part.pos`` may fetch the rest of the blob."""
        return all(not p.claimed and p.untouched for p in self.parts[part.index + 1 :])

    def advance(self, part: Part, n: int) -> bool:
        """Record ``n`` bytes written at ``part.pos``; True when the watermark moved."""
        if n < 0 or n > part.remaining:
            raise ValueError(f"{n} bytes do not fit part {part.index} ({part.remaining} left)")
        part.pos += n
        self.written += n
        if part.index != self._first_open:
            return False
        while self._first_open < len(self.parts) and self.parts[self._first_open].done:
            self._first_open += 1
        before = self.watermark
        if self._first_open < len(self.parts):
            self.watermark = self.parts[self._first_open].pos
        else:
            self.watermark = self.size
        return self.watermark != before
