"""The clock-skew estimator, with clocks the tests move (no sleeping)."""

from __future__ import annotations

import pytest

from regsidecar.clock.skew import SkewEstimator


class Clocks:
    """A wall clock and a monotonic clock the test controls; ``step`` moves only the wall."""

    def __init__(self, wall: float = 1_800_000_000.0) -> None:
        self.wall = wall
        self.mono = 1000.0

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def step(self, seconds: float) -> None:
        self.wall += seconds

    def estimator(self, **kw: float) -> SkewEstimator:
        return SkewEstimator(wall=lambda: self.wall, monotonic=lambda: self.mono, **kw)  # type: ignore[arg-type]


def _answer(est: SkewEstimator, clocks: Clocks, true_offset: float, rtt: float = 0.02) -> None:
    """One S3 response: Date is the server's whole second when it answered mid-request."""
    sent = clocks.wall
    clocks.tick(rtt)
    server = int(sent + rtt / 2 + true_offset)
    est.observe(float(server), sent, clocks.wall)


def test_no_samples_means_no_correction_and_a_request_for_one() -> None:
    est = Clocks().estimator()
    assert est.offset == 0.0
    assert est.stale
    assert est.samples == 0


@pytest.mark.parametrize("true_offset", [0.0, 1200.0, -7200.0, 86400.0, -3.3])
def test_offset_converges_within_a_second(true_offset: float) -> None:
    """Date headers have one-second resolution; the estimate is within a second of the truth."""
    clocks = Clocks()
    est = clocks.estimator()
    for _ in range(9):
        _answer(est, clocks, true_offset)
        clocks.tick(0.37)
    assert abs(est.offset - true_offset) <= 1.0
    assert not est.stale
    assert abs(est.now() - (clocks.wall + true_offset)) <= 1.0


def test_one_bad_sample_does_not_move_the_estimate() -> None:
    """A proxy's stale Date or a very slow response is outvoted by the median."""
    clocks = Clocks()
    est = clocks.estimator()
    for _ in range(4):
        _answer(est, clocks, 600.0)
    before = est.offset
    est.observe(clocks.wall - 5000.0, clocks.wall, clocks.wall)  # wildly wrong
    assert abs(est.offset - before) < 0.1  # the median stays among the good samples


def test_window_forgets_old_samples() -> None:
    clocks = Clocks()
    est = clocks.estimator(window=3)
    for _ in range(3):
        _answer(est, clocks, 100.0)
    for _ in range(3):
        _answer(est, clocks, 400.0)  # e.g. the server's clock was corrected
    assert abs(est.offset - 400.0) <= 1.0


def test_rejection_replaces_the_estimate() -> None:
    """RequestTimeTooSkewed means the estimate is wrong: its ServerTime wins outright."""
    clocks = Clocks()
    est = clocks.estimator()
    for _ in range(5):
        _answer(est, clocks, 0.0)
    est.observe_rejection(clocks.wall + 1800.0, clocks.wall)
    assert abs(est.offset - 1800.0) <= 1.0


def test_one_stale_date_after_a_rejection_does_not_undo_it() -> None:
    """A proxy or server that still sends the old Date right after the rejection is outvoted,
    but a run of consistent new samples moves the estimate."""
    clocks = Clocks()
    est = clocks.estimator(window=9)
    est.observe_rejection(clocks.wall + 7200.0, clocks.wall)
    _answer(est, clocks, 0.0)  # stale
    assert abs(est.offset - 7200.0) <= 1.0
    for _ in range(9):
        _answer(est, clocks, 300.0)
    assert abs(est.offset - 300.0) <= 1.0


@pytest.mark.parametrize("jump", [3600.0, -7200.0, 30.0])
def test_local_clock_step_shifts_the_estimate_at_once(jump: float) -> None:
    """Suspend/resume or date --set moves the wall clock but not the monotonic one: the
    estimate follows immediately, before any new sample, and asks for a fresh one."""
    clocks = Clocks()
    est = clocks.estimator()
    for _ in range(5):
        _answer(est, clocks, 250.0)
    server_now = est.now()
    clocks.step(jump)
    assert abs(est.now() - server_now) < 0.1, "the corrected time did not move"
    assert abs(est.offset - (250.0 - jump)) <= 1.0
    assert est.stale
    assert est.jumps == 1
    _answer(est, clocks, 250.0 - jump)
    assert not est.stale


def test_small_drift_is_not_a_jump() -> None:
    """NTP slewing or timer jitter below the threshold is left to new samples."""
    clocks = Clocks()
    est = clocks.estimator(jump_threshold_s=2.0)
    _answer(est, clocks, 10.0)
    for _ in range(10):
        clocks.step(0.15)
        clocks.tick(1.0)
        _ = est.offset
    assert est.jumps == 0
    assert not est.stale


def test_samples_within_one_request_average_send_and_receive() -> None:
    """The server answered somewhere in the request: the sample uses its midpoint."""
    clocks = Clocks(wall=1000.0)
    est = clocks.estimator()
    est.observe(server_time=1100.0, sent=1000.0, received=1002.0)
    assert est.offset == pytest.approx(1100.5 - 1001.0)
