"""Retry policy and loop, with injected time, sleep and randomness (no real waiting)."""

from __future__ import annotations

import pytest

from regsidecar.retry import DeadlineExceeded, RetryPolicy, retrying


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, d: float) -> None:
        self.slept.append(d)
        self.t += d


class Transient(Exception):
    pass


def _flaky(failures: int, result: str = "ok") -> object:
    calls = {"n": 0}

    async def call() -> str:
        calls["n"] += 1
        if calls["n"] <= failures:
            raise Transient(f"fail {calls['n']}")
        return result

    call.calls = calls  # type: ignore[attr-defined]
    return call


@pytest.mark.parametrize(
    ("attempt", "cap"), [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)]
)
def test_backoff_is_capped_exponential_with_full_jitter(attempt: int, cap: float) -> None:
    p = RetryPolicy(base_delay_s=0.1, max_delay_s=1.0)
    assert p.backoff(attempt, rand=lambda: 1.0) == pytest.approx(cap)
    assert p.backoff(attempt, rand=lambda: 0.0) == 0.0
    assert p.backoff(attempt, rand=lambda: 0.5) == pytest.approx(cap / 2)


async def test_transient_errors_are_retried_until_success() -> None:
    ft = FakeTime()
    call = _flaky(3)
    seen: list[int] = []
    got = await retrying(
        call,
        RetryPolicy(max_attempts=6),
        transient=lambda e: isinstance(e, Transient),  # type: ignore[arg-type]
        on_retry=lambda e, a, d: seen.append(a),
        now=ft.now,
        sleep=ft.sleep,
        rand=lambda: 1.0,
    )
    assert got == "ok"
    assert call.calls["n"] == 4  # type: ignore[attr-defined]
    assert seen == [0, 1, 2]
    assert ft.slept == pytest.approx([0.1, 0.2, 0.4])


async def test_permanent_errors_are_not_retried() -> None:
    ft = FakeTime()

    async def call() -> str:
        raise KeyError("not there")

    with pytest.raises(KeyError):
        await retrying(
            call,
            RetryPolicy(),
            transient=lambda e: isinstance(e, Transient),
            now=ft.now,
            sleep=ft.sleep,
        )
    assert ft.slept == []


async def test_attempts_are_bounded() -> None:
    ft = FakeTime()
    call = _flaky(100)
    with pytest.raises(Transient, match="fail 3"):
        await retrying(
            call,
            RetryPolicy(max_attempts=3),
            transient=lambda e: isinstance(e, Transient),  # type: ignore[arg-type]
            now=ft.now,
            sleep=ft.sleep,
            rand=lambda: 1.0,
        )
    assert call.calls["n"] == 3  # type: ignore[attr-defined]


async def test_no_retry_sleeps_past_the_deadline() -> None:
    """With 1 s left, a retry that would wait past the deadline is not attempted."""
    ft = FakeTime()
    call = _flaky(100)
    policy = RetryPolicy(max_attempts=100, base_delay_s=0.4, max_delay_s=10.0, deadline_s=1.0)
    with pytest.raises(Transient):
        await retrying(
            call,
            policy,
            transient=lambda e: isinstance(e, Transient),  # type: ignore[arg-type]
            now=ft.now,
            sleep=ft.sleep,
            rand=lambda: 1.0,
        )
    assert sum(ft.slept) <= 1.0
    assert ft.slept == pytest.approx([0.4])


async def test_a_hanging_attempt_is_cut_off_at_the_deadline() -> None:
    import asyncio

    async def hang() -> str:
        await asyncio.sleep(10)
        return "late"

    with pytest.raises(DeadlineExceeded):
        await retrying(hang, RetryPolicy(deadline_s=0.05), transient=lambda e: True)


async def test_calls_made_for_one_request_share_its_deadline() -> None:
    """Three upstream calls in a row for one client request get one deadline between them,
    not one each."""
    from regsidecar.retry import request_deadline

    ft = FakeTime()
    policy = RetryPolicy(max_attempts=100, base_delay_s=0.5, max_delay_s=0.5, deadline_s=30.0)

    async def slow_fail() -> str:
        ft.t += 0.5
        raise Transient("slow and failing")

    with request_deadline(3.0, now=ft.now):
        for _ in range(3):
            with pytest.raises((Transient, DeadlineExceeded)):
                await retrying(
                    slow_fail,
                    policy,
                    transient=lambda e: isinstance(e, Transient),
                    now=ft.now,
                    sleep=ft.sleep,
                    rand=lambda: 1.0,
                )
    assert ft.t <= 3.0 + 0.5, "the three calls together stayed within the request's deadline"
