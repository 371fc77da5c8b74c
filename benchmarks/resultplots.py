"""The PNGs of RESULTS.md: scale-up CDF and ready-vs-N (``regsidecar.bench.report``), the
sidecar's RSS while streaming cold blobs, and the capacity model's curves.

Small files: 6 x 4 in at 100 dpi (or 80 for ours), Agg canvas, no pyplot state.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.scaleup import model
from regsidecar.bench.report import plot_cdf, plot_ready_vs_n


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=80)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Any, ax: Any, path: Path, title: str) -> None:
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(str(path), format="png", dpi=80, metadata={"Software": None})


def scaleup_plots(scaleup: Mapping[str, Any], plots: Path) -> list[tuple[str, str]]:
    """CDF of the hosts' ready times per scenario at the largest N, and p50/p99/max vs N."""
    runs = list(scaleup.get("runs", []))
    if not runs:
        return []
    top = max(int(r["n"]) for r in runs)
    cdf: dict[str, list[float]] = {}
    vs_n: dict[str, list[tuple[int, float, float, float]]] = {}
    for r in runs:
        pull = r.get("pull") or {}
        s = pull.get("summary") or {}
        if int(r["n"]) == top:
            cdf[f"{r['scenario']} N={top}"] = [
                float(c["ready_s"]) if c.get("error") is None else float("inf")
                for c in pull.get("clients", [])
            ]
        if s.get("p50_s") is not None:
            point = (int(r["n"]), s["p50_s"], s["p99_s"], s["max_s"])
            vs_n.setdefault(r["scenario"], []).append(point)
    plot_cdf(cdf, plots / "scaleup_cdf.png", f"Time to image pulled, N={top} hosts")
    plot_ready_vs_n(vs_n, plots / "scaleup_ready_vs_n.png", "Time to image pulled vs hosts")
    return [
        ("scaleup_cdf.png", f"CDF of time to image pulled at N={top}"),
        ("scaleup_ready_vs_n.png", "p50, p99 and max time to image pulled vs N"),
    ]


def rss_timeline(micro: Mapping[str, Any], path: Path) -> bool:
    r = micro.get("rss") or {}
    samples = r.get("rss_timeline_mib") or []
    if not samples:
        return False
    fig, ax = _figure()
    ax.plot([t for t, _ in samples], [m for _, m in samples], label="VmRSS (sampled)")
    ax.axhline(150, color="red", linestyle="--", label="target 150 MiB")
    ax.set_xlabel("seconds since the clients started")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    _save(
        fig,
        ax,
        path,
        f"Sidecar RSS, {r['clients']} clients x {r['blob_bytes'] / 2**20:g} MiB cold streams",
    )
    return True


def model_plot(a: model.Analysis, path: Path) -> bool:
    """Modelled all-ready time vs hosts, central vs sidecar, 1 GiB and Kraken's 3 GiB."""
    ns = sorted({1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 2600, 5000})
    fig, ax = _figure()
    for size, layers, style in ((model.GIB, a.layers, "-"), (3 * model.GIB, 2, ":")):
        rows = [a.at(n, size, layers) for n in ns]
        tag = f"{size / model.GIB:g} GiB"
        ax.plot(ns, [r.central_s for r in rows], style, color="C3", label=f"central, {tag}")
        ax.plot(ns, [r.sidecar_s for r in rows], style, color="C0", label=f"sidecar, {tag}")
    k = model.KRAKEN
    ax.plot(
        [k["hosts"]] * 2, [k["p50_s"], k["p99_s"]], "k^", label="Kraken 3G: p50, p99 (published)"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("hosts pulling at once (N)")
    ax.set_ylabel("seconds until every host has the image")
    _save(fig, ax, path, "Modelled: 10 Gbit/s registry vs sidecars on S3")
    return True
