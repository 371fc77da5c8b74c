"""The pull report on fixed result files (tests/data/bench-result*.json, ready times by hand)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from regsidecar import cli
from regsidecar.bench import report

DATA = Path(__file__).resolve().parent.parent / "data"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DATA / name).read_text())
    return result


@pytest.fixture
def sidecar() -> dict[str, Any]:
    """22 clients: 20 ready (0.8 .. 7.5 s, shuffled), one timeout, one http failure."""
    return load("bench-result.json")


@pytest.fixture
def central() -> dict[str, Any]:
    """3 clients, all ready, started 1.5 s after the sidecar run."""
    return load("bench-result-central.json")


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 1024, f"{path} is only {len(data)} bytes"


@pytest.mark.parametrize(
    ("values", "p", "expected"),
    [
        ([5.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 75, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 76, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 0, 1.0),
        ([], 50, None),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], p: float, expected: float) -> None:
    assert report.percentile(values, p) == expected


def test_summary_of_the_fixed_file_matches_the_hand_computed_one(
    sidecar: dict[str, Any], central: dict[str, Any]
) -> None:
    """p50/p95/p99 = 10th/19th/20th of 20 sorted ready times; failures by kind; requests
    and bytes summed; all_ready_s null when a client failed, else first start to last end."""
    assert report.summarize(sidecar["clients"]) == sidecar["summary"]
    s = report.summarize(central["clients"])
    assert s == central["summary"]
    assert s["all_ready_s"] == 2.25  # client 2: offset 1.0 + ready 1.25


def test_unknown_failure_kind_counts_as_other(central: dict[str, Any]) -> None:
    central["clients"][0].update(error="gremlins", ready_s=None)
    s = report.summarize(central["clients"])
    assert s["failures"]["other"] == 1 and s["ok"] == 2 and s["all_ready_s"] is None


def test_merge_renumbers_clients_shifts_offsets_and_recomputes(
    sidecar: dict[str, Any], central: dict[str, Any]
) -> None:
    """Central started 1.5 s later: its offsets move by 1.5 s onto the earlier start."""
    merged = report.merge([central, sidecar])
    assert merged["kind"] == "pull" and merged["version"] == 1
    assert merged["started_at"] == sidecar["started_at"]
    assert [c["client"] for c in merged["clients"]] == list(range(25))
    assert [c["offset_s"] for c in merged["clients"][:3]] == [1.5, 2.0, 2.5]
    assert merged["clients"][3] == {**sidecar["clients"][0], "client": 3}
    assert merged["params"]["clients"] == 25
    assert merged["params"]["label"] == "central"
    assert merged["params"]["targets"][0] == "http://central:5000"
    assert len(merged["params"]["targets"]) == 23
    s = merged["summary"]
    assert (s["clients"], s["ok"], s["failed"]) == (25, 23, 2)
    assert s["bytes"] == 23_400_000
    assert s["requests"] == {"200": 190, "404": 2, "error": 1}
    assert s["failures"]["timeout"] == 1 and s["failures"]["http"] == 1
    # 23 ready times: nearest rank 12 (p50) of the pooled, sorted list
    pooled = sorted([2.0, 1.0, 1.25, *(c["ready_s"] for c in sidecar["clients"] if c["ready_s"])])
    assert s["p50_s"] == pooled[11] and s["max_s"] == 7.5


def test_merge_of_complete_runs_gives_the_span_over_all_hosts(central: dict[str, Any]) -> None:
    later = copy.deepcopy(central)
    later["started_at"] += 10.0
    merged = report.merge([later, central])
    assert merged["summary"]["all_ready_s"] == 12.25  # 10 s later + 2.25 s
    assert merged["started_at"] == central["started_at"]


def test_merge_refuses_what_is_not_a_pull_result(central: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="nothing"):
        report.merge([])
    with pytest.raises(ValueError, match="version"):
        report.merge([{**central, "version": 2}])
    with pytest.raises(ValueError, match="kind"):
        report.merge([{**central, "kind": "scaleup"}])


def test_markdown_table_rows(sidecar: dict[str, Any], central: dict[str, Any]) -> None:
    table = report.markdown_table([sidecar, central])
    lines = table.splitlines()
    assert lines[0] == (
        "| label | N | ok | failed | p50 | p95 | p99 | max | all ready | bytes | requests |"
    )
    assert lines[1].startswith("|---|")
    assert lines[2] == (
        "| sidecar | 22 | 20 | 2 (timeout 1, http 1) | 2.10 s | 4.60 s | 7.50 s | 7.50 s | - "
        "| 19.5 MiB | 200: 166, 404: 2, error: 1 |"
    )
    assert lines[3] == (
        "| central | 3 | 3 | 0 | 1.25 s | 2.00 s | 2.00 s | 2.00 s | 2.25 s | 2.9 MiB | 200: 24 |"
    )
    assert len(lines) == 4


def test_markdown_escapes_a_pipe_in_the_label(central: dict[str, Any]) -> None:
    central["params"]["label"] = "a|b"
    assert "| a\\|b | 3 |" in report.markdown_table([central])


def test_series_group_by_label_and_by_label_and_n(
    sidecar: dict[str, Any], central: dict[str, Any]
) -> None:
    slower = copy.deepcopy(central)  # a second run of the same scenario and N, twice as slow
    slower["started_at"] += 100
    for c in slower["clients"]:
        c["ready_s"] *= 2
    cdf = report.cdf_series([sidecar, central, slower])
    assert set(cdf) == {"sidecar", "central"}
    assert sorted(cdf["central"]) == [1.0, 1.25, 2.0, 2.0, 2.5, 4.0]
    assert len(cdf["sidecar"]) == 22
    assert sum(math.isinf(v) for v in cdf["sidecar"]) == 2  # the failed clients
    points = report.n_series([sidecar, central, slower])
    # the two central runs of N=3 give one point over their 6 clients: p50 = 3rd of 6
    assert points == {"central": [(3, 2.0, 4.0, 4.0)], "sidecar": [(22, 2.1, 7.5, 7.5)]}


def test_plots_are_written_as_png(
    tmp_path: Path, sidecar: dict[str, Any], central: dict[str, Any]
) -> None:
    cdf = tmp_path / "cdf.png"
    report.plot_cdf(report.cdf_series([sidecar, central]), cdf, "time to ready")
    assert_png(cdf)
    series = {
        "central": [(1, 1.0, 1.2, 1.3), (10, 3.0, 5.0, 6.0), (100, 30.0, 50.0, 60.0)],
        "sidecar": [(1, 1.0, 1.1, 1.1), (10, 1.1, 1.3, 1.4), (100, 1.2, 1.9, 2.5)],
    }
    vs_n = tmp_path / "n.png"
    report.plot_ready_vs_n(series, vs_n, "ready vs N")
    assert_png(vs_n)


def test_cli_report_writes_table_plots_and_merge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    md, cdf, vs_n, merged = (tmp_path / n for n in ("t.md", "cdf.png", "n.png", "m.json"))
    rc = cli.main(
        [
            "bench",
            "report",
            str(DATA / "bench-result.json"),
            str(DATA / "bench-result-central.json"),
            "--markdown",
            str(md),
            "--plot-cdf",
            str(cdf),
            "--plot-n",
            str(vs_n),
            "--merge",
            str(merged),
        ]
    )
    assert rc == 0
    assert md.read_text() == report.markdown_table(
        [load("bench-result.json"), load("bench-result-central.json")]
    )
    assert capsys.readouterr().out == ""
    assert_png(cdf)
    assert_png(vs_n)
    assert json.loads(merged.read_text())["summary"]["clients"] == 25


def test_cli_report_prints_the_table_and_refuses_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["bench", "report", str(DATA / "bench-result-central.json")]) == 0
    assert "| central | 3 | 3 | 0 |" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "micro"}')
    assert cli.main(["bench", "report", str(bad)]) == 2
    assert "not a pull result" in capsys.readouterr().err
    assert cli.main(["bench", "report", str(tmp_path / "missing.json")]) == 2
