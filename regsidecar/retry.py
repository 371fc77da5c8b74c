"""Retry policy for upstream calls: capped exponential backoff, full jitter, a deadline.

Pure policy plus one small async loop; time, sleep and randomness are injected, so tests move
time instead of sleeping.

>>> policy = RetryPolicy(max_attempts=4, base_delay_s=0.1, max_delay_s=1.0, deadline_s=5.0)
>>> policy.backoff(3, rand=lambda: 1.0)
0.8
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry one logical upstream call."""

    max_attempts: int = 6
    base_delay_s: float = 0.1
    max_delay_s: float = 2.0
    deadline_s: float = 30.0

    def backoff(self, attempt: int, *, rand: Callable[[], float] = random.random) -> float:
        """Delay before retry number ``attempt + 1`` (attempt counts from 0): "full jitter",
        uniform in [0, min(max, base * 2**attempt)], so a fleet does not retry in lockstep."""
        return rand() * min(self.max_delay_s, self.base_delay_s * 2.0**attempt)


class DeadlineExceeded(TimeoutError):
    """The call's deadline passed before an attempt succeeded."""


# The deadline of the client request being served (a monotonic time), shared by every upstream
# call made for it: retries of three calls in a row must not add up to three deadlines.
_request_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "request_deadline", default=None
)


@contextlib.contextmanager
def request_deadline(
    seconds: float, *, now: Callable[[], float] = time.monotonic
) -> Iterator[None]:
    """Bound every :func:`retrying` call made inside (in this task) to ``seconds`` from now."""
    token = _request_deadline.set(now() + seconds)
    try:
        yield
    finally:
        _request_deadline.reset(token)


async def retrying(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    transient: Callable[[BaseException], bool],
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    now: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rand: Callable[[], float] = random.random,
) -> T:
    """Run ``call`` until it succeeds, fails with a non-transient error, runs out of attempts,
    or would run past the deadline (each attempt is cut off at the deadline too)."""
    deadline = now() + policy.deadline_s
    shared = _request_deadline.get()
    if shared is not None:
        deadline = min(deadline, shared)
    attempt = 0
    while True:
        remaining = deadline - now()
        if remaining <= 0:
            raise DeadlineExceeded(f"deadline of {policy.deadline_s:g} s passed")
        try:
            async with asyncio.timeout(remaining):
                return await call()
        except TimeoutError as exc:
            if now() >= deadline:
                raise DeadlineExceeded(f"deadline of {policy.deadline_s:g} s passed") from exc
            error: BaseException = exc
        except Exception as exc:
            error = exc
        if not transient(error) or attempt + 1 >= policy.max_attempts:
            raise error
        delay = policy.backoff(attempt, rand=rand)
        if now() + delay >= deadline:
            raise error
        if on_retry is not None:
            on_retry(error, attempt, delay)
        attempt += 1
        await sleep(delay)
