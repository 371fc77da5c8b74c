"""ConnectionWindow: grows while connections each get their share, shrinks when they stop
adding throughput or the source throttles. Time is moved, never slept."""

from __future__ import annotations

import pytest

from regsidecar.pull.window import ConnectionWindow

MB = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def run(
    w: ConnectionWindow,
    clock: Clock,
    conns: int,
    per_conn: float,
    seconds: float,
    shared: float | None = None,
) -> None:
    """For ``seconds``, in 0.1 s steps: hold ``conns`` connections open (at most the limit,
    as downloads that fill the window do), each receiving ``per_conn`` bytes/s, all of them
    together at most ``shared`` bytes/s (a NIC), asking for one more than the limit each
    step, as a busy host does."""
    for _ in range(round(seconds / 0.1)):
        want = min(conns, w.limit)
        while w.in_flight < want:
            w.opened()
        while w.in_flight > want:
            w.closed()
        clock.t += 0.1
        rate = w.in_flight * per_conn
        if shared is not None:
            rate = min(rate, shared)
        w.received(int(rate * 0.1))
        w.grant(w.limit + 1)


def test_grant_is_bounded_by_the_limit_and_the_connections_open() -> None:
    """What is granted counts as open at once: downloads asking at the same moment (before
    any of their connections has started) cannot all be granted the same room."""
    clock = Clock()
    w = ConnectionWindow(8, initial=4, now=clock)
    w.opened()  # a download's first connection, never refused
    assert w.grant(7) == 3 and w.in_flight == 4
    assert w.grant(7) == 0, "a second download asking now gets nothing"
    w.closed()
    assert w.grant(5) == 1 and w.in_flight == 4


def test_grows_while_every_connection_gets_what_one_gets_alone() -> None:
    """Each connection capped at 40 MB/s by the source (S3's per-connection limit), no
    shared bottleneck: the window opens up to its maximum."""
    clock = Clock()
    w = ConnectionWindow(32, initial=4, now=clock)
    run(w, clock, 1, 40 * MB, 1.0)  # a lone connection shows what one gets
    run(w, clock, 64, 40 * MB, 20.0)
    assert w.limit == 32


def test_shrinks_when_more_connections_share_one_bottleneck() -> None:
    """A 100 MB/s NIC and 40 MB/s per connection: 8 connections get 12.5 MB/s each, so the
    window falls to about what 100 MB/s is worth (2.5 connections), plus slack; however long
    the load lasts, it stays there."""
    clock = Clock()
    w = ConnectionWindow(32, initial=8, now=clock)
    run(w, clock, 1, 40 * MB, 1.0)
    run(w, clock, 64, 40 * MB, 0.6, shared=100 * MB)
    assert w.limit <= 4
    assert 3 <= w.limit <= 4
    run(w, clock, 64, 40 * MB, 60.0, shared=100 * MB)
    assert 3 <= w.limit <= 4
    assert w.grant(8) == 0 or w.in_flight < w.limit


def test_halves_on_throttling_and_never_below_one() -> None:
    clock = Clock()
    w = ConnectionWindow(32, initial=16, now=clock)
    for expected in (8, 4, 2, 1, 1):
        w.throttled()
        clock.t += 0.6
        w.grant(1)
        assert w.limit == expected
    assert w.throttles == 5


def test_recovers_after_throttling_stops() -> None:
    clock = Clock()
    w = ConnectionWindow(16, initial=16, now=clock)
    w.throttled()
    clock.t += 0.6
    w.grant(1)
    assert w.limit == 8
    run(w, clock, 64, 40 * MB, 6.0)
    assert w.limit == 16


def test_a_burst_of_throttles_halves_once_per_interval() -> None:
    """Every open request refused at the same moment is one signal, not eight."""
    clock = Clock()
    w = ConnectionWindow(16, initial=8, now=clock)
    for _ in range(8):
        w.throttled()
    assert w.limit == 4 and w.throttles == 8
    clock.t += 0.2
    w.throttled()
    assert w.limit == 4
    clock.t += 0.4
    w.throttled()
    assert w.limit == 2


