"""How far the local clock is from S3's: a pure estimator with injected clocks.

S3 refuses a SigV4 request signed more than 15 minutes away from its own clock
(``403 RequestTimeTooSkewed``). A laptop whose VM wakes from sleep, or an instance that boots
before NTP settles, can be hours off. The estimator keeps ``offset = server time - local time``
and the signer uses ``local time + offset``.

Samples come from every S3 response's ``Date`` header (one-second resolution, so a sample is
the middle of that second minus the middle of the request) and from the ``ServerTime`` of a
RequestTimeTooSkewed error. The estimate is the median of the last few samples, so one bad
sample (a proxy's stale Date, a slow response) does not move it.

A step of the local wall clock while running (suspend/resume, ``date --set``, an NTP step) is
seen by comparing the wall clock with the monotonic clock, which does not step: every stored
sample is shifted by the step at once, and :attr:`stale` asks the driver for a fresh sample.

>>> est = SkewEstimator(wall=lambda: 1000.0, monotonic=lambda: 5.0)
>>> est.observe(server_time=1300.0, sent=1000.0, received=1000.0)
>>> est.offset
300.5
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable

# A Date header names a whole second; the server's time was somewhere inside it.
_HALF_SECOND = 0.5


class SkewEstimator:
    """Median offset of recent samples, shifted when the local wall clock steps."""

    def __init__(
        self,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        window: int = 9,
        jump_threshold_s: float = 2.0,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._samples: deque[float] = deque(maxlen=window)
        self._threshold = jump_threshold_s
        self._base = wall() - monotonic()
        self.jumps = 0
        self.stale = True  # no sample yet: the first request should learn the offset

    def _check_jump(self) -> None:
        base = self._wall() - self._monotonic()
        step = base - self._base
        self._base = base
        if abs(step) > self._threshold:
            # The server's clock did not move; ours did, so every offset moves the other way.
            self._samples = deque((s - step for s in self._samples), maxlen=self._samples.maxlen)
            self.jumps += 1
            self.stale = True

    def observe(self, server_time: float, sent: float, received: float) -> None:
        """A response's Date (``server_time``, whole seconds) for a request made between the
        local wall times ``sent`` and ``received``."""
        self._check_jump()
        self._samples.append(server_time + _HALF_SECOND - (sent + received) / 2)
        self.stale = False

    def observe_rejection(self, server_time: float, received: float) -> None:
        """S3 said RequestTimeTooSkewed: our estimate is wrong, so start again from this one.

        The rejection is strong evidence (S3 itself says we are over 15 minutes off), so it
        fills a majority of the window: one odd sample after it (a stale ``Date``) cannot pull
        the median back, while a run of consistent new samples still moves it."""
        self._check_jump()
        self._samples.clear()
        sample = server_time + _HALF_SECOND - received
        majority = (self._samples.maxlen or 1) // 2 + 1
        self._samples.extend([sample] * majority)
        self.stale = False

    @property
    def offset(self) -> float:
        """Seconds to add to the local clock to get S3's (0 before any sample)."""
        self._check_jump()
        return statistics.median(self._samples) if self._samples else 0.0

    @property
    def samples(self) -> int:
        return len(self._samples)

    def now(self) -> float:
        """The corrected wall time, for signing."""
        return self._wall() + self.offset
