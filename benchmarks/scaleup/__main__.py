"""``python -m benchmarks.scaleup``: the scale-up simulation (root; see ``__init__``).

Writes ``scaleup.json`` (benchmarks/FORMATS.md section 2), ``scaleup.md`` and two PNGs to
``--out``; prints the Markdown to stdout and progress to stderr. Exit status: 0 when every
pull succeeded, 1 when some failed, 2 when the run could not be set up, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shlex
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks.scaleup.netns import (
    DEFAULT_CONGESTION_CONTROL,
    DEFAULT_MTU,
    DEFAULT_SUBNET,
    MAX_MTU,
    MIN_MTU,
    available,
    congestion_controls,
)
from benchmarks.scaleup.params import (
    DEFAULT_SCENARIOS,
    MIB,
    SCENARIOS,
    SIDECAR_SCENARIOS,
    Params,
)
from benchmarks.scaleup.run import Sweep, log, machine

#: (full, --quick) defaults; an explicit flag wins over both.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "ns": ("1,5,10,20,40", "2"),
    "image_mib": (50.0, 2.0),
    "layers": (5, 2),
    "host_mbit": (8.0, 400.0),
    "central_mbit": (80.0, 800.0),
    "timeout": (900.0, 60.0),
    "idle_wait": (5.0, 1.0),
}
MAX_HOSTS = 200


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scaleup",
        description="Simulate N hosts (network namespaces with tbf bandwidth caps) pulling "
        "one image at once: (central) all from one distribution registry, (sidecar) each "
        "through its own regsidecar on the shared S3 bucket (moto, or with --s3-conn-mbit "
        "nginx capping each connection as S3 does), (single) the same with one connection per "
        "blob, (warmed) the same after regsidecar warm, (peers) sidecars that fetch from "
        "each other, (peers-kill) the same with the first holder killed mid-pull, "
        "(peers-liar) with one peer flipping a byte of everything it serves. Needs root, "
        "iproute2, docker-registry and moto_server (or nginx). Run from the repository root.",
    )
    p.add_argument("--ns", metavar="LIST", help="numbers of hosts (default 1,5,10,20,40)")
    p.add_argument(
        "--scenarios",
        metavar="LIST",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"which of {','.join(SCENARIOS)} to run, in the order given (default "
        f"{','.join(DEFAULT_SCENARIOS)}; single: sidecars with one connection per blob)",
    )
    p.add_argument("--image-mib", type=float, metavar="MIB", help="image size (default 50)")
    p.add_argument("--layers", type=int, metavar="N", help="layers of the image (default 5)")
    p.add_argument(
        "--host-mbit",
        type=float,
        metavar="MBIT",
        help="each host's download cap in Mbit/s (default 8)",
    )
    p.add_argument(
        "--host-up-mbit",
        type=float,
        metavar="MBIT",
        help="each host's upload cap in Mbit/s (default: as --host-mbit, a symmetric NIC; "
        "only peer fetch uploads much)",
    )
    p.add_argument(
        "--keep-logs",
        action="store_true",
        help="copy every run's logs (sidecars, pullers, S3) to OUT/logs/SCENARIO-nN/ (by "
        "default only a run with failed pulls keeps some, in OUT/failed-logs/)",
    )
    p.add_argument(
        "--kill-after-s",
        type=float,
        metavar="SECONDS",
        help="peers-kill: when the first holder (root of the first layer's first part) is "
        "killed, into the pull (default 15)",
    )
    p.add_argument(
        "--central-mbit",
        type=float,
        metavar="MBIT",
        help="the central registry's upload cap in Mbit/s (default 80)",
    )
    p.add_argument(
        "--s3-mbit",
        type=float,
        metavar="MBIT",
        help="cap on S3's upload too (default: none, S3 scales out)",
    )
    p.add_argument(
        "--s3-conn-mbit",
        type=float,
        metavar="MBIT",
        help="serve the bucket with nginx capping each S3 connection at MBIT Mbit/s, as real "
        "S3 caps each at ~85-90 MB/s (default: moto, uncapped per connection)",
    )
    p.add_argument(
        "--part-mib",
        type=float,
        metavar="MIB",
        help="the sidecars' ranged-GET part size, REGSIDECAR_DOWNLOAD_PART_BYTES (default: "
        "regsidecar's, 16 MiB; a scaled-down image needs smaller parts to have any)",
    )
    p.add_argument(
        "--parallel-after-s",
        type=float,
        metavar="SECONDS",
        help="the sidecars' REGSIDECAR_DOWNLOAD_PARALLEL_AFTER_S: go parallel when one "
        "connection would take longer for the rest (default: regsidecar's, 0.5)",
    )
    p.add_argument(
        "--concurrency", type=int, default=3, metavar="N", help="blobs at once per pull (3)"
    )
    p.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="per-pull time limit (default 900)"
    )
    p.add_argument("--image", default="bench/app:v1", metavar="REPO:TAG")
    p.add_argument(
        "--subnet",
        default=DEFAULT_SUBNET,
        help=f"private range for the namespaces (default {DEFAULT_SUBNET}); refused if this "
        "machine routes or uses any of it",
    )
    p.add_argument(
        "--mtu",
        type=int,
        default=DEFAULT_MTU,
        help=f"MTU of every link (default {DEFAULT_MTU}: jumbo frames as inside an EC2 VPC)",
    )
    p.add_argument(
        "--congestion-control",
        default=DEFAULT_CONGESTION_CONTROL,
        metavar="ALGO",
        help=f"TCP congestion control on every link (default {DEFAULT_CONGESTION_CONTROL}, "
        "Linux's default; 'default': whatever the namespaces get from this machine)",
    )
    p.add_argument(
        "--start-parallel",
        type=int,
        default=8,
        metavar="N",
        help="sidecars started at once (default 8)",
    )
    p.add_argument(
        "--idle-wait",
        type=float,
        metavar="SECONDS",
        help="before each pull phase, wait up to this long for the CPUs to settle (default 5)",
    )
    p.add_argument(
        "--out",
        default="benchmarks/results/scaleup",
        metavar="DIR",
        help="where scaleup.json, scaleup.md and the plots go (default benchmarks/results/scaleup)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: N=2, 2 MiB in 2 layers, caps 400/800 Mbit/s (explicit flags win)",
    )
    return p


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SystemExit(f"scaleup: {what} must be comma-separated integers: {text!r}") from None
    if not values or any(v < 1 or v > MAX_HOSTS for v in values):
        raise SystemExit(f"scaleup: {what} must be between 1 and {MAX_HOSTS}: {text!r}")
    return values


def resolve(args: argparse.Namespace) -> Params:
    """Flags, then the (full or --quick) defaults, checked."""
    pick = 1 if args.quick else 0

    def get(name: str) -> Any:
        value = getattr(args, name)
        return DEFAULTS[name][pick] if value is None else value

    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        raise SystemExit(f"scaleup: --scenarios takes {','.join(SCENARIOS)}, not {unknown}")
    image_bytes = round(float(get("image_mib")) * MIB)
    layers = int(get("layers"))
    if layers < 1 or image_bytes < layers:
        raise SystemExit("scaleup: --image-mib and --layers must give at least 1 byte a layer")
    for name in ("host_mbit", "central_mbit", "timeout"):
        if not float(get(name)) > 0:
            raise SystemExit(f"scaleup: --{name.replace('_', '-')} must be positive")
    for flag in ("s3_mbit", "s3_conn_mbit", "part_mib", "host_up_mbit", "kill_after_s"):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            raise SystemExit(f"scaleup: --{flag.replace('_', '-')} must be positive")
    if args.s3_conn_mbit is not None and args.s3_conn_mbit * 1e6 / 8 < 1:
        raise SystemExit("scaleup: --s3-conn-mbit is under 1 byte/s")
    if args.parallel_after_s is not None and not args.parallel_after_s >= 0:
        raise SystemExit("scaleup: --parallel-after-s must be 0 or more")
    if args.concurrency < 1 or args.start_parallel < 1:
        raise SystemExit("scaleup: --concurrency and --start-parallel must be at least 1")
    if not MIN_MTU <= args.mtu <= MAX_MTU:
        raise SystemExit(f"scaleup: --mtu must be within {MIN_MTU}..{MAX_MTU}")
    if ":" not in args.image:
        raise SystemExit("scaleup: --image must be REPO:TAG")
    params = Params(
        ns=_int_list(str(get("ns")), "--ns"),
        scenarios=scenarios,
        image_bytes=image_bytes,
        layers=layers,
        host_mbit=float(get("host_mbit")),
        central_mbit=float(get("central_mbit")),
        s3_mbit=args.s3_mbit,
        concurrency=args.concurrency,
        timeout_s=float(get("timeout")),
        image=args.image,
        subnet=args.subnet,
        start_parallel=args.start_parallel,
        idle_wait_s=float(get("idle_wait")),
        mtu=args.mtu,
        congestion_control=args.congestion_control,
        s3_conn_mbit=args.s3_conn_mbit,
        part_mib=args.part_mib,
        parallel_after_s=args.parallel_after_s,
        host_up_mbit=args.host_up_mbit,
        kill_after_s=args.kill_after_s if args.kill_after_s is not None else 15.0,
    )
    for scenario in SIDECAR_SCENARIOS:
        try:
            params.sidecar_download(scenario)
        except ValueError as exc:
            raise SystemExit(f"scaleup: the sidecars would refuse these settings: {exc}") from None
    return params


class Interrupted(BaseException):
    """SIGTERM/SIGHUP (or Ctrl-C) arrived: unwind through every ``finally`` and clean up."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _ignore_signals() -> None:
    # Clean-up must not itself be interrupted halfway.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def write_outputs(result: dict[str, Any], out: Path, *, final: bool) -> None:
    from benchmarks.scaleup.report import plot, render

    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "scaleup.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    tmp.replace(out / "scaleup.json")
    if final:
        (out / "scaleup.md").write_text(render(result))
        plot(result, out)


