"""The sweep's Markdown report, its targets and its two plots (from ``scaleup.json``).

>>> targets({"runs": []})[0]["verdict"]
'not measured'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.scaleup.ideal import ideal_s, vs_ideal
from regsidecar.bench.report import plot_cdf, plot_ready_vs_n, ready_times

MIB = 1024 * 1024
#: The CPU share (of all cores) below which the run counts as bound by the network caps.
CPU_BOUND_LIMIT = 0.70
FLAT_LIMIT = 1.3
SIDECAR_VS_CENTRAL = 0.5
WARMED_VS_CENTRAL = 0.1
SIDECAR_VS_SINGLE = 1.0
#: Peer fetch: S3 bytes of each blob per scale-up, in units of the blob's size.
PEERS_S3_PER_BLOB = 1.5
#: Peer fetch keeps up with S3-only sidecars (it saves S3 bytes, not time, at these N).
PEERS_VS_SIDECAR = 1.1
#: all-ready within this factor of what the caps allow: TCP/IP headers (~1 % at MTU 9000),
#: slow start, request round trips and the N clients' start take the rest.
IDEAL_LIMIT = 1.15

PLOT_READY_VS_N = "ready_vs_n.png"
PLOT_CDF = "cdf_max_n.png"


def _runs(result: Mapping[str, Any], scenario: str) -> dict[int, Mapping[str, Any]]:
    return {int(r["n"]): r for r in result["runs"] if r["scenario"] == scenario}


def _all_ready(run: Mapping[str, Any] | None) -> float | None:
    if run is None:
        return None
    value = run["pull"]["summary"]["all_ready_s"]
    return None if value is None else float(value)


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def _check(name: str, value: float | None, target: str, ok: bool | None) -> dict[str, Any]:
    verdict = "not measured" if ok is None else ("met" if ok else "NOT met")
    return {"target": name, "measured": value, "goal": target, "verdict": verdict}


def targets(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and a verdict."""
    central, sidecar, warmed = (_runs(result, s) for s in ("central", "sidecar", "warmed"))
    ns = sorted({int(r["n"]) for r in result["runs"]})
    lo, hi = (ns[0], ns[-1]) if ns else (0, 0)
    out = []
    flat = _ratio(_all_ready(sidecar.get(hi)), _all_ready(sidecar.get(lo)))
    out.append(
        _check(
            f"sidecar all-ready N={hi} / N={lo}",
            flat,
            f"<= {FLAT_LIMIT}",
            None if flat is None or hi == lo else flat <= FLAT_LIMIT,
        )
    )
    grows = _ratio(_all_ready(central.get(hi)), _all_ready(central.get(lo)))
    out.append(
        _check(
            f"central all-ready N={hi} / N={lo}",
            grows,
            f"grows (> {FLAT_LIMIT})",
            None if grows is None or hi == lo else grows > FLAT_LIMIT,
        )
    )
    b_a = _ratio(_all_ready(sidecar.get(hi)), _all_ready(central.get(hi)))
    out.append(
        _check(
            f"sidecar / central all-ready at N={hi}",
            b_a,
            f"<= {SIDECAR_VS_CENTRAL}",
            None if b_a is None else b_a <= SIDECAR_VS_CENTRAL,
        )
    )
    c_a = _ratio(_all_ready(warmed.get(hi)), _all_ready(central.get(hi)))
    out.append(
        _check(
            f"warmed / central all-ready at N={hi}",
            c_a,
            f"<= {WARMED_VS_CENTRAL}",
            None if c_a is None else c_a <= WARMED_VS_CENTRAL,
        )
    )
    single = _runs(result, "single")
    if single:
        # What parallel ranged GETs buy: the same sidecars with one connection per blob.
        s_1 = _ratio(_all_ready(sidecar.get(hi)), _all_ready(single.get(hi)))
        out.append(
            _check(
                f"sidecar / single all-ready at N={hi}",
                s_1,
                f"< {SIDECAR_VS_SINGLE} (parallel ranged GETs help)",
                None if s_1 is None else s_1 < SIDECAR_VS_SINGLE,
            )
        )
    peers = _runs(result, "peers")
    if peers:
        hi_p = max(peers)
        blob = (peers[hi_p]["backend"].get("s3_blob_bytes") or {}).get("max_ratio")
        out.append(
            _check(
                f"peers: S3 bytes of each blob at N={hi_p} (the most of any blob, x its size)",
                blob,
                f"<= {PEERS_S3_PER_BLOB} (S3-only sidecars: N)",
                None if blob is None else blob <= PEERS_S3_PER_BLOB,
            )
        )
        lo_p = min(peers)
        flat_p = _ratio(_all_ready(peers.get(hi_p)), _all_ready(peers.get(lo_p)))
        out.append(
            _check(
                f"peers all-ready N={hi_p} / N={lo_p}",
                flat_p,
                f"<= {FLAT_LIMIT} (grows slowly with N)",
                None if flat_p is None or hi_p == lo_p else flat_p <= FLAT_LIMIT,
            )
        )
        p_s = _ratio(_all_ready(peers.get(hi_p)), _all_ready(sidecar.get(hi_p)))
        out.append(
            _check(
                f"peers / sidecar all-ready at N={hi_p}",
                p_s,
                f"<= {PEERS_VS_SIDECAR} (as fast as S3-only, for 1/N of the S3 bytes)",
                None if p_s is None else p_s <= PEERS_VS_SIDECAR,
            )
        )
    peer_runs = [
        r for r in result["runs"] if r["scenario"] in ("peers", "peers-kill", "peers-liar")
    ]
    if peer_runs:
        failed_p = failed_pulls(peer_runs)
        out.append(
            _check(
                "failed pulls, peers + peers-kill (survivors) + peers-liar (all N)",
                float(failed_p),
                "0",
                failed_p == 0,
            )
        )
    side_runs = [*sidecar.values(), *single.values(), *warmed.values()]
    failed = sum(int(r["pull"]["summary"]["failed"]) for r in side_runs)
    out.append(
        _check(
            "failed pulls, sidecar + single + warmed (all N)"
            if single
            else "failed pulls, sidecar + warmed (all N)",
            float(failed) if side_runs else None,
            "0",
            None if not side_runs else failed == 0,
        )
    )
    # The warmed pull never touches a capped link (sidecar -> puller on loopback): it is
    # CPU-bound by design, so only the network-bound scenarios are held to the CPU limit. The
    # limit applies to each phase's mean: the first second of every pull (all N clients and
    # their servers starting at once) is briefly CPU-bound whatever the caps.
    cpu = [r["cpu"]["busy_fraction_mean"] for r in result["runs"] if r["scenario"] != "warmed"]
    cpu_max = max((c for c in cpu if c is not None), default=None)
    out.append(
        _check(
            "CPU busy: highest mean of a central/sidecar pull phase (share of both cores)",
            cpu_max,
            f"< {CPU_BOUND_LIMIT} (the caps, not the CPUs, bound the run)",
            None if cpu_max is None else cpu_max < CPU_BOUND_LIMIT,
        )
    )
    # The fault scenarios pay for their faults by design (a cut response's retry waits 5 s).
    slowest = [
        v
        for r in result["runs"]
        if r["scenario"] not in ("peers-kill", "peers-liar")
        and (v := vs_ideal(r, result["params"])) is not None
    ]
    worst = max(slowest, default=None)
    out.append(
        _check(
            "all-ready / what the caps alone allow (worst central/sidecar/peers run)",
            worst,
            f"<= {IDEAL_LIMIT} (the caps bound the run)",
            None if worst is None else worst <= IDEAL_LIMIT,
        )
    )
    return out


