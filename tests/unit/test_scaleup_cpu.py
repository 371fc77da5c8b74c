"""CPU sampling math of the scale-up simulation (/proc/stat parsing, busy shares)."""

from __future__ import annotations

import itertools
import time

import pytest

from benchmarks.scaleup.cpu import (
    CpuSampler,
    Stat,
    breakdown,
    busy_fraction,
    parse_stat_line,
    percentile,
    summarize,
)


def test_parse_counts_everything_but_idle_and_iowait_as_busy() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    s = parse_stat_line("cpu  100 5 50 800 20 3 7 15 0 0")
    assert s == Stat(busy=180, total=1000, user=105, system=50, irq=10)
    with pytest.raises(ValueError):
        parse_stat_line("cpu0 1 2 3 4 5 6 7 8")


def test_busy_fraction_is_the_busy_share_of_all_cores_between_two_samples() -> None:
    a = Stat(busy=1000, total=5000)
    b = Stat(busy=1150, total=5200)  # 200 jiffies passed (both cores), 150 busy
    assert busy_fraction(a, b) == pytest.approx(0.75)
    assert busy_fraction(a, a) is None
    assert busy_fraction(a, Stat(busy=1300, total=5200)) == 1.0  # clamped


def test_breakdown_splits_user_system_and_interrupts() -> None:
    a = Stat(busy=0, total=0, user=0, system=0, irq=0)
    b = Stat(busy=60, total=100, user=30, system=20, irq=10)
    assert breakdown(a, b) == {"user": 0.3, "system": 0.2, "irq": 0.1}
    assert breakdown(a, a) == {"user": None, "system": None, "irq": None}


def test_summarize_gives_max_mean_p90_and_count() -> None:
    got = summarize([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert got == {
        "busy_fraction_max": 1.0,
        "busy_fraction_mean": 0.55,
        "busy_fraction_p90": 0.9,
        "samples": 10,
    }
    assert summarize([])["busy_fraction_max"] is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0


def test_sampler_records_one_fraction_per_interval_and_the_cut_short_last_one() -> None:
    # each read: 100 more jiffies in total, 40 of them busy
    counter = itertools.count()

    def read() -> Stat:
        i = next(counter)
        return Stat(busy=40 * i, total=100 * i, user=30 * i, system=10 * i, irq=0)

    sampler = CpuSampler(interval_s=0.01, read=read)
    with sampler:
        end = time.monotonic() + 5
        while len(sampler.fractions) < 3 and time.monotonic() < end:
            time.sleep(0.01)
    summary = sampler.summary()
    assert summary["busy_fraction_max"] == pytest.approx(0.4)
    assert summary["samples"] >= 3
    assert summary["shares"] == {"user": 0.3, "system": 0.1, "irq": 0.0}


def test_sampler_counts_cpu_seconds_per_role_from_the_pids_it_is_given() -> None:
    import os

    sampler = CpuSampler({"me": lambda: [os.getpid()], "nobody": lambda: []}, interval_s=0.01)
    with sampler:
        end = sum(range(2_000_000))  # burn a little CPU while sampled
    assert end > 0
    roles = sampler.by_role_s()
    assert set(roles) == {"me", "nobody"}
    assert roles["nobody"] == 0.0
    assert roles["me"] >= 0.0
