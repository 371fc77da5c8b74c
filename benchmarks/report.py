"""The Markdown report of a run (the JSON holds the same numbers and more)."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

import aiohttp

import regsidecar
from benchmarks.common import (
    TARGET_BLOB_VS_NGINX,
    TARGET_CAPPED_SPEEDUP,
    TARGET_COLD_VS_DIRECT,
    TARGET_MANIFEST_VS_DISTRIBUTION,
    TARGET_PUSH_VS_DISTRIBUTION,
    TARGET_RSS_MIB,
    fanout_most_gets,
)
from benchmarks.loadgen import MiB
from tests.rig.proc import which

# -- report ---------------------------------------------------------------------------------


def _f(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def verdict(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return "n/a"
    met = value >= target if higher_is_better else value <= target
    if met:
        return "met"
    short = (target - value) / target if higher_is_better else (value - target) / target
    return f"MISSED by {100 * short:.1f}%"


def peak_rss(r: dict[str, Any]) -> float | None:
    values = [v for v in (r["peak_rss_sampled_mib"], r["vmhwm_after_stream_mib"]) if v is not None]
    return max(values) if values else None


def render(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [
        f"## regsidecar micro benchmarks, {meta['date']}",
        "",
        f"`{meta['command']}` on {meta['machine']['cpus']} CPUs ({meta['machine']['kernel']}), "
        f"Python {meta['machine']['python']}, aiohttp {meta['machine']['aiohttp']}, "
        f"{meta['machine']['nginx']}, {meta['machine']['distribution']}.",
        "",
    ]
    rows = [r for b in ("blob", "manifest") if b in results for r in results[b]["rows"]]
    if rows:
        rounds = len(rows[0]["req_s_rounds"])
        rps_head = f"req/s (median of {rounds} rounds: all rounds)" if rounds > 1 else "req/s"
        out += [
            f"| bench | server | c | {rps_head} | MiB/s | p50 ms | p99 ms "
            "| server CPU s (% of a core) | hey CPU s | rest of machine CPU s | S3 req | non-200 |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for r in rows:
            rps = _f(r["req_s"])
            if rounds > 1:
                rps += ": " + " / ".join(_f(x) for x in r["req_s_rounds"])
            out.append(
                f"| {r['bench']} | {r['server']} | {r['concurrency']} | {rps} "
                f"| {_f(r['mib_s']) if r['bench'] == 'blob' else '-'} "
                f"| {_f(r['p50_ms'], 2)} | {_f(r['p99_ms'], 2)} "
                f"| {_f(r['server_cpu_s'], 2)} ({_f(r['server_cpu_pct_of_core'], 0)}%) "
                f"| {_f(r['client_cpu_s'], 2)} | {_f(r['other_cpu_s'], 2)} "
                f"| {r['s3_requests_during_load']} | {r['bad']} |"
            )
        out += [
            "",
            "MiB/s, latencies and CPU are those of the median round. CPU is utime+stime from "
            "/proc over the load (server: its process and children, all threads; hey: its rusage). "
            "'rest of machine' is all other busy CPU time meanwhile, from /proc/stat (moto, "
            "this script, anything else running here; about ±0.3 s of noise): near 0 means "
            "nothing else competed for the cores. 'S3 req' counts requests moto logged during "
            "the load.",
            "",
        ]
    ratios: list[tuple[str, float | None, str, str]] = []
    if "blob" in results:
        rb = results["blob"]["ratios"]
        v = rb["sidecar/nginx req/s"]
        t = TARGET_BLOB_VS_NGINX
        ratios.append(("blob: regsidecar / nginx req/s", v, f">= {t:g}", verdict(v, t, True)))
        v = rb["sidecar/distribution req/s"]
        ratios.append(("blob: regsidecar / distribution req/s", v, "-", ""))
    if "manifest" in results:
        rm = results["manifest"]["ratios"]
        v = rm["sidecar-fs/distribution req/s"]
        t = TARGET_MANIFEST_VS_DISTRIBUTION
        ratios.append(
            ("manifest: regsidecar (fs) / distribution req/s", v, f">= {t:g}", verdict(v, t, True))
        )
        v = rm["sidecar-s3/distribution req/s"]
        ratios.append(("manifest: regsidecar (S3) / distribution req/s", v, "-", ""))
        v = rm["sidecar-fs/bare aiohttp req/s"]
        ratios.append(("manifest: regsidecar (fs) / bare aiohttp req/s", v, "-", ""))
    if "cold" in results:
        v = results["cold"]["ratio"]
        t = TARGET_COLD_VS_DIRECT
        ratios.append(
            ("cold GET: through regsidecar / direct S3 GET (median s)", v, f"<= {t:g}",
             verdict(v, t, False))
        )  # fmt: skip
    if "capped" in results:
        c = results["capped"]
        v = c["speedup_vs_direct"]
        t = TARGET_CAPPED_SPEEDUP
        ratios.append(
            ("capped S3: direct single GET / through regsidecar (median s)", v, f">= {t:g}",
             verdict(v, t, True))
        )  # fmt: skip
        v = c["speedup_vs_distribution"]
        ratios.append(("capped S3: distribution 2.8 / through regsidecar (median s)", v, "-", ""))
    if "push" in results:
        v = results["push"]["ratio"]
        t = TARGET_PUSH_VS_DISTRIBUTION
        ratios.append(
            ("push: regsidecar / distribution (median s, layer + config + manifest)", v,
             f"<= {t:g}", verdict(v, t, False))
        )  # fmt: skip
        v = results["push"]["ratio_layer"]
        ratios.append(("push: regsidecar / distribution (median s, layer only)", v, "-", ""))
    if ratios:
        out += ["| ratio | measured | target | verdict |", "|---|--:|---|---|"]
        out += [f"| {n} | {_f(v, 3)} | {t} | {verdict} |" for n, v, t, verdict in ratios]
        out.append("")
    out += cold_tables(results)
    out += capped_tables(results)
    out += push_tables(results)
    if "rss" in results:
        r = results["rss"]
        size_mib = r["blob_bytes"] / MiB
        share = (
            f"; {r.get('reduced_by') or 'upload budget'} reached: {r['distinct_blobs']} "
            "distinct blobs, client i reads "
            f"blob i mod {r['distinct_blobs']} "
            f"(full set estimated {r['estimated_full_upload_s']} s)"
            if r["reduced"]
            else ""
        )
        out += [
            "| cold stream through regsidecar (S3 on moto) | value |",
            "|---|---|",
            f"| clients x blob size | {r['clients']} x {size_mib:g} MiB, "
            f"{r['distinct_blobs']} distinct blobs{share} |",
            f"| generate + upload to moto | {r['upload_s']} s ({r['per_blob_s']} s per blob, "
            f"{r['upload_mib_s']} MiB/s) |",
            f"| baseline RSS after start | {_f(r['baseline_rss_mib'])} MiB |",
            f"| peak VmRSS, sampled every {r['interval_s'] * 1000:g} ms ({r['samples']} samples) "
            f"| {_f(r['peak_rss_sampled_mib'])} MiB |",
            f"| VmHWM after the stream (kernel's peak) | {_f(r['vmhwm_after_stream_mib'])} MiB |",
            f"| target: peak (max of sampled and VmHWM) <= {TARGET_RSS_MIB:g} MiB | "
            f"{verdict(peak_rss(r), TARGET_RSS_MIB, False)} |",
            f"| wall time, aggregate throughput | {r['stream_wall_s']} s, "
            f"{r['aggregate_mib_s']} MiB/s (each client {r['client_seconds_min_max'][0]}"
            f"-{r['client_seconds_min_max'][1]} s) |",
            f"| CPU during the stream | sidecar {r['server_cpu_s']} s "
            f"({_f(r['server_cpu_pct_of_core'], 0)}% of a core), moto {r['moto_cpu_s']} s, "
            f"clients (this script) {r['client_cpu_s']} s, rest of the machine "
            f"{r['other_cpu_s']} s |",
            f"| sha256 verified by the clients | {r['verified_ok']}/{r['clients']} "
            f"(X-Cache {', '.join(r['x_cache'])}; S3 GETs of blob data {r['s3_blob_gets']}) |",
            "",
        ]
    out += [
        "Notes: hey and every server run on the same machine and share its "
        f"{meta['machine']['cpus']} cores (so does the moto server, and the aiohttp client of "
        "the cold stream): a server near 100% of a core is CPU-bound, and the load generator "
        "takes CPU from it. hey targets 127.0.0.1 only; every load is bounded by -z.",
    ]
    return "\n".join(out)


def cold_tables(results: dict[str, Any]) -> list[str]:
    """The cold GET rounds and the fan-out result, as Markdown lines."""
    out: list[str] = []
    if "cold" in results:
        c = results["cold"]
        out += [
            f"| cold GET of one {c['blob_bytes'] / MiB:g} MiB blob, round | path | seconds "
            "| MiB/s | sidecar CPU s | moto CPU s | client CPU s | rest of machine CPU s "
            "| S3 GETs of data | sha256 |",
            "|--:|---|--:|--:|--:|--:|--:|--:|--:|---|",
        ]
        for r in sorted(c["direct"] + c["sidecar"], key=lambda r: (r["round"], r["path"])):
            out.append(
                f"| {r['round']} | {r['path']} | {r['seconds']:.2f} | {_f(r['mib_s'])} "
                f"| {_f(r['server_cpu_s'], 2)} | {_f(r['moto_cpu_s'], 2)} "
                f"| {_f(r['client_cpu_s'], 2)} | {_f(r['other_cpu_s'], 2)} | {r['s3_data_gets']} "
                f"| {'ok' if r['sha256_ok'] and r['status'] == 200 else 'BAD'} |"
            )
        out += [
            "",
            f"Median of {len(c['direct'])} rounds: direct {c['median_direct_s']:.2f} s, through "
            f"a fresh sidecar {c['median_sidecar_s']:.2f} s (ratio {_f(c['ratio'], 3)}). Each "
            "sidecar round starts a new sidecar with an empty cache (start-up not timed); the "
            "order of the two alternates between rounds.",
            "",
        ]
    if "fanout" in results:
        f = results["fanout"]
        gets = f["s3_data_gets"]
        most = fanout_most_gets(f)
        out += [
            f"| {f['clients']} concurrent cold GETs of one {f['blob_bytes'] / MiB:g} MiB blob "
            "| value |",
            "|---|---|",
            f"| S3 GETs of the blob's data (target: at most one per part, {most}) | {gets} "
            f"({verdict(gets, most, False)}) |",
            "| all S3 requests during the fan-out | "
            + ", ".join(f"{k} x{n}" for k, n in f["s3_requests"].items())
            + " |",
            f"| bodies sha256-verified | {f['verified_ok']}/{f['clients']} (X-Cache "
            + ", ".join(f"{k} {n}" for k, n in sorted(f["x_cache"].items()))
            + ") |",
            f"| wall time, aggregate to clients | {f['wall_s']} s, {f['aggregate_mib_s']} MiB/s "
            f"(each client {f['client_seconds_min_max'][0]}-{f['client_seconds_min_max'][1]} s)"
            " |",
            f"| sidecar CPU, RSS baseline -> peak | {f['server_cpu_s']} s, "
            f"{_f(f['baseline_rss_mib'])} -> {_f(f['peak_rss_sampled_mib'])} MiB |",
            "",
        ]
    return out


def capped_tables(results: dict[str, Any]) -> list[str]:
    """The rounds of the capped-connection cold GET, as Markdown lines."""
    if "capped" not in results:
        return []
    c = results["capped"]
    out = [
        f"| cold GET of one {c['blob_bytes'] / MiB:g} MiB blob, S3 capped at {c['rate']} "
        "per connection, round | path | seconds | MiB/s | server CPU s | nginx CPU s "
        "| S3 GETs of data (ranged) | connections | parts x part size | sha256 |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    every = c["direct"] + c["sidecar"] + c["distribution"]
    for r in sorted(every, key=lambda r: (r["round"], r["path"])):
        parts = (
            f"{r['parts']} x {r['part_bytes'] / MiB:g} MiB" if r.get("parts") is not None else "-"
        )
        out.append(
            f"| {r['round']} | {r['path']} | {r['seconds']:.2f} | {_f(r['mib_s'])} "
            f"| {_f(r['server_cpu_s'], 2)} | {_f(r['nginx_cpu_s'], 2)} "
            f"| {r['s3_data_gets']} ({r['s3_ranged_gets']}) | {r['s3_connections']} | {parts} "
            f"| {'ok' if r['sha256_ok'] and r['status'] == 200 else 'BAD'} |"
        )
    m = c["median_s"]
    out += [
        "",
        f"Median of {len(c['direct'])} rounds: one direct GET {m['direct']:.2f} s, through a "
        f"fresh regsidecar {m['sidecar']:.2f} s ({_f(c['speedup_vs_direct'], 2)}x faster), "
        f"through distribution 2.8 {m['distribution']:.2f} s "
        f"({_f(c['speedup_vs_distribution'], 2)}x slower than the sidecar). The stand-in is nginx "
        "serving the registry:2 tree path-style with `limit_rate` per connection; it does not "
        "model time to first byte, SlowDown or request-rate limits. Connections are nginx's "
        "connection numbers of the blob's GETs; the sidecar's parts are from its "
        "'blob cached' log line. The order of the three rotates between rounds.",
        "",
    ]
    return out


def _methods(s3: dict[str, Any]) -> str:
    return f"{s3['total']} (" + ", ".join(f"{m} {n}" for m, n in s3["by_method"].items()) + ")"


def push_tables(results: dict[str, Any]) -> list[str]:
    """The push rounds, the S3 requests of one layer push, the promotions, as Markdown lines."""
    if "push" not in results:
        return []
    p = results["push"]
    rows = [r for rs in p["rows"].values() for r in rs]
    out = [
        f"| push of one {p['layer_bytes'] / MiB:g} MiB layer, round | target | layer s "
        "(POST / PATCH / PUT) | MiB/s | image s (+ config, manifest) | server CPU s "
        "| moto CPU s | client CPU s | rest of machine CPU s | S3 requests for the layer "
        "| server peak RSS MiB | verified |",
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|---|--:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["round"], r["target"])):
        out.append(
            f"| {r['round']} | {r['target']} | {r['seconds']:.2f} ({r['post_s']:.3f} / "
            f"{r['patch_s']:.2f} / {r['put_s']:.2f}) | {_f(r['mib_s'])} | {r['image_s']:.2f} "
            f"| {_f(r['server_cpu_s'], 2)} | {_f(r['moto_cpu_s'], 2)} "
            f"| {_f(r['client_cpu_s'], 2)} | {_f(r['other_cpu_s'], 2)} | {_methods(r['s3_layer'])} "
            f"| {_f(r['peak_rss_sampled_mib'])} | {'ok' if r['verified'] else 'BAD'} |"
        )
    med, mibs = p["median"], p["median_mib_s"]
    sc, dist = med.get("regsidecar") or {}, med.get("distribution") or {}
    settings = p["sidecar_push_settings"]
    out += [
        "",
        f"Median of {len(p['rows'].get('regsidecar', []))} rounds: regsidecar layer "
        f"{_f(sc.get('seconds'), 2)} s ({_f(mibs.get('regsidecar'))} MiB/s), image "
        f"{_f(sc.get('image_s'), 2)} s; distribution layer {_f(dist.get('seconds'), 2)} s "
        f"({_f(mibs.get('distribution'))} MiB/s), image {_f(dist.get('image_s'), 2)} s "
        f"(ratio {_f(p['ratio'], 3)}, layer only {_f(p['ratio_layer'], 3)}). The order of the "
        "two alternates between rounds; each round pushes a new random layer. regsidecar runs "
        "with HTTP Basic auth (the client sends credentials on every request), push settings "
        f"multipart_threshold {settings['multipart_threshold_bytes'] / MiB:g} MiB, parts "
        f"{settings['part_bytes'] / MiB:g} MiB; its peak RSS {_f(p['sidecar_peak_rss_mib'])} MiB "
        f"(VmHWM after all rounds {_f(p['sidecar_vmhwm_mib'])} MiB), upload sessions left "
        f"on disk {len(p['sidecar_uploads_left'])}.",
        "",
    ]
    first = {label: rs[0]["s3_layer"]["by_kind"] for label, rs in p["rows"].items() if rs}
    if first:
        labels = list(first)
        kinds = sorted({k for by in first.values() for k in by})
        out += [
            "| S3 requests of the layer push (round 1), by kind | " + " | ".join(labels) + " |",
            "|---|" + "--:|" * len(labels),
        ]
        out += [
            f"| {k} | " + " | ".join(str(first[label].get(k, 0)) for label in labels) + " |"
            for k in kinds
        ]
        out += [
            "",
            "From moto's request log, from the POST to the 201 of the PUT. A PUT onto the layer's "
            "data key after the body was staged under `_uploads/` is a server-side copy "
            "(the log has no headers to show `x-amz-copy-source`).",
            "",
        ]
    pr = p["promote"]
    if pr["rounds"]:
        out += [
            "| promote (`POST /-/promote`, tag qa), round | seconds | S3 requests "
            "| S3 writes to blobs/ | verified |",
            "|--:|--:|---|--:|---|",
        ]
        for r in pr["rounds"]:
            made = ", ".join(f"{k} x{n}" for k, n in r["s3"]["by_kind"].items())
            out.append(
                f"| {r['round']} | {r['seconds']:.4f} | {r['s3']['total']}: {made} "
                f"| {r['s3_blob_writes']} | {'ok' if r['verified'] else 'BAD'} |"
            )
        out += ["", f"Promote median {_f(pr['median_s'], 4)} s.", ""]
    if p["failures"]:
        out += ["Push failures (the rounds stopped there):", ""]
        out += [f"- {f}" for f in p["failures"]]
        out.append("")
    return out


def bad_responses(results: dict[str, Any]) -> int:
    """Responses of the run that were not a verified 200 (the exit code is 1 if any)."""
    bad = sum(
        int(r["bad"]) for b in ("blob", "manifest") if b in results for r in results[b]["rows"]
    )
    for b in ("rss", "fanout"):
        if b in results:
            bad += results[b]["clients"] - results[b]["verified_ok"]
    for b in ("cold", "capped"):
        if b in results:
            bad += results[b]["gets"] - results[b]["verified_ok"]
    if "push" in results:
        p = results["push"]
        bad += p["pushes"] - p["verified_ok"] + len(p["failures"])
        bad += len(p["promote"]["rounds"]) - p["promote"]["verified_ok"]
    return bad


def _version(argv: list[str]) -> str:
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (cp.stdout + cp.stderr).strip().splitlines()
    return text[0] if text else ""


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mem_total_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "?")
    except OSError:
        return "?"


def _commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    head = _version(["git", "-C", root, "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"])
    return head + (" + uncommitted changes" if dirty not in ("", "?") else "")


def machine() -> dict[str, Any]:
    import moto

    return {
        "cpu_model": _cpu_model(),
        "mem_gib": _mem_total_gib(),
        "os": _os_name(),
        "moto": moto.__version__,
        "regsidecar": f"{regsidecar.__version__} (commit {_commit()})",
        "cpus": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "nginx": _version([which("nginx"), "-v"]).replace("nginx version: ", ""),
        "distribution": "distribution "
        + _version([which("docker-registry"), "--version"]).rsplit(" ", 1)[-1],
    }