def _s(value: float | None, unit: str = " s") -> str:
    return "-" if value is None else f"{value:.2f}{unit}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


TABLE_HEAD = (
    "| scenario | N | ok | failed | all ready | caps allow | ratio | p50 | p95 | p99 | max "
    "| S3 GET (blob data; ranged, connections) "
    "| S3 sent | S3 per blob | central sent | CPU mean / p90 / max "
    "| CPU s: S3 / registry / sidecars / pullers | warm-up | wall |\n"
    "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n"
)


def table(result: Mapping[str, Any]) -> str:
    rows = []
    params = result["params"]
    for r in result["runs"]:
        ratio = vs_ideal(r, params)
        s, b, c = r["pull"]["summary"], r["backend"], r["cpu"]
        roles = c.get("by_role_s", {})
        warm = r.get("warm")
        cells = [
            r["scenario"],
            str(r["n"]),
            str(s["ok"]),
            str(s["failed"]),
            _s(s["all_ready_s"]),
            _s(ideal_s(r, params)),
            "-" if ratio is None else f"{ratio:.2f}",
            *(_s(s[k]) for k in ("p50_s", "p95_s", "p99_s", "max_s")),
            _s3_gets(b),
            f"{b['s3_bytes'] / MIB:.1f} MiB" if b.get("s3_bytes") is not None else "-",
            _per_blob(b),
            f"{b['central_bytes'] / MIB:.1f} MiB" if b.get("central_bytes") is not None else "-",
            " / ".join(
                _pct(c.get(k))
                for k in ("busy_fraction_mean", "busy_fraction_p90", "busy_fraction_max")
            ),
            " / ".join(
                f"{roles.get(k, 0):.1f}"
                for k in (_s3_role(roles), "registry", "sidecars", "pullers")
            ),
            _s(warm["wall_s"]) if warm else "-",
            _s(r["wall_s"]),
        ]
        rows.append("| " + " | ".join(cells) + " |\n")
    return TABLE_HEAD + "".join(rows)


