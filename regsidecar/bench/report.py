"""Summaries, merges, tables and plots of pull results (``benchmarks/FORMATS.md`` section 1).

Pure functions over the JSON objects ``regsidecar bench pull --json`` writes; matplotlib is
imported inside the two plot functions only (Agg, no pyplot state), so importing this module
stays cheap.

>>> percentile([1.0, 2.0, 3.0, 4.0], 50)
2.0
>>> summarize([{"ready_s": 1.5, "offset_s": 0.0, "bytes": 10, "requests": {"200": 3},
...             "error": None}])["p99_s"]
1.5
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from regsidecar.config import format_size

FAILURE_KINDS = ("timeout", "connect", "http", "digest", "reset", "other")
KIND = "pull"
VERSION = 1


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``p`` % of values at or
    below it; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summarize(clients: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The ``summary`` object of a result from its ``clients``.

    Percentiles are over successful clients' ``ready_s``; ``all_ready_s`` is the time from
    the first client's start to the last successful client's end, null if any failed (or
    none ran). ``failures`` has every kind, zeros included."""
    clients = list(clients)
    ok = [c for c in clients if _ok(c)]
    ready = [float(c["ready_s"]) for c in ok]
    failures = dict.fromkeys(FAILURE_KINDS, 0)
    requests: dict[str, int] = {}
    for c in clients:
        if not _ok(c):
            kind = c.get("error") if c.get("error") in failures else "other"
            failures[str(kind)] += 1
        for status, n in (c.get("requests") or {}).items():
            requests[status] = requests.get(status, 0) + int(n)
    failed = len(clients) - len(ready)
    all_ready = None
    if clients and not failed:
        first = min(float(c["offset_s"]) for c in clients)
        all_ready = max(float(c["offset_s"]) + float(c["ready_s"]) for c in clients) - first
    return {
        "clients": len(clients),
        "ok": len(ready),
        "failed": failed,
        "failures": failures,
        "p50_s": _round(percentile(ready, 50)),
        "p95_s": _round(percentile(ready, 95)),
        "p99_s": _round(percentile(ready, 99)),
        "max_s": _round(max(ready) if ready else None),
        "all_ready_s": _round(all_ready),
        "bytes": sum(int(c.get("bytes", 0)) for c in clients),
        "requests": dict(sorted(requests.items())),
    }


def _ok(client: Mapping[str, Any]) -> bool:
    return client.get("error") is None and client.get("ready_s") is not None


