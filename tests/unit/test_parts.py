"""PartPlan (claims, watermark, open-ended continuation) and part sizes from S3 ETags."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regsidecar.pull.parts import (
    MiB,
    PartPlan,
    choose_part_bytes,
    multipart_part_bytes,
)

MD5 = "0123456789abcdef0123456789abcdef"


def test_parts_cover_the_blob_exactly_with_a_shorter_last_part() -> None:
    plan = PartPlan(40, 16)
    assert [(p.start, p.end) for p in plan.parts] == [(0, 15), (16, 31), (32, 39)]


def test_an_empty_blob_has_no_parts_and_is_complete() -> None:
    plan = PartPlan(0, 16)
    assert plan.parts == [] and plan.complete and plan.claim() is None


def test_claims_go_in_order_and_skip_held_and_done_parts() -> None:
    plan = PartPlan(64, 16)
    a, b = plan.claim(), plan.claim()
    assert a is not None and b is not None and (a.index, b.index) == (0, 1)
    plan.advance(a, 16)
    plan.release(a)
    c = plan.claim()
    assert c is not None and c.index == 2, "a done part is never handed out again"
    assert plan.unclaimed() == 1 and plan.claimed() == 2


def test_the_watermark_is_the_contiguous_prefix_only() -> None:
    plan = PartPlan(48, 16)
    p0, p1, p2 = plan.claim(), plan.claim(), plan.claim()
    assert p0 and p1 and p2
    assert plan.advance(p2, 16) is False and plan.watermark == 0
    assert plan.advance(p1, 16) is False and plan.watermark == 0
    assert plan.advance(p0, 10) is True and plan.watermark == 10
    assert plan.advance(p0, 6) is True and plan.watermark == 48
    assert plan.complete and plan.written == 48


def test_a_released_part_resumes_from_where_it_got_to() -> None:
    plan = PartPlan(32, 16)
    p0 = plan.claim()
    assert p0 is not None
    plan.advance(p0, 5)
    plan.release(p0)
    again = plan.claim()
    assert again is p0 and again.pos == 5 and again.remaining == 11


def test_an_open_ended_response_continues_only_into_untouched_free_parts() -> None:
    plan = PartPlan(64, 16)
    p0 = plan.claim()
    assert p0 is not None
    assert plan.tail_free(p0)
    p2 = plan.parts[2]
    p2.claimed = True
    assert not plan.tail_free(p0), "someone holds a later part"
    plan.advance(p0, 16)
    p1 = plan.claim_next(p0)
    assert p1 is not None and p1.index == 1
    plan.advance(p1, 16)
    assert plan.claim_next(p1) is None, "part 2 is held: the response stops at part 1's end"
    last = plan.parts[3]
    assert plan.claim_next(last) is None


def test_a_touched_part_is_not_continued_into() -> None:
    plan = PartPlan(32, 16)
    p0, p1 = plan.claim(), plan.claim()
    assert p0 and p1
    plan.advance(p1, 3)
    plan.release(p1)
    plan.advance(p0, 16)
    assert plan.claim_next(p0) is None, "its first bytes are not the response's next bytes"


def test_advance_refuses_bytes_past_a_parts_end() -> None:
    plan = PartPlan(20, 16)
    p0 = plan.claim()
    assert p0 is not None
    with pytest.raises(ValueError):
        plan.advance(p0, 17)


@settings(deadline=None, max_examples=60)
@given(
    size=st.integers(1, 3000),
    part=st.integers(8, 700),
    order=st.randoms(use_true_random=False),
)
def test_any_order_of_writes_ends_complete_with_a_monotonic_watermark(
    size: int, part: int, order: object
) -> None:
    plan = PartPlan(size, part)
    held = []
    while (p := plan.claim()) is not None:
        held.append(p)
    marks = [0]
    while any(not p.done for p in held):
        p = order.choice([p for p in held if not p.done])  # type: ignore[attr-defined]
        plan.advance(p, min(p.remaining, order.randint(1, part)))  # type: ignore[attr-defined]
        marks.append(plan.watermark)
        assert plan.watermark <= plan.written
    assert marks == sorted(marks) and plan.complete and plan.written == size


@pytest.mark.parametrize(
    ("size", "parts", "expected"),
    [
        (100 * MiB, 10, 10 * MiB),
        (95 * MiB, 10, 10 * MiB),  # a short last part
        (90 * MiB + 1, 10, 10 * MiB),
        (256 * MiB, 16, 16 * MiB),  # regsidecar's own push
        (257 * MiB, 26, 10 * MiB),  # distribution's S3 driver (10 MiB chunks)
        (20 * MiB, 2, 10 * MiB),  # ambiguous (16 MiB would fit too): the smallest round one
    ],
)
def test_multipart_part_size_from_the_etag(size: int, parts: int, expected: int) -> None:
    assert multipart_part_bytes(size, f'"{MD5}-{parts}"') == expected


@pytest.mark.parametrize(
    "etag",
    [None, "", f'"{MD5}"', f'"{MD5}-1"', '"63a1b2c3-10000000"', f'"{MD5}-x"', "garbage"],
)
def test_etags_that_do_not_tell_a_part_size(etag: str | None) -> None:
    assert multipart_part_bytes(64 * MiB, etag) is None


def test_a_part_count_that_cannot_fit_the_size_is_ignored() -> None:
    assert multipart_part_bytes(10, f'"{MD5}-50"') is None


def test_part_size_hint_is_used_only_within_bounds() -> None:
    assert choose_part_bytes(100 * MiB, 16 * MiB, 8 * MiB) == 8 * MiB
    assert choose_part_bytes(100 * MiB, 16 * MiB, None) == 16 * MiB
    assert choose_part_bytes(100 * MiB, 16 * MiB, 4 * MiB) == 16 * MiB
    assert choose_part_bytes(10 * 1024 * MiB, 16 * MiB, 512 * MiB) == 16 * MiB


@pytest.mark.parametrize(
    ("size", "hint", "max_parts", "expected"),
    [
        (256 * MiB, None, 16, 16 * MiB),  # 16 parts: the default size
        (257 * MiB, None, 16, 17 * MiB),  # one more MiB: parts grow to whole MiB
        (1536 * MiB, None, 16, 96 * MiB),
        (1536 * MiB, None, 0, 16 * MiB),  # no bound
        (1000 * MiB, 10 * MiB, 16, 70 * MiB),  # aligned: a multiple of the upload's parts
        (100 * MiB, 10 * MiB, 16, 10 * MiB),
    ],
)
def test_big_blobs_get_bigger_parts_so_no_blob_needs_more_than_max_parts(
    size: int, hint: int | None, max_parts: int, expected: int
) -> None:
    part = choose_part_bytes(size, 16 * MiB, hint, max_parts=max_parts)
    assert part == expected
    if max_parts:
        assert -(-size // part) <= max_parts


def test_written_from_follows_each_part_past_the_prefix() -> None:
    plan = PartPlan(40, 10)
    assert plan.written_from(0) == 0
    plan.advance(plan.parts[2], 10)  # [20, 30)
    plan.advance(plan.parts[3], 4)  # [30, 34)
    assert plan.written_from(20) == 34  # runs on into part 3
    assert plan.written_from(25) == 34
    assert plan.written_from(10) == 10  # part 1: nothing yet
    plan.advance(plan.parts[0], 10)
    assert plan.written_from(0) == 10  # the prefix stops at part 1
    assert plan.written_from(5) == 10
    assert plan.written_from(40) == 40


def test_free_and_take() -> None:
    plan = PartPlan(30, 10)
    first = plan.claim()
    assert [p.index for p in plan.free()] == [1, 2]
    plan.take(plan.parts[2])
    assert [p.index for p in plan.free()] == [1]
    with pytest.raises(ValueError):
        plan.take(first)  # type: ignore[arg-type]
