"""``regsidecar bench pull|report``: the scale-up load harness (pull clients, their report)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from regsidecar.commands import SubParsers


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "bench",
        help="load harness: N docker-like pull clients, and reports of their results",
        description="Measure how long a fleet takes to pull an image. 'bench pull' runs pull "
        "clients that make the requests dockerd makes; 'bench report' turns their JSON "
        "results into a Markdown table and plots.",
    )
    commands = p.add_subparsers(dest="bench_command", required=True, metavar="COMMAND")
    _register_pull(commands)
    _register_report(commands)
    p.set_defaults(needs_settings=False)


def _register_pull(commands: SubParsers) -> None:
    p = commands.add_parser(
        "pull",
        help="pull an image with N concurrent docker-like clients; time each one",
        description="Each client is one host (its own connections) pulling as dockerd does: "
        "GET /v2/, HEAD the tag's manifest then GET it by digest (with docker's Accept list), "
        "the --platform manifest of an index, then the config and the layers, --concurrency "
        "at a time; every body is checked against its digest; a failed layer download is "
        "retried like docker (--attempts, waiting N x --retry-delay). The result is one JSON "
        "object (benchmarks/FORMATS.md section 1); a Markdown summary goes to stdout and a "
        "progress line to stderr on a terminal. Exit status 0 if every client pulled the "
        "image, 1 if any failed, 2 for bad arguments.",
    )
    p.add_argument(
        "--image", required=True, metavar="NAME:TAG|NAME@DIGEST", help="the image to pull"
    )
    p.add_argument(
        "--url",
        action="append",
        default=[],
        metavar="URL",
        help="registry URL; repeatable: client i pulls from the (i mod count)-th URL "
        "(one URL: a central registry; one per client: each host's sidecar)",
    )
    p.add_argument(
        "--targets", metavar="FILE", help="read target URLs from FILE, one per line ('#' comments)"
    )
    p.add_argument("--clients", type=int, default=1, metavar="N", help="clients (1..10000)")
    p.add_argument(
        "--ramp",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="start client i at i*SECONDS/N (default 0: all at once)",
    )
    p.add_argument(
        "--platform",
        default="linux/amd64",
        metavar="OS/ARCH[/VARIANT]",
        help="platform to take from a multi-platform image (default linux/amd64)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=3,
        metavar="N",
        help="layer downloads at once per client (docker's max-concurrent-downloads, 3)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="each client's limit for the whole pull, and for waiting on --start-file "
        "(default 600)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="TCP connect limit (docker's dialer: 30)",
    )
    p.add_argument(
        "--attempts",
        type=int,
        default=5,
        metavar="N",
        help="tries per layer download (docker's max-download-attempts, 5)",
    )
    p.add_argument(
        "--retry-delay",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="wait N x SECONDS after the N-th failed try of a layer (docker: 5)",
    )
    p.add_argument(
        "--keep-alive",
        action="store_true",
        help="reuse connections (docker's registry transport does not; containerd does)",
    )
    p.add_argument("--label", default="", metavar="TEXT", help="scenario name for the report")
    p.add_argument("--json", metavar="OUT", help="write the result JSON to OUT ('-': stdout)")
    p.add_argument(
        "--ready-file", type=Path, metavar="PATH", help="create PATH once set up, before waiting"
    )
    p.add_argument(
        "--start-file",
        type=Path,
        metavar="PATH",
        help="start only once PATH exists (polled every 10 ms, at most --timeout)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(run=run_pull, needs_settings=False)


def _register_report(commands: SubParsers) -> None:
    p = commands.add_parser(
        "report",
        help="Markdown table and plots from 'bench pull' results",
        description="Read one or more 'bench pull --json' results and write a Markdown "
        "table (one row per result), a time-to-ready CDF (one line per --label) and a "
        "ready-time-vs-N plot (one line per label, one point per number of clients; results "
        "with the same label and N are merged). The table goes to stdout unless --markdown.",
    )
    p.add_argument("results", nargs="+", metavar="RESULT.json", help="'bench pull' results")
    p.add_argument("--markdown", metavar="OUT", help="write the Markdown table to OUT")
    p.add_argument("--plot-cdf", metavar="PNG", help="write the time-to-ready CDF to PNG")
    p.add_argument("--plot-n", metavar="PNG", help="write ready time vs N to PNG")
    p.add_argument(
        "--merge", metavar="OUT", help="also write all results merged into one result JSON"
    )
    p.add_argument("--title", default="", metavar="TEXT", help="title prefix for the plots")
    p.set_defaults(run=run_report, needs_settings=False)


def _fail(message: str) -> int:
    print(f"regsidecar: bench: {message}", file=sys.stderr)
    return 2


def run_pull(args: argparse.Namespace) -> int:
    from regsidecar.bench import report
    from regsidecar.bench.runner import PullParams, read_targets, run_pull

    targets = [u.rstrip("/") for u in args.url]
    if args.targets:
        try:
            with open(args.targets, encoding="utf-8") as f:
                targets += read_targets(f)
        except OSError as exc:
            return _fail(f"--targets: {exc}")
    params = PullParams(
        image=args.image,
        targets=tuple(targets),
        clients=args.clients,
        ramp_s=args.ramp,
        concurrency=args.concurrency,
        platform=args.platform,
        timeout_s=args.timeout,
        label=args.label,
        connect_timeout_s=args.connect_timeout,
        attempts=args.attempts,
        retry_delay_s=args.retry_delay,
        keep_alive=args.keep_alive,
    )
    try:
        params.validate()
    except ValueError as exc:
        return _fail(f"pull: {exc}")
    progress = sys.stderr if sys.stderr.isatty() and not args.quiet else None
    result = asyncio.run(
        run_pull(params, ready_file=args.ready_file, start_file=args.start_file, progress=progress)
    )
    text = json.dumps(result, indent=1) + "\n"
    if args.json == "-":
        sys.stdout.write(text)
    else:
        if args.json:
            Path(args.json).write_text(text, encoding="utf-8")
        sys.stdout.write(report.markdown_table([result]))
    return 1 if result["summary"]["failed"] else 0


def run_report(args: argparse.Namespace) -> int:
    from regsidecar.bench import report

    results: list[dict[str, Any]] = []
    for path in args.results:
        try:
            with open(path, encoding="utf-8") as f:
                result = json.load(f)
            report.check(result)
        except (OSError, ValueError) as exc:
            return _fail(f"report: {path}: {exc}")
        results.append(result)
    table = report.markdown_table(results)
    if args.markdown:
        Path(args.markdown).write_text(table, encoding="utf-8")
    else:
        sys.stdout.write(table)
    title = f"{args.title}: " if args.title else ""
    if args.plot_cdf:
        report.plot_cdf(report.cdf_series(results), args.plot_cdf, f"{title}time to ready")
    if args.plot_n:
        report.plot_ready_vs_n(
            report.n_series(results), args.plot_n, f"{title}time to ready vs clients"
        )
    if args.merge:
        merged = report.merge(results)
        Path(args.merge).write_text(json.dumps(merged, indent=1) + "\n", encoding="utf-8")
    return 0