def _per_blob(backend: Mapping[str, Any]) -> str:
    """S3 bytes of each layer blob over its size: ``max (mean)``, from the S3 log.

    >>> _per_blob({"s3_blob_bytes": {"max_ratio": 1.02, "mean_ratio": 1.0}})
    '1.02x (1.00x)'
    """
    found = backend.get("s3_blob_bytes")
    if not found:
        return "-"
    return f"{found['max_ratio']:.2f}x ({found['mean_ratio']:.2f}x)"


def _s3_gets(backend: Mapping[str, Any]) -> str:
    """``GETs (blob data)``, with ``; ranged, connections`` when the S3 log knows them."""
    cell = f"{backend.get('s3_get', '-')} ({backend.get('s3_blob_get', '-')}"
    if "s3_range_get" in backend:
        cell += f"; {backend['s3_range_get']}, {backend.get('s3_connections', '-')}"
    return cell + ")"


def _s3_role(roles: Mapping[str, Any]) -> str:
    """The CPU role of the S3 stand-in: moto, or nginx (with its listing helper)."""
    return "nginx" if "nginx" in roles else "moto"


def s3_line(params: Mapping[str, Any]) -> str:
    """What served the bucket, as the report's header says it.

    >>> s3_line({"s3": {"server": "nginx", "conn_mbit": 1.0, "limit_rate_bytes": 125000,
    ...                 "pace_ms": 132, "sendfile_max_chunk_bytes": 16500}})
    'nginx (tests/rig/cappeds3.py), each connection capped at 1 Mbit/s (limit_rate 125000 B/s, sendfile_max_chunk 16500 B: one write every 132 ms)'
    """  # noqa: E501
    s3 = params.get("s3") or {"server": "moto"}
    if s3.get("server") != "nginx":
        return "moto, uncapped per connection"
    return (
        f"nginx (tests/rig/cappeds3.py), each connection capped at {s3['conn_mbit']:g} Mbit/s "
        f"(limit_rate {s3['limit_rate_bytes']} B/s, sendfile_max_chunk "
        f"{s3['sendfile_max_chunk_bytes']} B"
        + (f": one write every {s3['pace_ms']} ms)" if "pace_ms" in s3 else ")")
    )


