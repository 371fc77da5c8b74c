"""The command line of ``python -m benchmarks.micro``: flags, defaults, the resolved Config."""

from __future__ import annotations

import argparse
from typing import Any

from benchmarks.common import Config
from regsidecar.config import parse_size

BENCHES = ("blob", "manifest", "cold", "capped", "fanout", "rss", "push")

# (full, --quick) defaults; an explicit flag wins over both
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "duration": (10.0, 1.0),
    "blob_size": ("16MiB", "1MiB"),
    "rss_blobs": (50, 3),
    "cold_size": ("256MiB", "4MiB"),
    "capped_size": ("256MiB", "40MiB"),
    "capped_rate": ("40m", "8m"),
    "fanout_size": ("64MiB", "2MiB"),
    "rss_size": ("256MiB", "8MiB"),
    "push_mib": (256, 4),
    "upload_budget": (180.0, 30.0),
    "rounds": (3, 1),
    "quiet_wait": (10.0, 0.0),
}


# -- command line ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.micro",
        description=(
            "Measure regsidecar against peers in one run on this machine: cache-hit blob GET "
            "(vs nginx sendfile and distribution), manifest GET by tag (vs distribution and a "
            "bare aiohttp handler), a cold blob GET through a fresh sidecar (vs a direct S3 GET "
            "from moto), the same from an S3 stand-in that caps each connection as S3 does (vs "
            "one direct GET and distribution), 100 concurrent cold GETs of one blob (S3 GETs "
            "counted), and peak RSS "
            "while streaming cold blobs from S3 (moto), and an image push with auth (vs "
            "distribution, each on S3) followed by a promotion. "
            "Prints a Markdown table; hey, nginx, docker-registry and moto_server must be on "
            "PATH. Run from the repository root."
        ),
    )
    p.add_argument(
        "--only",
        metavar="LIST",
        default=",".join(BENCHES),
        help=f"comma-separated subset of {','.join(BENCHES)} (default: all)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny smoke run: 1 round of 1 s loads, 1 MiB blob, 4 MiB cold blob, 100 x 2 MiB "
        "fan-out, 3 x 8 MiB cold streams, 4 MiB push (explicit flags win)",
    )
    p.add_argument(
        "--duration",
        type=float,
        metavar="SECONDS",
        help="hey -z duration of each load, in seconds (default 10; --quick 1)",
    )
    p.add_argument(
        "--blob-size",
        metavar="SIZE",
        help="size of the cache-hit blob, e.g. 16MiB (default 16MiB; --quick 1MiB)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="load every server N times, interleaved, and report the median round "
        "(default 3; --quick 1)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        metavar="SECONDS",
        help="before each load, wait up to this long for the rest of the machine to go idle "
        "(below 10%% of a core) so other work does not skew it (default 10; --quick 0)",
    )
    p.add_argument(
        "--blob-concurrency",
        type=int,
        default=8,
        metavar="N",
        help="hey -c for the blob GET (default 8)",
    )
    p.add_argument(
        "--manifest-concurrency",
        type=int,
        default=16,
        metavar="N",
        help="hey -c for the manifest GET (default 16)",
    )
    p.add_argument(
        "--rss-blobs",
        type=int,
        metavar="N",
        help="concurrent clients, each reading one distinct cold blob (default 50; --quick 3); "
        "fewer distinct blobs are uploaded if the upload would exceed --upload-budget",
    )
    p.add_argument(
        "--cold-size",
        metavar="SIZE",
        help="size of the blob of the cold GET benchmark (default 256MiB; --quick 4MiB)",
    )
    p.add_argument(
        "--capped-size",
        metavar="SIZE",
        help="size of the cold blob read from the per-connection-capped S3 stand-in "
        "(default 256MiB; --quick 40MiB)",
    )
    p.add_argument(
        "--capped-rate",
        metavar="RATE",
        help="the stand-in's cap per connection, an nginx limit_rate such as 40m (MiB/s) "
        "(default 40m; --quick 8m)",
    )
    p.add_argument(
        "--fanout-clients",
        type=int,
        default=100,
        metavar="N",
        help="concurrent cold GETs of one blob in the fan-out benchmark (default 100)",
    )
    p.add_argument(
        "--fanout-size",
        metavar="SIZE",
        help="size of the fan-out blob (default 64MiB; --quick 2MiB)",
    )
    p.add_argument(
        "--rss-size",
        metavar="SIZE",
        help="size of each cold blob, e.g. 256MiB (default 256MiB; --quick 8MiB)",
    )
    p.add_argument(
        "--rss-interval",
        type=float,
        default=0.05,
        metavar="SECONDS",
        help="VmRSS sampling interval (default 0.05)",
    )
    p.add_argument(
        "--upload-budget",
        type=float,
        metavar="SECONDS",
        help="max time to spend generating and uploading the cold blobs to moto; past it, "
        "upload fewer distinct blobs and share each among several clients (default 180)",
    )
    p.add_argument(
        "--stream-timeout",
        type=float,
        default=900.0,
        metavar="SECONDS",
        help="bound on the whole cold-stream phase (default 900)",
    )
    p.add_argument(
        "--push-mib",
        type=int,
        metavar="MIB",
        help="size of the pushed layer in MiB, a new random layer every round "
        "(default 256; --quick 4)",
    )
    p.add_argument("--json", metavar="OUT", help="also write every result as JSON to OUT")
    p.add_argument(
        "--merge",
        action="store_true",
        help="with --json: keep the results of the benchmarks not run now that OUT already "
        "holds (rerun one disturbed benchmark: --only cold --merge --json OUT)",
    )
    return p


def resolve(args: argparse.Namespace) -> Config:
    def pick(name: str) -> Any:
        value = getattr(args, name)
        return value if value is not None else DEFAULTS[name][1 if args.quick else 0]

    benches = tuple(b.strip() for b in args.only.split(",") if b.strip())
    unknown = set(benches) - set(BENCHES)
    if unknown or not benches:
        raise SystemExit(f"--only: expected a subset of {','.join(BENCHES)}, got {args.only!r}")
    return Config(
        benches=benches,
        duration_s=float(pick("duration")),
        blob_size=parse_size(pick("blob_size")),
        rounds=max(1, int(pick("rounds"))),
        quiet_wait_s=float(pick("quiet_wait")),
        blob_concurrency=args.blob_concurrency,
        manifest_concurrency=args.manifest_concurrency,
        cold_size=parse_size(pick("cold_size")),
        capped_size=parse_size(pick("capped_size")),
        capped_rate=str(pick("capped_rate")),
        fanout_clients=args.fanout_clients,
        fanout_size=parse_size(pick("fanout_size")),
        rss_blobs=int(pick("rss_blobs")),
        rss_size=parse_size(pick("rss_size")),
        rss_interval_s=args.rss_interval,
        upload_budget_s=float(pick("upload_budget")),
        stream_timeout_s=args.stream_timeout,
        push_mib=max(1, int(pick("push_mib"))),
        json_out=args.json,
        quick=args.quick,
    )