def keep(result: dict[str, Any], run: dict[str, Any], out: Path) -> None:
    """Add one finished run and rewrite scaleup.json (an interrupted sweep keeps its runs)."""
    result["runs"].append(run)
    write_outputs(result, out, final=False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params = resolve(args)
    why = available()
    if why is not None:
        print(f"scaleup: cannot build namespaces here: {why}", file=sys.stderr)
        return 2
    cc = params.congestion_control
    if cc != "default" and cc not in congestion_controls():
        print(f"scaleup: TCP congestion control {cc!r} is not loaded here", file=sys.stderr)
        return 2
    out = Path(args.out)
    cmd = "python -m benchmarks.scaleup" + "".join(
        f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:])
    )
    result: dict[str, Any] = {
        "kind": "scaleup",
        "version": 1,
        "machine": machine(),
        "params": params.to_json(),
        "runs": [],
        "commands": [cmd],
    }
    # logs of failed pulls from an earlier run into the same dir would be misleading
    shutil.rmtree(out / "failed-logs", ignore_errors=True)
    sweep = Sweep(
        params,
        failure_logs=out / "failed-logs",
        every_run_logs=out / "logs" if args.keep_logs else None,
    )
    atexit.register(sweep.close)  # a last resort: the finally below normally did it
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _interrupt)
    t0 = time.monotonic()
    try:
        sweep.setup()
        result["seeded"] = sweep.seeded
        sweep.sweep(on_run=lambda r: keep(result, r, out))
    except Interrupted as exc:
        _ignore_signals()
        log(f"interrupted ({exc}): stopping every process and removing the namespaces")
        sweep.close()
        return 130
    except Exception:
        _ignore_signals()
        traceback.print_exc()
        log("failed: stopping every process and removing the namespaces")
        sweep.close()
        return 2
    finally:
        _ignore_signals()
        sweep.close()
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    result["wall_s"] = round(time.monotonic() - t0, 1)
    write_outputs(result, out, final=True)
    print((out / "scaleup.md").read_text())
    log(f"results in {out}/ (scaleup.json, scaleup.md, plots); {result['wall_s']:.0f} s")
    from benchmarks.scaleup.report import failed_pulls

    return 1 if failed_pulls(result["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
