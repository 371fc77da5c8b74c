"""``python -m benchmarks.micro --quick`` runs end to end against the real peers and reports
every benchmark (tiny sizes, 1 s loads): the benchmark code itself keeps working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rig.proc import child_env, missing

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.rig, pytest.mark.timeout(180)]


def test_micro_quick_runs_every_benchmark_and_writes_json(tmp_path: Path) -> None:
    """--quick: blob, manifest, cold, fanout and rss results, all 200 and verified, table and
    JSON agree."""
    absent = missing("hey", "nginx", "docker-registry", "moto_server")
    if absent:
        pytest.skip(f"not installed: {', '.join(absent)} (run tests/rig/install-deps.sh)")
    out = tmp_path / "micro.json"
    env = child_env({"TMPDIR": str(tmp_path)})
    cp = subprocess.run(
        [sys.executable, "-m", "benchmarks.micro", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert cp.returncode == 0, cp.stderr[-4000:]
    results = json.loads(out.read_text())
    assert {"meta", "blob", "manifest", "cold", "capped", "fanout", "rss"} <= results.keys()
    for bench in ("blob", "manifest"):
        for row in results[bench]["rows"]:
            assert row["req_s"] > 0 and row["bad"] == 0, row
            assert row["p50_ms"] is not None and row["server_cpu_s"] >= 0, row
            assert f"| {bench} | {row['server']} |" in cp.stdout
        assert all(v and v > 0 for v in results[bench]["ratios"].values())
    # the cache-hit row really is a hit: no S3 traffic while it was loaded
    assert results["blob"]["rows"][0]["s3_requests_during_load"] == 0
    rss = results["rss"]
    assert rss["verified_ok"] == rss["clients"] == 3
    assert rss["x_cache"] == ["miss"] and rss["s3_blob_gets"] == rss["distinct_blobs"]
    assert 0 < rss["baseline_rss_mib"] <= rss["vmhwm_after_stream_mib"]
    assert rss["temp_files_after"] == 0
    # cold: one round of each path, same bytes, the sidecar's one S3 GET of the data
    cold = results["cold"]
    assert cold["verified_ok"] == cold["gets"] == 2
    [direct], [via] = cold["direct"], cold["sidecar"]
    assert direct["bytes"] == via["bytes"] == cold["blob_bytes"] == 4 * 2**20
    assert via["x_cache"] == "miss" and via["s3_data_gets"] == 1
    assert cold["ratio"] == round(via["seconds"] / direct["seconds"], 3)
    assert "| cold GET: through regsidecar / direct S3 GET (median s) |" in cp.stdout
    # capped: the three paths over the per-connection-capped stand-in, every body verified;
    # one GET direct, ranged parts through the sidecar (40 MiB at 8 MiB/s: worth it)
    capped = results["capped"]
    assert capped["verified_ok"] == capped["gets"] == 3
    [direct], [via] = capped["direct"], capped["sidecar"]
    assert direct["s3_data_gets"] == 1 and direct["s3_ranged_gets"] == 0
    assert via["s3_ranged_gets"] >= 2 and via["parts"] == 3
    assert capped["speedup_vs_direct"] > 1.5
    assert "| capped S3: direct single GET / through regsidecar (median s) |" in cp.stdout
    # fanout: 100 concurrent cold GETs, one S3 GET of the data, every body verified
    fan = results["fanout"]
    assert fan["clients"] == fan["verified_ok"] == 100
    assert fan["s3_data_gets"] == 1 and fan["s3_requests"]["GET blob data"] == 1
    assert fan["cache_files_after"] == 1 and fan["temp_files_after"] == 0
    # 2 MiB is one 16 MiB part: one GET at most
    assert "| S3 GETs of the blob's data (target: at most one per part, 1) | 1 (met) |" in cp.stdout
    assert "| ratio | measured | target | verdict |" in cp.stdout
    # every temp dir the run made (under our TMPDIR) is gone again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["micro.json"]
    assert os.path.getsize(out) > 0
