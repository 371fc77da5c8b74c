"""How many connections this host's downloads may hold to one source: an adaptive window.

Pure: time is injected, nothing sleeps. Part workers report what happens (a connection opened
or closed, bytes received, a throttle or a broken connection); every ``interval_s`` the window
looks at that interval and moves its limit:

* **throttled** (503 SlowDown, 429, 5xx, a reset or timeout): halve the limit at once (at
  most once per interval) — S3 asks for fewer requests; a broken link gets fewer
  connections to break.
* **connections no longer add throughput**: each connection is getting clearly less than one
  connection gets on its own (the best per-connection rate seen), so something they share
  binds (the host's NIC, the source's own limit, this host's CPU): shrink to the connections
  the aggregate rate is worth, plus slack, but not below ``floor`` (what one blob may use:
  this rule is for many blobs piling up connections, and a best rate inflated by a burst —
  nginx's ``limit_rate`` catches up after a stall — must not starve one blob).
* **wanted more and could not** (a download asked for connections beyond the limit) while
  the window was full all interval, with neither of the above: grow by one, up to
  ``maximum`` (additive increase, multiplicative decrease, as TCP).

That is the control loop of TCP Vegas applied to connections: per-connection throughput is
the signal, as round-trip time is Vegas's. A single connection's rate is what S3 gives one
connection (about 85-90 MB/s), so with no shared bottleneck every connection gets it and the
window opens to ``maximum``.

>>> t = [0.0]
>>> w = ConnectionWindow(16, initial=4, now=lambda: t[0])
>>> w.grant(8)          # four may open (and count as open); asking for more marks it wanted
4
>>> w.received(40_000_000); t[0] = 1.0
>>> w.grant(8), w.limit  # full, wanted more, each got its share: the window grows by one
(1, 5)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class ConnectionWindow:
    """The limit on concurrent connections to one source, shared by every download."""

    def __init__(
        self,
        maximum: int,
        *,
        initial: int | None = None,
        floor: int = 1,
        interval_s: float = 0.5,
        slack: float = 0.25,
        decay: float = 0.97,
        smoothing: float = 0.5,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        if maximum < 1:
            raise ValueError("maximum must be >= 1")
        self.maximum = maximum
        self.limit = min(maximum, initial or maximum)
        # Lack of gain alone never shrinks the window below this (what one blob may use):
        # only throttling takes it lower.
        self.floor = max(1, min(floor, maximum))
        self.interval_s = interval_s
        self.slack = slack
        self.decay = decay
        self.smoothing = smoothing
        self._now = now
        self.in_flight = 0
        self.best_per_conn = 0.0  # bytes/s one connection has been seen to get
        self.per_conn = 0.0  # bytes/s each open connection got, smoothed over intervals
        self.rate = 0.0  # bytes/s over the last interval
        self.throttles = 0  # since start (a metric)
        self.changes = 0  # limit changes since start
        t = now()
        self._mark = t  # start of the current interval
        self._last = t  # last time in_flight changed
        self._bytes = 0
        self._conn_s = 0.0  # integral of in_flight over the interval
        self._throttled = 0
        self._last_cut: float | None = None
        self._wanted = False
        # Bytes and time while exactly one connection was open: what one connection gets
        # with nothing to share (the interval averages mix in the moments around it).
        self._solo_bytes = 0
        self._solo_s = 0.0

    # -- events ---------------------------------------------------------------------------

    def _integrate(self) -> float:
        t = self._now()
        dt = max(0.0, t - self._last)
        self._conn_s += self.in_flight * dt
        if self.in_flight == 1:
            self._solo_s += dt
        self._last = t
        return t

    def opened(self) -> None:
        self._integrate()
        self.in_flight += 1

    def closed(self) -> None:
        self._integrate()
        self.in_flight = max(0, self.in_flight - 1)

    def received(self, n: int) -> None:
        self._bytes += n
        if self.in_flight == 1:
            self._solo_bytes += n

    def throttled(self) -> None:
        """Halve the limit at once, as TCP does on a loss; a burst of refusals (every open
        request answered 503 at the same moment) counts once per interval."""
        self._throttled += 1
        self.throttles += 1
        t = self._now()
        if self._last_cut is None or t - self._last_cut >= self.interval_s:
            self._last_cut = t
            if self.limit > 1:
                self.limit = max(1, self.limit // 2)
                self.changes += 1

    # -- decisions ------------------------------------------------------------------------

    def grant(self, want: int) -> int:
        """How many of ``want`` more connections may open now; they count as open from this
        moment (call :meth:`closed` for each when it ends), so downloads asking at the same
        moment cannot all be granted the same room."""
        self._update()
        room = max(0, self.limit - self.in_flight)
        if want > room:
            self._wanted = True
        n = min(want, room)
        for _ in range(n):
            self.opened()
        return n

    def over(self) -> bool:
        """Whether more connections are open than the limit allows (a worker that finishes a
        part then stops instead of taking the next)."""
        self._update()
        return self.in_flight > self.limit

    def _worth(self) -> int:
        """The connections the aggregate rate is worth at the best per-connection rate, plus
        slack, never below the floor."""
        worth = self.rate / self.best_per_conn
        return max(self.floor, math.ceil(worth * (1 + self.slack)))

    def _update(self) -> None:
        t = self._integrate()
        dt = t - self._mark
        if dt < self.interval_s:
            return
        conns = self._conn_s / dt  # mean connections open over the interval
        self.rate = self._bytes / dt
        if conns >= 0.5 and self._bytes > 0:
            # Smoothed over intervals: one interval's rate is noisy (a paced or bursty source,
            # a part starting), and a best taken from raw maxima would sit above what any
            # connection gets, so that every interval looked like a shared bottleneck.
            per_conn = self._bytes / self._conn_s
            a = self.smoothing
            self.per_conn = (
                per_conn if self.per_conn <= 0 else a * per_conn + (1 - a) * self.per_conn
            )
        before = self.limit
        if self._throttled:
            pass  # already halved by throttled(); no growth in an interval with refusals
        elif conns >= 1.5 and self.per_conn * (1 + self.slack) < self.best_per_conn:
            # Congested: never grow; shrink to what the rate is worth, but back to the floor
            # after throttling took the window below it.
            target = self._worth()
            if self.limit > target:
                self.limit = target
            elif self.limit < self.floor and self._wanted and conns >= self.limit - 0.5:
                self.limit += 1
        elif self._wanted and conns >= self.limit - 0.5:
            # Additive increase, and only from a window that was full all interval long: the
            # rates measured are then those of the current limit, not of fewer connections.
            # (Growing faster ran ahead of the measurement: parts last seconds on a slow link,
            # and connections opened before a shrink stay open until their part is done.)
            self.limit = min(self.maximum, self.limit + 1)
        if self.limit != before:
            self.changes += 1
        # The best rate decays only while nobody presses on the window: under load it is
        # the yardstick (decaying then, it would follow the rate down as connections are
        # added, and the window would never stop growing); once idle, a best that conditions
        # no longer give stops holding the next burst down.
        best = self.best_per_conn if self._wanted else self.best_per_conn * self.decay
        if conns >= 0.5 and self._bytes > 0:
            best = max(best, self.per_conn)
        if self._solo_s >= self.interval_s and self._solo_bytes > 0:
            # Time with one connection alone, gathered across intervals until there is
            # enough of it to be a measurement.
            best = max(best, self._solo_bytes / self._solo_s)
            self._solo_bytes = 0
            self._solo_s = 0.0
        self.best_per_conn = best
        self._mark = t
        self._bytes = 0
        self._conn_s = 0.0
        self._throttled = 0
        self._wanted = False
