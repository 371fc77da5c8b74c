"""``python -m benchmarks.results`` renders RESULTS.md and small PNGs from fixed JSON files
(tests/data/bench: a micro.json and a scaleup.json in the documented formats)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import results

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "bench"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
pytestmark = pytest.mark.timeout(120)


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text())
    return data


def _row(md: str, start: str) -> str:
    [line] = [x for x in md.splitlines() if x.startswith(start)]
    return line


def test_results_page_from_fixtures_has_tables_verdicts_and_plots(tmp_path: Path) -> None:
    """Targets with verdicts, machine, commands, micro and scale-up tables, the model, PNGs."""
    out, plots = tmp_path / "RESULTS.md", tmp_path / "plots"
    rc = results.main(
        ["--micro", str(DATA / "micro.json"), "--scaleup", str(DATA / "scaleup.json"),
         "--out", str(out), "--plots", str(plots)]
    )  # fmt: skip
    assert rc == 0
    md = out.read_text()
    # targets: micro from micro.json, scale-up from scaleup.json (central 112 s at N=40)
    assert "| cache-hit blob req/s >= 0.9 x nginx | 1.086 | met | micro `blob` |" in md
    assert "| manifest-by-tag req/s >= 4 x distribution | 5.961 | met |" in md
    assert "| cold pull <= 1.3 x direct S3 GET | 2.569 | MISSED by 97.6% |" in md
    # a fixture from before ranged downloads records no part size: one GET is the target
    assert "| 100 concurrent cold requests -> at most one S3 GET per part (1) | 1 | met |" in md
    assert "| RSS <= 150 MiB, 20 streams of 256 MiB | 71.3 MiB | met |" in md
    assert "| sidecar flat: all ready at N=40 / N=1 <= 1.3 | 1.005 | met | scale-up |" in md
    assert "| sidecar / central, all ready at N=40 <= 0.5 | 0.260 | met |" in md
    assert "| warmed / central, all ready at N=40 <= 0.1 | 0.013 | met |" in md
    assert "| failures in sidecar and warmed runs = 0 | 0 | met |" in md
    # machine and commands come from the files, not from this machine
    assert "| CPU | Intel(R) Xeon(R) Processor |" in md and "| moto | 5.2.5 |" in md
    assert "python -m benchmarks.micro --json benchmarks/results/micro.json" in md
    assert "sudo python -m benchmarks.scaleup --ns 1,5,10,20,40" in md
    # the micro tables and the scale-up table
    assert "| blob | nginx sendfile (same cached file) | 8 |" in md
    assert "| 1 | through a fresh regsidecar |" in md
    assert "| S3 GETs of the blob's data (target: at most one per part, 1) | 1 (met) |" in md
    row = _row(md, "| central | 40 | 40 | 0 |")
    assert "| 112.38 s |" in row and "| 85% |" in row
    assert md.index("| central | 1 |") < md.index("| sidecar | 1 |") < md.index("| warmed | 1 |")
    # the model section, with its labels
    assert "## Capacity model" in md and "| Kraken | 2,600 |" in md
    assert "modelled: least squares on 5 measured central points" in md
    # plots: linked relative to the page, real PNGs, small
    for name in ("scaleup_cdf.png", "scaleup_ready_vs_n.png", "model.png", "rss.png"):
        assert f"(plots/{name})" in md
        png = plots / name
        assert png.read_bytes()[:8] == PNG_MAGIC
        assert 2_000 < png.stat().st_size < 120_000, (name, png.stat().st_size)


def test_missed_scaleup_targets_and_failures_are_verdicts(tmp_path: Path) -> None:
    """A sidecar that grows with N and a failed warmed host miss their targets."""
    scaleup = _load("scaleup.json")
    for run in scaleup["runs"]:
        s = run["pull"]["summary"]
        if run["scenario"] == "sidecar" and run["n"] == 40:
            s["all_ready_s"] = 80.0
        if run["scenario"] == "warmed" and run["n"] == 40:
            s.update(failed=1, ok=39, all_ready_s=None, max_s=2.0)
    md = results.render(_load("micro.json"), scaleup, tmp_path / "R.md", tmp_path / "p")
    assert _row(md, "| sidecar flat: all ready at N=40 / N=1").split(" | ")[2] == "MISSED by 111.5%"
    assert "| sidecar / central, all ready at N=40 <= 0.5 | 0.712 | MISSED by 42.4% |" in md
    assert "| failures in sidecar and warmed runs = 0 | 1 | MISSED |" in md
    assert "Not fitted (no all-ready time): warmed N=40: 1 failed." in md


def test_without_scaleup_the_page_says_why_and_still_models(tmp_path: Path) -> None:
    micro = copy.deepcopy(_load("micro.json"))
    md = results.render(micro, None, tmp_path / "R.md", tmp_path / "p", "Skipped: not root.")
    assert "## Scale-up\n\nSkipped: not root." in md
    assert "No scale-up points" in md and "| 2,600 | 1 GiB, 5 layers |" in md
    assert not (tmp_path / "p" / "scaleup_cdf.png").exists()
    assert (tmp_path / "p" / "model.png").is_file()


def test_cli_refuses_when_there_is_nothing_to_render(tmp_path: Path) -> None:
    cp = subprocess.run(
        [sys.executable, "-m", "benchmarks.results", "--micro", str(tmp_path / "none.json"),
         "--scaleup", str(tmp_path / "none2.json"), "--out", str(tmp_path / "R.md")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cp.returncode == 2 and "neither" in cp.stderr
    assert not (tmp_path / "R.md").exists()


def test_run_script_documents_its_flags_and_rejects_unknown_ones() -> None:
    script = ROOT / "benchmarks" / "run"
    ok = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0
    for flag in ("--quick", "--skip-micro", "--skip-scaleup"):
        assert flag in ok.stdout
    bad = subprocess.run([str(script), "--nope"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr


def test_a_rerun_merged_into_micro_json_replaces_its_benchmark_and_is_listed(
    tmp_path: Path,
) -> None:
    """``benchmarks.micro --only cold --merge``: the other benchmarks stay, the page names the
    rerun's command."""
    from benchmarks.micro import merge

    old = _load("micro.json")
    new_cold = {**old["cold"], "ratio": 1.1}
    meta = {"command": "python -m benchmarks.micro --only cold --merge --json M", "date": "D2"}
    merged = merge(old, {"meta": meta, "cold": new_cold})
    assert merged["blob"] == old["blob"] and merged["cold"]["ratio"] == 1.1
    assert merged["meta"]["command"] == old["meta"]["command"]
    assert merged["meta"]["reruns"] == [{**meta, "benches": ["cold"]}]
    md = results.render(merged, None, tmp_path / "R.md", tmp_path / "p")
    assert "--only cold --merge --json M   # D2: cold from this later run" in md
    assert "| cold pull <= 1.3 x direct S3 GET | 1.100 | met |" in md