def merge(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One result from several (one per puller process, e.g. one per simulated host).

    Clients are renumbered in order (results in the order given, each one's clients in its
    order); offsets are moved onto the earliest ``started_at`` so that they stay comparable;
    ``params`` are the first result's with ``clients`` and ``targets`` covering all of them;
    the summary is recomputed."""
    if not results:
        raise ValueError("nothing to merge")
    for r in results:
        check(r)
    started = min(float(r["started_at"]) for r in results)
    clients: list[dict[str, Any]] = []
    targets: list[str] = []
    for r in results:
        shift = float(r["started_at"]) - started
        for c in r["clients"]:
            clients.append(
                {**c, "client": len(clients), "offset_s": round(float(c["offset_s"]) + shift, 6)}
            )
        for t in r["params"].get("targets", []):
            if t not in targets:
                targets.append(t)
    params = {**results[0]["params"], "clients": len(clients), "targets": targets}
    return {
        "kind": KIND,
        "version": VERSION,
        "params": params,
        "started_at": started,
        "clients": clients,
        "summary": summarize(clients),
    }


def check(result: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``result`` looks like a version 1 pull result."""
    if not isinstance(result, Mapping) or result.get("kind") != KIND:
        raise ValueError("not a pull result (kind is not 'pull')")
    if result.get("version") != VERSION:
        raise ValueError(f"pull result version {result.get('version')!r}, expected {VERSION}")
    for key in ("params", "started_at", "clients"):
        if key not in result:
            raise ValueError(f"pull result without {key!r}")


# -- tables -----------------------------------------------------------------------------------
TABLE_HEAD = (
    "| label | N | ok | failed | p50 | p95 | p99 | max | all ready | bytes | requests |\n"
    "|---|--:|--:|---|--:|--:|--:|--:|--:|--:|---|\n"
)


def markdown_table(results: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table, one row per result (its ``summary``, recomputed if absent)."""
    rows = []
    for r in results:
        s = r.get("summary") or summarize(r["clients"])
        failures = ", ".join(f"{k} {n}" for k, n in s["failures"].items() if n)
        failed = f"{s['failed']} ({failures})" if failures else str(s["failed"])
        requests = ", ".join(f"{status}: {n}" for status, n in s["requests"].items())
        cells = [
            _cell(r["params"].get("label") or r["params"].get("image", "")),
            str(s["clients"]),
            str(s["ok"]),
            failed,
            *(_seconds(s[k]) for k in ("p50_s", "p95_s", "p99_s", "max_s", "all_ready_s")),
            format_size(s["bytes"]),
            requests,
        ]
        rows.append("| " + " | ".join(cells) + " |\n")
    return TABLE_HEAD + "".join(rows)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


# -- grouping for the plots ----------------------------------------------------------------
def ready_times(result: Mapping[str, Any]) -> list[float]:
    """Every client's ready time; ``inf`` for a client that never became ready."""
    return [float(c["ready_s"]) if c.get("error") is None else math.inf for c in result["clients"]]


def cdf_series(results: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Ready times grouped by ``params.label`` (results with the same label are pooled)."""
    series: dict[str, list[float]] = {}
    for r in results:
        series.setdefault(_label(r), []).extend(ready_times(r))
    return series


def n_series(
    results: Sequence[Mapping[str, Any]],
) -> dict[str, list[tuple[int, float, float, float]]]:
    """(N, p50, p99, max) per label, one point per N: results with the same label and number
    of clients are merged first. Points without a successful client are left out."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for r in results:
        groups.setdefault((_label(r), len(r["clients"])), []).append(r)
    series: dict[str, list[tuple[int, float, float, float]]] = {}
    for (label, n), group in sorted(groups.items()):
        s = merge(group)["summary"] if len(group) > 1 else summarize(group[0]["clients"])
        if s["p50_s"] is not None:
            series.setdefault(label, []).append((n, s["p50_s"], s["p99_s"], s["max_s"]))
    return series


def _label(result: Mapping[str, Any]) -> str:
    params = result.get("params") or {}
    return str(params.get("label") or params.get("image") or "pull")


# -- plots ----------------------------------------------------------------------------------
def plot_cdf(series: Mapping[str, Sequence[float]], path: str | Path, title: str) -> None:
    """Time-to-ready CDF, one step line per scenario: y is the share of that scenario's
    clients ready by time x (``inf`` values count in the total but are never ready)."""
    fig, ax = _figure()
    for label, values in series.items():
        ready = sorted(v for v in values if math.isfinite(v))
        if not values:
            continue
        xs = [0.0, *ready]
        ys = [0.0, *((i + 1) / len(values) * 100 for i in range(len(ready)))]
        ax.step(xs, ys, where="post", label=f"{label} ({len(ready)}/{len(values)})")
    ax.set_xlabel("time to image pulled (s)")
    ax.set_ylabel("clients ready (%)")
    ax.set_ylim(0, 101)
    ax.set_xlim(left=0)
    _finish(fig, ax, path, title)


def plot_ready_vs_n(
    series: Mapping[str, Sequence[tuple[int, float, float, float]]],
    path: str | Path,
    title: str,
) -> None:
    """Ready time against the number of clients: p50 as a line, a band up to p99, max as
    crosses; one colour per scenario; log x when N spans more than a factor of 10."""
    fig, ax = _figure()
    all_n: list[int] = []
    for label, points in series.items():
        pts = sorted(points)
        if not pts:
            continue
        ns = [p[0] for p in pts]
        all_n += ns
        (line,) = ax.plot(ns, [p[1] for p in pts], marker="o", label=label)
        color = line.get_color()
        ax.fill_between(ns, [p[1] for p in pts], [p[2] for p in pts], color=color, alpha=0.2)
        ax.plot(ns, [p[3] for p in pts], linestyle="none", marker="x", color=color)
    if all_n:
        # One key for what the band and the crosses mean, whatever the number of scenarios.
        ax.fill_between([], [], [], color="grey", alpha=0.2, label="p50 to p99")
        ax.plot([], [], linestyle="none", marker="x", color="grey", label="max")
        if max(all_n) > 10 * min(all_n):
            from matplotlib.ticker import ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())  # 1, 10, 100 rather than 10^n
    ax.set_xlabel("clients (N)")
    ax.set_ylabel("time to image pulled (s), p50")
    ax.set_ylim(bottom=0)
    _finish(fig, ax, path, title)


def _figure() -> tuple[Any, Any]:
    # The object API with the Agg canvas: no pyplot, no global backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _finish(fig: Any, ax: Any, path: str | Path, title: str) -> None:
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(str(path), format="png", dpi=100)
