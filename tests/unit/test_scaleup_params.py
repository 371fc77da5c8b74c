"""Flags of the capped-S3 sweep (--s3-conn-mbit, --part-mib, --parallel-after-s, the single
scenario), what each scenario's sidecars get, what scaleup.json records, and the report's
caps arithmetic and header for them."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.scaleup.__main__ import build_parser, resolve
from benchmarks.scaleup.ideal import conn_bound_s, ideal_s
from benchmarks.scaleup.params import MIB, Params
from benchmarks.scaleup.report import render, targets
from regsidecar.bench.report import summarize


def parse(*argv: str) -> Params:
    return resolve(build_parser().parse_args(list(argv)))


def test_single_is_selectable_but_not_in_the_default_sweep() -> None:
    assert parse().scenarios == ("central", "sidecar", "warmed")
    assert parse("--scenarios", "single,sidecar").scenarios == ("single", "sidecar")


def test_capped_flags_default_to_moto_and_regsidecar_defaults() -> None:
    p = parse()
    assert (p.s3_conn_mbit, p.part_mib, p.parallel_after_s, p.part_bytes) == (None,) * 4
    assert p.sidecar_env("sidecar") == {}
    download = p.sidecar_download("sidecar")
    assert download["part_bytes"] == 16 * MIB
    assert download["connections_per_blob"] == 8
    assert download["max_connections"] == 32
    assert download["parallel_after_s"] == 1.0
    j = p.to_json()
    assert j["s3"] == {"server": "moto", "conn_mbit": None}
    assert j["s3_conn_mbit"] is None and j["part_bytes"] is None


def test_every_sidecar_gets_the_part_size_and_single_one_connection_per_blob() -> None:
    p = parse("--s3-conn-mbit", "1", "--part-mib", "1", "--parallel-after-s", "0.25",
              "--scenarios", "central,sidecar,single,warmed")  # fmt: skip
    common = {
        "REGSIDECAR_DOWNLOAD_PART_BYTES": "1048576",
        "REGSIDECAR_DOWNLOAD_PARALLEL_AFTER_S": "0.25",
    }
    assert p.sidecar_env("sidecar") == common
    assert p.sidecar_env("warmed") == common
    assert p.sidecar_env("single") == {**common, "REGSIDECAR_DOWNLOAD_CONNECTIONS_PER_BLOB": "1"}
    assert p.sidecar_download("single")["connections_per_blob"] == 1
    assert p.sidecar_download("sidecar")["part_bytes"] == MIB


def test_the_json_names_the_stand_in_its_cap_and_each_scenarios_sidecar_settings() -> None:
    j = parse("--s3-conn-mbit", "1", "--part-mib", "0.5", "--scenarios", "central,single").to_json()
    assert j["s3_conn_mbit"] == 1.0
    assert j["part_mib"] == 0.5 and j["part_bytes"] == 512 * 1024
    assert j["parallel_after_s"] is None
    # at least 16 KiB a write: nginx's 10 ms of 125000 B/s would be 1250 B
    assert j["s3"] == {"server": "nginx", "conn_mbit": 1.0, "limit_rate_bytes": 125000,
                       "pace_ms": 132, "sendfile_max_chunk_bytes": 16500}  # fmt: skip
    fast = parse("--s3-conn-mbit", "680").to_json()["s3"]  # a real S3 connection, ~85 MB/s
    assert (fast["pace_ms"], fast["sendfile_max_chunk_bytes"]) == (10, 850_000)
    # central runs no sidecar: it has no entry
    assert j["sidecar_env"] == {
        "single": {"REGSIDECAR_DOWNLOAD_PART_BYTES": "524288",
                   "REGSIDECAR_DOWNLOAD_CONNECTIONS_PER_BLOB": "1"},
    }  # fmt: skip
    assert j["sidecar_download"]["single"]["connections_per_blob"] == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--s3-conn-mbit", "0"],
        ["--s3-conn-mbit", "-1"],
        ["--s3-conn-mbit", "0.000001"],  # under 1 byte/s
        ["--part-mib", "0"],
        ["--part-mib", "0.01"],  # regsidecar takes parts of 64 KiB and up
        ["--parallel-after-s", "-1"],
        ["--scenarios", "singles"],
    ],
)
def test_bad_capped_flags_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


# -- the report --------------------------------------------------------------------------

PARAMS = parse(
    "--ns", "1,2", "--scenarios", "central,sidecar,single", "--image-mib", "8", "--layers", "2",
    "--host-mbit", "8", "--s3-conn-mbit", "1", "--part-mib", "1",
).to_json()  # fmt: skip
IMAGE = 8 * MIB


def run(scenario: str, n: int, t: float) -> dict[str, Any]:
    client = {"target": "t", "offset_s": 0.0, "ready_s": t, "bytes": IMAGE,
              "requests": {"200": 4}, "error": None, "error_detail": ""}  # fmt: skip
    clients = [{"client": i, **client} for i in range(n)]
    backend = {"s3_get": 20, "s3_blob_get": 18, "s3_range_get": 16, "s3_connections": 17,
               "s3_bytes": IMAGE}  # fmt: skip
    return {
        "scenario": scenario,
        "n": n,
        "pull": {"kind": "pull", "clients": clients, "summary": summarize(clients)},
        "cpu": {
            "busy_fraction_max": 0.5,
            "busy_fraction_mean": 0.2,
            "samples": 9,
            "by_role_s": {"nginx": 0.3, "sidecars": 1.0},
        },
        "backend": backend,
        "wall_s": t + 3,
    }


def test_caps_allow_the_host_cap_for_sidecar_and_one_connection_per_layer_otherwise() -> None:
    host_s = IMAGE * 8 / 8e6  # 8.39 s
    layer_s = 4 * MIB * 8 / 1e6  # both layers at once, each over one 1 Mbit/s connection
    assert ideal_s(run("sidecar", 2, 9.0), PARAMS) == pytest.approx(host_s)
    assert ideal_s(run("single", 2, 34.0), PARAMS) == pytest.approx(layer_s)
    assert ideal_s(run("central", 2, 34.0), PARAMS) == pytest.approx(layer_s)
    assert ideal_s(run("warmed", 2, 0.1), PARAMS) is None
    # without the per-connection cap, single is held to the host cap only
    moto = {**PARAMS, "s3_conn_mbit": None}
    assert ideal_s(run("single", 2, 9.0), moto) == pytest.approx(host_s)


def test_layers_beyond_the_pullers_concurrency_take_another_round() -> None:
    params = {"image_bytes": 5_000_000, "layers": 5, "concurrency": 3, "s3_conn_mbit": 1.0}
    assert conn_bound_s(params, 1) == pytest.approx(16.0)  # 3 then 2, 8 s each
    assert conn_bound_s(params, 8) == pytest.approx(2.0)


def test_report_shows_the_stand_in_the_sidecar_settings_and_what_ranged_gets_buy() -> None:
    runs = [run("central", 2, 34.0), run("sidecar", 2, 9.0), run("single", 2, 34.0)]
    result = {"kind": "scaleup", "version": 1, "params": PARAMS, "runs": runs,
              "machine": {"cpus": 2, "kernel": "Linux", "python": "3.11", "date": "d"},
              "commands": ["python -m benchmarks.scaleup --s3-conn-mbit 1"]}  # fmt: skip
    text = render(result)
    assert "each connection capped at 1 Mbit/s (limit_rate 125000 B/s" in text
    assert "- single sidecars: `REGSIDECAR_DOWNLOAD_PART_BYTES=1048576` " in text
    assert "`REGSIDECAR_DOWNLOAD_CONNECTIONS_PER_BLOB=1`; so parts of 1 MiB, 1 connection " in text
    assert "| 20 (18; 16, 17) |" in text  # GETs (blob data; ranged, connections)
    assert "| 0.3 / 0.0 / 1.0 / 0.0 |" in text  # CPU s: nginx / registry / sidecars / pullers
    got = {t["target"]: (t["measured"], t["verdict"]) for t in targets(result)}
    measured, verdict = got["sidecar / single all-ready at N=2"]
    assert measured == pytest.approx(9.0 / 34.0) and verdict == "met"
    assert "failed pulls, sidecar + single + warmed (all N)" in got
