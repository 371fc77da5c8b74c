"""Intake (pure): is this host's link busy with other responses?"""

from __future__ import annotations

from regsidecar.pull.intake import BUCKET_S, HISTORY_S, Intake


def _feed(intake: Intake, t: list[float], seconds: float, per_s: int) -> None:
    for _ in range(round(seconds / BUCKET_S)):
        intake.add(round(per_s * BUCKET_S))
        t[0] += BUCKET_S


def test_busy_is_relative_to_the_best_window_seen() -> None:
    t = [100.0]
    intake = Intake(now=lambda: t[0])
    assert intake.busy(5.0) is False  # nothing yet
    _feed(intake, t, 10, 1_000_000)  # 10 s at 1 MB/s
    assert intake.busy(5.0) is True
    _feed(intake, t, 5, 600_000)  # the last 5 s at 60 % of the best
    assert intake.busy(5.0) is True
    _feed(intake, t, 5, 300_000)  # the last 5 s at 30 %
    assert intake.busy(5.0) is False
    assert intake.busy(5.0, share=0.25) is True


def test_a_slow_link_that_keeps_its_pace_is_busy_and_history_is_bounded() -> None:
    t = [0.0]
    intake = Intake(now=lambda: t[0])
    _feed(intake, t, 30, 10_000)  # 10 kB/s, steadily: the link is as full as it gets
    assert intake.busy(5.0) is True
    _feed(intake, t, HISTORY_S + 10, 1_000)  # a long quiet stretch: the old peak is forgotten
    assert intake.busy(5.0) is True
    assert len(intake._buckets) <= HISTORY_S / BUCKET_S + 1
