"""Render ``benchmarks/RESULTS.md`` and its plots from a run's JSON files and the model.

Inputs: ``micro.json`` (``python -m benchmarks.micro --json``), ``scaleup.json``
(``python -m benchmarks.scaleup``, FORMATS.md section 2) when the sweep ran, and the capacity
model (``benchmarks/scaleup/model.py``) fitted to it. Everything comes from those files (the
machine description too), so the same files render the same page anywhere::

    python -m benchmarks.results                      # the paths benchmarks/run writes
    python -m benchmarks.results --micro M.json --scaleup S.json --out R.md --plots DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import resultplots
from benchmarks.common import (
    TARGET_BLOB_VS_NGINX,
    TARGET_CAPPED_SPEEDUP,
    TARGET_COLD_VS_DIRECT,
    TARGET_MANIFEST_VS_DISTRIBUTION,
    TARGET_PUSH_VS_DISTRIBUTION,
    TARGET_RSS_MIB,
    fanout_most_gets,
)
from benchmarks.report import peak_rss, verdict
from benchmarks.report import render as render_micro
from benchmarks.scaleup import model

ROOT = Path(__file__).resolve().parent.parent
MICRO = ROOT / "benchmarks/results/micro.json"
SCALEUP = ROOT / "benchmarks/results/scaleup/scaleup.json"
OUT = ROOT / "benchmarks/RESULTS.md"
PLOTS = ROOT / "benchmarks/plots"

#: The scale-up targets (issue 6): a = central, b = sidecar, c = warmed, at the largest N.
FLAT_MAX = 1.3  # b at N=max over b at N=1
B_VS_A = 0.5
C_VS_A = 0.1


def _f(v: float | None, digits: int = 1, unit: str = "") -> str:
    return "-" if v is None else f"{v:,.{digits}f}{unit}"


def _ready(run: Mapping[str, Any]) -> float | None:
    s = (run.get("pull") or {}).get("summary") or {}
    v = s.get("all_ready_s")
    return s.get("max_s") if v is None else v


def targets_micro(micro: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """(target, measured, verdict, where) for each micro target present in the run."""
    rows = []
    if "blob" in micro:
        v = micro["blob"]["ratios"]["sidecar/nginx req/s"]
        rows.append((f"cache-hit blob req/s >= {TARGET_BLOB_VS_NGINX:g} x nginx", _f(v, 3),
                     verdict(v, TARGET_BLOB_VS_NGINX, True), "micro `blob`"))  # fmt: skip
    if "manifest" in micro:
        v = micro["manifest"]["ratios"]["sidecar-fs/distribution req/s"]
        t = TARGET_MANIFEST_VS_DISTRIBUTION
        rows.append((f"manifest-by-tag req/s >= {t:g} x distribution", _f(v, 3),
                     verdict(v, t, True), "micro `manifest`"))  # fmt: skip
    if "cold" in micro:
        v = micro["cold"]["ratio"]
        rows.append((f"cold pull <= {TARGET_COLD_VS_DIRECT:g} x direct S3 GET", _f(v, 3),
                     verdict(v, TARGET_COLD_VS_DIRECT, False), "micro `cold`"))  # fmt: skip
    if "capped" in micro:
        v = micro["capped"]["speedup_vs_direct"]
        t = TARGET_CAPPED_SPEEDUP
        rows.append((f"capped S3: cold pull >= {t:g} x faster than one GET", _f(v, 2),
                     verdict(v, t, True), "micro `capped`"))  # fmt: skip
    if "fanout" in micro:
        f = micro["fanout"]
        most = fanout_most_gets(f)
        rows.append((f"{f['clients']} concurrent cold requests -> at most one S3 GET per part "
                     f"({most})", str(f["s3_data_gets"]), verdict(f["s3_data_gets"], most, False),
                     "micro `fanout`"))  # fmt: skip
    if "rss" in micro:
        r = micro["rss"]
        v = peak_rss(r)
        rows.append((f"RSS <= {TARGET_RSS_MIB:g} MiB, {r['clients']} streams of "
                     f"{r['blob_bytes'] / 2**20:g} MiB", _f(v, 1, " MiB"),
                     verdict(v, TARGET_RSS_MIB, False), "micro `rss`"))  # fmt: skip
    if "push" in micro:
        p = micro["push"]
        v = p["ratio"]
        rows.append((f"push of a {p['layer_bytes'] / 2**20:g} MiB layer <= "
                     f"{TARGET_PUSH_VS_DISTRIBUTION:g} x distribution", _f(v, 3),
                     verdict(v, TARGET_PUSH_VS_DISTRIBUTION, False), "micro `push`"))  # fmt: skip
    return rows


def targets_scaleup(scaleup: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """The scale-up targets at the largest N that central and sidecar both ran."""
    by = {(r["scenario"], int(r["n"])): r for r in scaleup.get("runs", [])}
    ns = sorted({n for s, n in by if s == "sidecar"} & {n for s, n in by if s == "central"})
    rows: list[tuple[str, str, str, str]] = []
    if not ns:
        return rows
    top = ns[-1]
    a, b = _ready(by[("central", top)]), _ready(by[("sidecar", top)])
    b1 = _ready(by[("sidecar", 1)]) if ("sidecar", 1) in by else None
    c = _ready(by[("warmed", top)]) if ("warmed", top) in by else None

    def check(name: str, num: float | None, den: float | None, t: float) -> None:
        v = num / den if num is not None and den else None
        rows.append((f"{name} <= {t:g}", _f(v, 3), verdict(v, t, False), "scale-up"))

    check(f"sidecar flat: all ready at N={top} / N=1", b, b1, FLAT_MAX)
    check(f"sidecar / central, all ready at N={top}", b, a, B_VS_A)
    if c is not None:
        check(f"warmed / central, all ready at N={top}", c, a, C_VS_A)
    failed = sum(
        int(((r.get("pull") or {}).get("summary") or {}).get("failed") or 0)
        for (s, _), r in by.items()
        if s in ("sidecar", "warmed")
    )
    rows.append(("failures in sidecar and warmed runs = 0", str(failed),
                 "met" if failed == 0 else "MISSED", "scale-up"))  # fmt: skip
    return rows


def scaleup_table(scaleup: Mapping[str, Any]) -> list[str]:
    out = [
        "| scenario | N | ok | failed | p50 | p95 | p99 | max | all ready | CPU busy max "
        "| S3 GETs | wall |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    order = {s: i for i, s in enumerate(scaleup.get("params", {}).get("scenarios", []))}
    runs = sorted(scaleup.get("runs", []), key=lambda r: (order.get(r["scenario"], 99), r["n"]))
    for r in runs:
        s = (r.get("pull") or {}).get("summary") or {}
        cpu = (r.get("cpu") or {}).get("busy_fraction_max")
        gets = (r.get("backend") or {}).get("s3_get")
        out.append(
            f"| {r['scenario']} | {r['n']} | {s.get('ok', '-')} | {s.get('failed', '-')} "
            + "".join(f"| {_f(s.get(k), 2, ' s')} " for k in ("p50_s", "p95_s", "p99_s", "max_s"))
            + f"| {_f(s.get('all_ready_s'), 2, ' s')} "
            f"| {'-' if cpu is None else f'{100 * cpu:.0f}%'} | {'-' if gets is None else gets} "
            f"| {_f(r.get('wall_s'), 1, ' s')} |"
        )
    return out


def single_vs_sidecar(scaleup: Mapping[str, Any]) -> list[str]:
    """What parallel ranged parts bought: all-ready of sidecar over single, per N."""
    by = {(r["scenario"], int(r["n"])): r for r in scaleup.get("runs", [])}
    ns = sorted({n for s, n in by if s == "sidecar"} & {n for s, n in by if s == "single"})
    pairs = []
    for n in ns:
        b, s = _ready(by[("sidecar", n)]), _ready(by[("single", n)])
        if b is not None and s:
            pairs.append(f"N={n} {b / s:.3f}")
    if not pairs:
        return []
    return [
        "All ready, sidecar (ranged parts) / single (one connection per blob): "
        + ", ".join(pairs)
        + ".",
        "",
    ]


def machine_table(micro: Mapping[str, Any] | None, scaleup: Mapping[str, Any] | None) -> list[str]:
    m: dict[str, Any] = {**((scaleup or {}).get("machine") or {})}
    m.update(((micro or {}).get("meta") or {}).get("machine") or {})
    names = [
        ("cpu_model", "CPU"), ("cpus", "cores"), ("mem_gib", "RAM (GiB)"), ("os", "OS"),
        ("kernel", "kernel"), ("python", "Python"), ("aiohttp", "aiohttp"),
        ("nginx", "nginx"), ("distribution", "distribution"), ("moto", "moto"),
        ("regsidecar", "regsidecar"),
    ]  # fmt: skip
    out = ["| | |", "|---|---|"]
    out += [f"| {label} | {m[k]} |" for k, label in names if m.get(k) not in (None, "", "?")]
    return out


def render(
    micro: Mapping[str, Any] | None,
    scaleup: Mapping[str, Any] | None,
    out: Path,
    plots: Path,
    scaleup_note: str = "",
) -> str:
    """Write the plots under ``plots`` and return the Markdown of ``out`` (links relative)."""
    plots.mkdir(parents=True, exist_ok=True)

    def link(name: str, alt: str) -> str:
        return f"![{alt}]({os.path.relpath(plots / name, out.parent)})"

    dates = [
        ((micro or {}).get("meta") or {}).get("date"),
        ((scaleup or {}).get("machine") or {}).get("date"),
    ]
    md = [
        "# Benchmark results",
        "",
        "Generated by `benchmarks/run` (`python -m benchmarks.results` renders this page from "
        "the run's JSON files); do not edit by hand. What each benchmark measures, and the "
        "interpretation and profiles of these numbers: [README.md](README.md).",
        f"Runs: {', '.join(d for d in dates if d) or 'unknown date'}. Every number below is "
        "**measured** on the machine described here, except in the section *Capacity model*, "
        "where each number says whether it is measured, stated or modelled.",
        "",
        "## Targets",
        "",
        "| target | measured | verdict | benchmark |",
        "|---|--:|---|---|",
    ]
    rows = (targets_micro(micro) if micro else []) + (targets_scaleup(scaleup) if scaleup else [])
    md += [f"| {t} | {v} | {verdict_} | {w} |" for t, v, verdict_, w in rows]
    md += ["", "## Machine", "", *machine_table(micro, scaleup), "", "## Commands", "", "```",
           "benchmarks/run    # all of the below"]  # fmt: skip
    if micro:
        md.append(micro["meta"]["command"])
        md += [
            f"{r['command']}   # {r['date']}: {', '.join(r['benches'])} from this later run"
            for r in micro["meta"].get("reruns", [])
        ]
    md += list((scaleup or {}).get("commands") or [])
    md += ["python -m benchmarks.results", "```", ""]
    md += ["## Micro benchmarks", ""]
    if micro:
        body = render_micro(dict(micro)).split("\n")
        md += [line for line in body if not line.startswith("## ")]
        if resultplots.rss_timeline(micro, plots / "rss.png"):
            md += ["", link("rss.png", "sidecar RSS while streaming cold blobs")]
    else:
        md.append("Not run (no micro.json).")
    md += ["", "## Scale-up", ""]
    if scaleup:
        p = scaleup.get("params", {})
        conn = p.get("s3_conn_mbit")
        s3 = (
            f"S3 = nginx serving the bucket with {conn:g} Mbit/s per connection (S3's per-"
            "connection limit, scaled like the host caps: about 1/8 of a host's NIC), "
            + (f"sidecar parts of {p['part_mib']:g} MiB, " if p.get("part_mib") else "")
            if conn
            else f"S3 = moto, egress cap {p.get('s3_mbit') or 'none'}, "
        )
        md += [
            f"{p.get('image_bytes', 0) / 2**20:g} MiB image in {p.get('layers', '?')} layers; "
            f"per-host cap {p.get('host_mbit', '-')} Mbit/s, central registry cap "
            f"{p.get('central_mbit', '-')} Mbit/s; {s3}docker-like concurrency "
            f"{p.get('concurrency', '-')}. Scenarios: central = every host pulls from one "
            "registry:2 on the same S3; sidecar = every host pulls through its own cold "
            "regsidecar (default download settings: ranged parts once one connection is too "
            "slow); single = the same with one connection per blob "
            "(`download.connections_per_blob: 1`, the behaviour before ranged parts); "
            "warmed = the sidecars were warmed first. 'all ready' is the time until the last "
            "host has the image; CPU busy max is the whole machine's.",
            "",
            *scaleup_table(scaleup),
            "",
            *single_vs_sidecar(scaleup),
        ]
        made = resultplots.scaleup_plots(scaleup, plots)
        md += [link(name, alt) for name, alt in made]
    else:
        md.append(scaleup_note or "Not run (no scaleup.json).")
        for stale in ("scaleup_cdf.png", "scaleup_ready_vs_n.png"):
            (plots / stale).unlink(missing_ok=True)
    analysis = model.analyse(scaleup or {})
    md += ["", "## Capacity model", "", analysis.markdown]
    if resultplots.model_plot(analysis, plots / "model.png"):
        md += [link("model.png", "modelled all-ready time vs hosts"), ""]
    md += [
        "Sources of the stated parameters: "
        + "; ".join(f"{k}: {v}" for k, v in model.SOURCES.items())
        + "."
    ]
    return "\n".join(md).rstrip() + "\n"


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.results", description=__doc__.split("\n")[0]
    )
    p.add_argument("--micro", type=Path, default=MICRO, help=f"default {MICRO.relative_to(ROOT)}")
    p.add_argument(
        "--scaleup", type=Path, default=SCALEUP, help=f"default {SCALEUP.relative_to(ROOT)}"
    )
    p.add_argument("--out", type=Path, default=OUT, help=f"default {OUT.relative_to(ROOT)}")
    p.add_argument("--plots", type=Path, default=PLOTS, help=f"default {PLOTS.relative_to(ROOT)}")
    p.add_argument("--scaleup-note", default="", help="what to say when there is no scaleup.json")
    args = p.parse_args(argv)
    micro, scaleup = _load(args.micro), _load(args.scaleup)
    if micro is None and scaleup is None:
        print(f"results: neither {args.micro} nor {args.scaleup} exists", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(micro, scaleup, args.out, args.plots, args.scaleup_note))
    print(f"results: wrote {args.out} and plots under {args.plots}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