def test_over_tells_a_worker_to_stop_once_the_limit_fell() -> None:
    clock = Clock()
    w = ConnectionWindow(16, initial=4, now=clock)
    for _ in range(4):
        w.opened()
    assert not w.over()
    w.throttled()
    clock.t += 0.6
    assert w.over() and w.limit == 2


def test_an_idle_window_does_not_grow() -> None:
    """Nobody asked for more than the limit: no evidence more would help."""
    clock = Clock()
    w = ConnectionWindow(16, initial=4, now=clock)
    w.opened()
    for _ in range(10):
        clock.t += 0.5
        w.received(20 * MB)
        w.grant(0)
    assert w.limit == 4


@pytest.mark.parametrize("bad", [0, -1])
def test_maximum_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError):
        ConnectionWindow(bad)


def test_holds_near_what_a_shared_limit_is_worth() -> None:
    """8 Mbit/s host, 1 Mbit/s per connection (the scale-up sweep's caps): wanting far more,
    the window settles around the 8 connections the host can feed, never far above."""
    clock = Clock()
    w = ConnectionWindow(32, initial=8, now=clock)
    run(w, clock, 1, 125_000, 1.0)
    seen = []
    for _ in range(120):  # 60 s in 0.5 s slices
        run(w, clock, 64, 125_000, 0.5, shared=1_000_000)
        seen.append(w.limit)
    assert max(seen) <= 11 and min(seen[10:]) >= 8, seen


def test_the_best_rate_is_forgotten_only_while_idle() -> None:
    """Under load the best per-connection rate holds (it is the yardstick); idle, it decays,
    so a best that conditions no longer give does not hold the next burst down."""
    clock = Clock()
    w = ConnectionWindow(32, initial=8, now=clock)
    run(w, clock, 1, 40 * MB, 1.0)
    run(w, clock, 64, 40 * MB, 30.0, shared=100 * MB)
    assert w.best_per_conn == pytest.approx(40 * MB, rel=0.01)
    for _ in range(100):  # 50 s, nobody asks for more
        clock.t += 0.5
        w.grant(0)
    assert w.best_per_conn < 40 * MB * 0.1


def test_noisy_rates_at_the_per_connection_cap_do_not_read_as_a_shared_bottleneck() -> None:
    """A paced source (nginx limit_rate) delivers each connection's capped rate in bursts:
    interval by interval it reads 75-125 % of the cap. The window must not take the
    bursts' maxima for what a connection gets and shrink a window nobody is short of."""
    clock = Clock()
    w = ConnectionWindow(32, initial=8, now=clock)
    run(w, clock, 1, 125_000, 1.0)
    for i in range(60):
        noise = (0.75, 1.25, 1.0, 0.9, 1.1)[i % 5]
        run(w, clock, 64, 125_000 * noise, 0.5)
    assert w.limit >= 16, w.limit


def test_lack_of_gain_never_shrinks_below_the_floor_but_throttling_does() -> None:
    """The floor (what one blob may use) bounds the shrink for lack of gain; a burst above
    the per-connection cap (nginx's limit_rate catching up after a stall) inflating the best
    rate must not hold one blob's window down. Throttling still goes below it, and the window
    climbs back to the floor at once afterwards."""
    clock = Clock()
    w = ConnectionWindow(32, initial=8, floor=8, now=clock)
    run(w, clock, 1, 178_000, 1.0)  # a catch-up burst taken as what one connection gets
    run(w, clock, 64, 125_000, 10.0, shared=1_000_000)
    assert w.limit >= 8
    w.throttled()
    clock.t += 0.6
    w.throttled()
    assert w.limit == 2
    run(w, clock, 64, 125_000, 5.0, shared=1_000_000)
    assert w.limit >= 8
