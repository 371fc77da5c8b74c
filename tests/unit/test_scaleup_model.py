"""The capacity model: fits recover known parameters, extrapolations match hand arithmetic,
and every number in its Markdown says whether it is measured, stated or modelled."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from benchmarks.scaleup import model
from benchmarks.scaleup.model import (
    GIB,
    MBIT,
    Point,
    RealWorld,
    analyse,
    extrapolate,
    fit_central,
    fit_sidecar,
    requests_per_pull,
)

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "bench" / "scaleup.json"
S = 50 * 2**20


def _central(n: int, t0: float = 2.0, bc: float = 19e6, bh: float | None = 2e6) -> float:
    return t0 + max(n * S / bc, S / bh if bh else 0.0)


def test_central_fit_recovers_t0_and_bandwidth_across_the_host_bound_kink() -> None:
    """Points on both sides of N = B_central / B_host give back t0 and B_central exactly."""
    pts = [Point(n, _central(n)) for n in (1, 5, 10, 20, 40)]
    fit = fit_central(pts, S, b_host=2e6)
    m = fit.model
    assert isinstance(m, model.CentralModel)
    assert m.t0_s == pytest.approx(2.0, abs=1e-6)
    assert m.b_central == pytest.approx(19e6, rel=1e-6)
    assert fit.rms_s == pytest.approx(0.0, abs=1e-6)


def test_central_fit_without_host_bound_is_a_straight_line() -> None:
    pts = [Point(n, _central(n, t0=0.5, bc=40e6, bh=None)) for n in (2, 4, 8)]
    m = fit_central(pts, S, b_host=None).model
    assert isinstance(m, model.CentralModel)
    assert (m.t0_s, m.b_central) == (pytest.approx(0.5), pytest.approx(40e6))


def test_central_fit_with_noise_stays_close_and_reports_residuals() -> None:
    rng = random.Random(6)
    ns = [1, 5, 10, 20, 40, 40, 20]
    pts = [Point(n, _central(n) * rng.uniform(0.97, 1.03)) for n in ns]
    fit = fit_central(pts, S, b_host=2e6)
    m = fit.model
    assert isinstance(m, model.CentralModel)
    assert m.b_central == pytest.approx(19e6, rel=0.05)
    assert len(fit.residuals) == len(pts)
    assert fit.residuals == tuple(p.seconds - m.time(p.n, S) for p in pts)
    assert 0 < fit.rms_s < 2.0


def test_central_fit_never_gives_a_negative_overhead() -> None:
    """Points on a line through a negative intercept: t0 is held at 0 and B refitted."""
    pts = [Point(n, n * S / 19e6 - 1.0) for n in (10, 20, 40)]
    m = fit_central(pts, S, b_host=None).model
    assert isinstance(m, model.CentralModel)
    assert m.t0_s == 0.0 and m.b_central > 19e6


def test_flat_central_points_mean_no_bandwidth_bound() -> None:
    """A registry that does not slow down with N: B_central is infinite, t0 is the level."""
    pts = [Point(n, 30.0) for n in (1, 10, 40)]
    m = fit_central(pts, S, b_host=None).model
    assert isinstance(m, model.CentralModel)
    assert m.b_central == math.inf and m.t0_s == pytest.approx(30.0)


def test_sidecar_fit_recovers_the_per_host_bandwidth_with_t1_fixed() -> None:
    t1, b, r, q = 1.5, 1.9e6, 21.0, 5500.0
    pts = [Point(n, t1 + max(S / b, n * r / q)) for n in (1, 5, 10, 20, 40)]
    fit = fit_sidecar(pts, S, t1, r, q)
    m = fit.model
    assert isinstance(m, model.SidecarModel)
    assert m.b_host_s3 == pytest.approx(b, rel=1e-9)
    assert max(abs(x) for x in fit.residuals) < 1e-9


def test_requests_per_pull_counts_manifest_and_blob_requests() -> None:
    """tag link + revision link + manifest, then link + HEAD + GET for each layer and config."""
    assert requests_per_pull(5) == 3 + 3 * 6 == 21
    assert requests_per_pull(2) == 12


def test_real_world_per_host_s3_throughput() -> None:
    real = RealWorld()
    assert real.central_bytes_s == 1.25e9 and real.host_bytes_s == 625e6
    # 3 layers in flight x 8 connections = 24 x 90 MB/s > 5 Gbit/s: the NIC bounds it
    assert real.connections(5) == 24 and real.s3_host_bytes_s(5) == 625e6
    assert real.host_bound(5) == "host NIC"
    one = RealWorld(connections_per_blob=1)
    assert one.s3_host_bytes_s(5) == 270e6  # 3 parallel downloads x 90 MB/s < 5 Gbit/s
    assert one.s3_host_bytes_s(2) == 180e6  # only 2 layers: 2 connections
    assert one.host_bound(2) == "S3 per-connection throughput"
    assert RealWorld(max_connections=4).s3_host_bytes_s(5) == 360e6  # the window bounds it


def test_parts_per_blob_follow_the_download_defaults() -> None:
    real = RealWorld()
    assert real.parts(GIB / 5) == 13  # 204.8 MiB in 16 MiB parts
    assert real.parts(1.5 * GIB) == 16  # bigger parts, not more: 96 MiB
    assert RealWorld(max_parts_per_blob=0).parts(1.5 * GIB) == 96
    assert RealWorld(connections_per_blob=1).parts(1.5 * GIB) == 1
    assert real.key_requests(3 * GIB, 2) == 17  # a HEAD and 16 parts on each layer's key


@pytest.mark.parametrize(
    ("n", "central_s", "bound", "sidecar_s", "sidecar_bound"),
    [
        # central: 1 GiB x N / 1.25e9 B/s (host bound 1 GiB / 625e6 = 1.718 s);
        # sidecar: max(1 GiB / 625e6 B/s = 1.718 s, N x (1 + 13) / 5500 s)
        (1, 1.718, "host NIC", 1.718, "host NIC"),
        (100, 85.899, "registry NIC", 1.718, "host NIC"),
        (1000, 858.993, "registry NIC", 1000 * 14 / 5500, "S3 requests per prefix"),
        (2600, 2233.382, "registry NIC", 2600 * 14 / 5500, "S3 requests per prefix"),
    ],
)
def test_extrapolation_matches_hand_arithmetic(
    n: int, central_s: float, bound: str, sidecar_s: float, sidecar_bound: str
) -> None:
    row = extrapolate(n, GIB, 5, 21.0, RealWorld())
    assert row.central_s == pytest.approx(central_s, abs=2e-3)
    assert row.central_bound == bound
    assert row.sidecar_s == pytest.approx(sidecar_s, abs=2e-3)
    assert row.sidecar_bound == sidecar_bound
    assert row.sidecar_transfer_s == pytest.approx(GIB / 625e6)
    assert row.sidecar_sum_s == pytest.approx(GIB / 625e6 + n * 14 / 5500)


def test_extrapolation_adds_overheads_and_applies_efficiencies() -> None:
    row = extrapolate(100, GIB, 5, 21.0, RealWorld(), t0_s=2.0, t1_s=1.0, eff_central=0.5)
    assert row.central_s == pytest.approx(2.0 + 100 * GIB / 0.625e9)
    assert row.sidecar_s == pytest.approx(1.0 + max(GIB / 625e6, 100 * 14 / 5500))


def test_kraken_case_is_modelled_within_ten_seconds_and_names_its_bound() -> None:
    """3 GiB in 2 layers to 2,600 hosts with the download defaults: the NIC-bound transfer
    (5.2 s) overlaps the S3 request term (2,600 x 17 / 5,500 = 8.0 s), which binds."""
    row = extrapolate(2600, 3 * GIB, 2, 12.0, RealWorld(), t1_s=1.4)
    assert row.sidecar_bound == "S3 requests per prefix"
    assert row.sidecar_s == pytest.approx(1.4 + 2600 * 17 / 5500)
    assert row.sidecar_s <= 10.0


def _fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FIXTURE.read_text())
    return data


def test_analyse_fits_the_fixture_and_labels_every_number() -> None:
    """The fixture was generated with t0 2 s, 95% of 160 Mbit/s, t1 1.5 s, 95% of 16 Mbit/s."""
    a = analyse(_fixture())
    assert a.central is not None and a.sidecar is not None and a.warmed is not None
    c, s = a.central.model, a.sidecar.model
    assert isinstance(c, model.CentralModel) and isinstance(s, model.SidecarModel)
    assert c.t0_s == pytest.approx(2.0, abs=0.01)
    assert c.b_central / MBIT == pytest.approx(152.0, rel=0.01)
    assert a.t1_s == pytest.approx(1.5) and "warmed" in a.t1_source
    assert s.b_host_s3 / MBIT == pytest.approx(15.2, rel=0.01)
    assert a.eff_central == pytest.approx(0.95, abs=0.01)
    assert a.eff_host == pytest.approx(0.95, abs=0.01)
    assert a.requests == 21.0 and a.requests_source.startswith("measured")
    assert [r.n for r in a.rows] == [100, 1000, 2600]
    # 2,600 hosts, 1 GiB in 5 layers: t1 + max(1 GiB / (0.95 x 625 MB/s), 2600 x 14 / 5500)
    want = 1.5 + max(GIB / (0.95 * 625e6), 2600 * 14 / 5500)
    assert a.rows[-1].sidecar_s == pytest.approx(want, rel=0.01)
    assert a.kraken is not None and a.kraken.layers == 2
    md = a.markdown
    for label in ("| stated (run parameter) |", "modelled: least squares", "(measured)",
                  "every number modelled", "measured (published by Uber)"):  # fmt: skip
        assert label in md, label
    assert "https://github.com/uber/kraken" in md
    assert "| Kraken | 2,600 | 3G, 2 layers | 10.0 s | 18.0 s | 22.0 s |" in md
    assert "| 2,600 | 1 GiB, 5 layers |" in md
    assert "| central | 40 | 112 s | 112 s |" in md


def test_failed_runs_are_skipped_and_named() -> None:
    data = _fixture()
    run = next(r for r in data["runs"] if r["scenario"] == "sidecar" and r["n"] == 40)
    run["pull"]["summary"].update(all_ready_s=None, failed=2)
    a = analyse(data)
    assert a.sidecar is not None and [p.n for p in a.sidecar.points] == [1, 5, 10, 20]
    assert a.skipped == ["sidecar N=40: 2 failed"]
    assert "Not fitted (no all-ready time): sidecar N=40: 2 failed." in a.markdown


def test_without_points_the_extrapolation_uses_nominal_values_and_computed_requests() -> None:
    a = analyse({})
    assert a.central is None and a.sidecar is None
    assert (a.t0_s, a.t1_s, a.eff_central, a.eff_host) == (0.0, 0.0, 1.0, 1.0)
    assert a.requests == 21.0 and a.requests_source.startswith("stated")
    assert a.rows[1].central_s == pytest.approx(1000 * GIB / 1.25e9)
    assert "No scale-up points" in a.markdown
