"""``regsidecar install --systemd|--upstart``: write the host's units, config skeleton and
docker daemon.json snippet (see :mod:`regsidecar.hostinstall`). It never runs systemctl."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from regsidecar.commands import SubParsers

DESCRIPTION = """\
Write the files that run regsidecar on this host, under DIR (default /):
  --systemd  etc/systemd/system/regsidecar.service, regsidecar-prune.service and
             regsidecar-prune.timer
  --upstart  etc/init/regsidecar.conf and etc/cron.d/regsidecar-prune
  --containerd
             etc/containerd/certs.d/<sidecar>/hosts.toml (localhost:5000, or --sidecar) and,
             for each --mirror REGISTRY, etc/containerd/certs.d/REGISTRY/hosts.toml, so
             containerd (ctr --hosts-dir, or the CRI with config_path) pulls through the
             sidecar, and from REGISTRY itself only when the sidecar fails
  --systemd and --upstart also write
             etc/regsidecar/config.yml (every setting, commented, with its default),
             etc/default/regsidecar (commented REGSIDECAR_* and AWS_* examples) and
             etc/regsidecar/docker-daemon.json (a snippet to merge into
             /etc/docker/daemon.json, which is never touched)
A file that is absent is written; one with the same content is left alone (unchanged); one
whose content differs, e.g. your edited config.yml, is kept unless --force, which replaces it
and saves your copy as FILE~. Running it again changes nothing. It prints one line per file
and the next steps; it does not run systemctl or initctl.

Exit status: 0 when every file was written, unchanged, kept or replaced (kept files are not an
error: they are your edits); 1 when a file could not be written; 2 for bad arguments."""


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "install",
        help="write systemd or upstart units, a config skeleton and a daemon.json snippet",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument(
        "--systemd",
        dest="kind",
        action="store_const",
        const="systemd",
        help="a Type=notify service and a daily prune timer",
    )
    kind.add_argument(
        "--upstart",
        dest="kind",
        action="store_const",
        const="upstart",
        help="an upstart job and a daily prune cron file",
    )
    kind.add_argument(
        "--containerd",
        dest="kind",
        action="store_const",
        const="containerd",
        help="containerd hosts.toml files: the sidecar's own name, and mirrors (--mirror)",
    )
    p.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="REGISTRY",
        help="with --containerd: pull REGISTRY (e.g. docker.io, registry.ci:5000) through the "
        "sidecar; repeatable",
    )
    p.add_argument(
        "--sidecar",
        default="localhost:5000",
        metavar="HOST:PORT",
        help="with --containerd: where the sidecar listens (default localhost:5000)",
    )
    p.add_argument(
        "--root",
        metavar="DIR",
        default="/",
        help="write under DIR instead of / (for packaging and tests)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace files whose content differs (your copy is kept as FILE~)",
    )
    p.add_argument(
        "--exec",
        dest="exec_path",
        metavar="PATH",
        help="the regsidecar executable the units run (default: the one running now)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON report instead of lines")
    p.set_defaults(run=run, needs_settings=False)


def _fail(message: str) -> int:
    print(f"regsidecar install: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from regsidecar import hostinstall

    if args.kind == "containerd":
        return _containerd(args)
    if args.mirror:
        return _fail("--mirror goes with --containerd")
    exec_path = args.exec_path or hostinstall.default_exec()
    if exec_path is None:
        return _fail("cannot tell where the regsidecar executable is; pass --exec PATH")
    try:
        hostinstall.check_exec_path(exec_path)
    except ValueError as exc:
        return _fail(str(exc))
    root = Path(args.root).absolute()
    results = hostinstall.install(args.kind, root, exec_path, force=args.force)
    return _report(
        args.kind, root, results, hostinstall.NEXT_STEPS[args.kind], args.json, exec_path
    )


def _report(
    kind: str,
    root: Path,
    results: list[Any],
    steps: tuple[str, ...],
    as_json: bool,
    exec_path: str | None = None,
) -> int:
    """Print what happened to each file and the next steps; the exit status."""
    if as_json:
        report: dict[str, Any] = {"kind": kind, "root": str(root)}
        if exec_path is not None:
            report["exec"] = exec_path
        report["files"] = [
            {"path": r.path, "action": r.action, "detail": r.detail} for r in results
        ]
        report["next"] = list(steps)
        print(json.dumps(report, indent=2))
    else:
        for r in results:
            print(r.line())
        where = "" if root == Path("/") else f" (the files are under {root})"
        print(f"\nNext{where}:")
        for step in steps:
            print(f"  {step}")
    return 1 if any(r.action == "failed" for r in results) else 0


def _containerd(args: argparse.Namespace) -> int:
    from regsidecar import hostinstall

    try:
        files = hostinstall.containerd_hosts(args.sidecar, args.mirror)
    except ValueError as exc:
        return _fail(str(exc))
    root = Path(args.root).absolute()
    results = hostinstall.install_files(
        root, [(dest, data, 0o644) for dest, data in files.items()], force=args.force
    )
    return _report("containerd", root, results, hostinstall.CONTAINERD_NEXT_STEPS, args.json)