def sidecar_lines(params: Mapping[str, Any]) -> list[str]:
    """One line per sidecar scenario: its ``REGSIDECAR_DOWNLOAD_*`` env and download settings."""
    out = []
    envs, downloads = params.get("sidecar_env", {}), params.get("sidecar_download", {})
    for scenario, download in downloads.items():
        env = envs.get(scenario, {})
        given = " ".join(f"`{k}={v}`" for k, v in env.items()) or "no download settings"
        out.append(
            f"- {scenario} sidecars: {given}; so parts of {download['part_bytes'] / MIB:g} MiB, "
            f"{_plural(download['connections_per_blob'], 'connection')} per blob, at most "
            f"{download['max_connections']} per source, ranged after "
            f"{download['parallel_after_s']:g} s\n"
        )
    return out


def _plural(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def targets_table(result: Mapping[str, Any]) -> str:
    lines = ["| target | measured | goal | verdict |\n", "|---|--:|---|---|\n"]
    for t in targets(result):
        m = t["measured"]
        lines.append(
            f"| {t['target']} | {'-' if m is None else f'{m:.3f}'} | {t['goal']} | "
            f"{t['verdict']} |\n"
        )
    return "".join(lines)


def render(result: Mapping[str, Any]) -> str:
    p, m = result["params"], result["machine"]
    cmd = result["commands"][0] if result.get("commands") else ""
    tbf = p.get("tbf", {})
    head = [
        f"`{cmd}` on {m['cpus']} CPUs ({m['kernel']}), Python {m['python']}, "
        f"{m.get('distribution', '')}, {m['date']}.\n\n",
        f"- image `{p.get('image', '')}`: {p['image_bytes'] / MIB:g} MiB in {p['layers']} "
        f"layers (+ config + manifest); N = {', '.join(map(str, p['ns']))}; "
        f"scenarios {', '.join(p['scenarios'])}; puller concurrency {p['concurrency']}, "
        f"timeout {p['timeout_s']:g} s\n",
        f"- host download cap: {tbf.get('host', p['host_mbit'])}\n",
        *([f"- host upload cap: {tbf['host_up']}\n"] if "host_up" in tbf else []),
        f"- central registry upload cap: {tbf.get('central', p['central_mbit'])}\n",
        f"- S3: {s3_line(p)}; its egress: {tbf.get('s3', 'none')}; subnet "
        f"{p.get('subnet', '')} (inside the simulation's namespaces only)\n",
        *sidecar_lines(p),
        f"- wall time of the whole sweep: {result.get('wall_s', 0):.0f} s\n\n",
    ]
    notes = (
        "\nTimes are from the start signal (every host's puller waits for one file) to the "
        "image pulled and verified. 'S3 sent' / 'central sent' are the bytes the S3 and the "
        "registry namespace put on their link during the pull phase (kernel counters, TCP/IP "
        "headers included); 'S3 GET' counts the GETs the S3 stand-in logged (of blob data; with "
        "the capped stand-in also those with a Range header and the connections all requests "
        "came on); 'S3 per blob' is what S3 sent of each layer's data over the layer's size, the "
        "largest (and the mean), from the capped stand-in's own log. peers-kill leaves out "
        "the killed host's own pull; peers-liar's host 0 flips a byte of all it serves. CPU "
        "is the "
        "whole machine's busy share of all cores from /proc/stat, sampled every 0.5 s during "
        "the pull phase (mean / p90 / max), and the CPU seconds of each role's processes over "
        "the phase. 'caps allow' is the all-ready time the bandwidth caps alone permit for the "
        "bytes pulled (sidecar: one host's bytes at the host cap; central: the slower of that "
        "and all hosts' bytes at the central cap; with a per-connection S3 cap also the layers, "
        "concurrency at a time, each over one connection for central and single or "
        "connections_per_blob for sidecar); 'ratio' = all ready / caps allow, so a value "
        "near 1 says the caps, not the CPUs, set the time. The warmed pull crosses no capped "
        "link (sidecar to puller on loopback): it is CPU-bound by design and pessimistic here, "
        "where 40 hosts share 2 cores.\n"
    )
    return (
        "".join(head)
        + table(result)
        + notes
        + "\n"
        + targets_table(result)
        + f"\nPlots: `{PLOT_READY_VS_N}`, `{PLOT_CDF}`.\n"
    )


def plot(result: Mapping[str, Any], out: Path) -> list[Path]:
    """Ready time against N (one line per scenario) and the CDF of ready times at the
    largest N; returns the PNG paths."""
    series: dict[str, list[tuple[int, float, float, float]]] = {}
    for r in result["runs"]:
        s = r["pull"]["summary"]
        if s["p50_s"] is not None:
            series.setdefault(r["scenario"], []).append(
                (int(r["n"]), float(s["p50_s"]), float(s["p99_s"]), float(s["max_s"]))
            )
    p = result["params"]
    what = f"{p['image_bytes'] / MIB:g} MiB image, hosts {p['host_mbit']:g} Mbit/s"
    if p.get("s3_conn_mbit"):
        what += f", S3 {p['s3_conn_mbit']:g} Mbit/s a connection"
    ready_path = out / PLOT_READY_VS_N
    plot_ready_vs_n(series, ready_path, f"Scale-up: {what}, central {p['central_mbit']:g} Mbit/s")
    hi = max((int(r["n"]) for r in result["runs"]), default=0)
    cdf = {r["scenario"]: ready_times(r["pull"]) for r in result["runs"] if int(r["n"]) == hi}
    cdf_path = out / PLOT_CDF
    plot_cdf(cdf, cdf_path, f"Time to ready at N={hi}: {what}")
    return [ready_path, cdf_path]


def check_format(result: Mapping[str, Any]) -> list[str]:
    """What in ``result`` does not follow benchmarks/FORMATS.md section 2 (empty: all)."""
    problems = []
    if result.get("kind") != "scaleup" or result.get("version") != 1:
        problems.append("kind/version")
    for key in ("cpus", "kernel", "python", "date"):
        if key not in result.get("machine", {}):
            problems.append(f"machine.{key}")
    p = result.get("params", {})
    for key in ("image_bytes", "layers", "host_mbit", "central_mbit", "s3_mbit", "ns"):
        if key not in p:
            problems.append(f"params.{key}")
    for key in ("scenarios", "concurrency", "timeout_s"):
        if key not in p:
            problems.append(f"params.{key}")
    if not isinstance(result.get("commands"), list):
        problems.append("commands")
    for i, r in enumerate(result.get("runs", [])):
        for key in ("scenario", "n", "pull", "cpu", "backend", "wall_s"):
            if key not in r:
                problems.append(f"runs[{i}].{key}")
        pull: Any = r.get("pull", {})
        if pull.get("kind") != "pull" or "summary" not in pull or "clients" not in pull:
            problems.append(f"runs[{i}].pull")
        for key in ("busy_fraction_max", "busy_fraction_mean", "samples"):
            if key not in r.get("cpu", {}):
                problems.append(f"runs[{i}].cpu.{key}")
        for key in ("s3_get", "s3_bytes"):
            if key not in r.get("backend", {}):
                problems.append(f"runs[{i}].backend.{key}")
    return problems


def failed_pulls(runs: Sequence[Mapping[str, Any]]) -> int:
    return sum(int(r["pull"]["summary"]["failed"]) for r in runs)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.scaleup.report DIR``: render DIR/scaleup.md and the plots again
    from DIR/scaleup.json (no root needed)."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m benchmarks.scaleup.report")
    p.add_argument("dir", type=Path, help="an output dir of the simulation")
    args = p.parse_args(argv)
    result = json.loads((args.dir / "scaleup.json").read_text())
    problems = check_format(result)
    if problems:
        print(f"scaleup.json does not follow FORMATS.md: {', '.join(problems)}")
        return 1
    text = render(result)
    (args.dir / "scaleup.md").write_text(text)
    plot(result, args.dir)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
