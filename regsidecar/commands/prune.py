"""``regsidecar prune``: free disk on this host: stopped containers and unused images through
the docker daemon (see :mod:`regsidecar.prune` for the rules), then the blob cache trimmed to
its low watermark. ``--dry-run`` lists what would go; the report says how much was reclaimed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from regsidecar.cli import add_settings_flags
from regsidecar.commands import SubParsers
from regsidecar.config import format_size

Report = dict[str, Any]

DESCRIPTION = """\
Free disk on this host. Through the docker daemon: remove stopped containers (created, exited,
dead) and dangling images (no tag), and with --unused-days N also tagged images created at least
N days ago; an image a remaining container uses is never removed. Exactly the listed objects
are removed, each without force, so the daemon still refuses anything that came into use
meanwhile. Then trim the blob cache to cache.low_watermark x cache.max_bytes (through the
running sidecar when one answers, else on DATA_DIR/cache). Prints what was (or would be)
removed and the space reclaimed. Exit status 1 if the docker daemon cannot be reached (unless
--no-docker), something could not be removed, or the cache could not be trimmed; 2 on bad
settings."""


def _days(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of days >= 0, not {text!r}")
    return n


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "prune",
        help="remove stopped containers and unused images, trim the cache",
        description=DESCRIPTION,
    )
    p.add_argument(
        "--dry-run", action="store_true", help="list what would be removed; remove nothing"
    )
    p.add_argument(
        "--unused-days",
        type=_days,
        metavar="N",
        help="also remove tagged images no container uses that were created at least N days "
        "ago (docker keeps no last-use time; like docker's 'until' filter this reads the "
        "image's Created time; 0: every unused image)",
    )
    p.add_argument(
        "--docker-host",
        metavar="URL",
        help="docker daemon to prune, e.g. unix:///var/run/docker.sock (default: $DOCKER_HOST, "
        "else the docker CLI's current context)",
    )
    only = p.add_mutually_exclusive_group()
    only.add_argument("--no-docker", action="store_true", help="skip docker; only trim the cache")
    only.add_argument("--no-cache", action="store_true", help="skip the cache; only prune docker")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    add_settings_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    report: Report = {"dry_run": args.dry_run}
    rc = 0
    if args.no_docker:
        report["docker"] = {"skipped": "--no-docker"}
    else:
        report["docker"] = _docker(args)
        if report["docker"].get("skipped") or report["docker"]["failed"]:
            rc = 1
    if args.no_cache:
        report["cache"] = {"skipped": "--no-cache"}
    else:
        report["cache"] = _cache(args)
        if report["cache"].get("error"):
            rc = 1
    report["bytes_reclaimed"] = report["docker"].get("bytes_reclaimed", 0) + report["cache"].get(
        "bytes_freed", 0
    )
    if args.json:
        print(json.dumps(report))
    else:
        _print(report)
    return rc


def _docker(args: argparse.Namespace) -> Report:
    from regsidecar import prune

    host = prune.docker_host(args.docker_host)
    try:
        client = prune.connect(args.docker_host)
    except prune.DockerUnavailable as exc:
        print(f"regsidecar: prune: docker skipped ({host}): {exc}", file=sys.stderr)
        return {"host": host, "skipped": str(exc)}
    try:
        report = prune.prune_docker(
            client, now=time.time(), unused_days=args.unused_days, dry_run=args.dry_run
        )
    except prune.DockerUnavailable as exc:
        print(f"regsidecar: prune: docker skipped ({host}): {exc}", file=sys.stderr)
        return {"host": host, "skipped": str(exc)}
    finally:
        client.close()
    for f in report["failed"]:
        print(
            f"regsidecar: prune: could not remove {f['kind']} {f['id']} ({f['name']}): "
            f"{f['error']}",
            file=sys.stderr,
        )
    return {"host": host} | report


def _cache(args: argparse.Namespace) -> Report:
    from regsidecar.cache.control import CacheControlError, NoCache, open_control

    try:
        control = open_control(args.settings)
        report = control.gc(dry_run=args.dry_run)
    except NoCache as exc:
        return {"skipped": str(exc)}
    except (CacheControlError, OSError) as exc:
        print(f"regsidecar: prune: cache not trimmed: {exc}", file=sys.stderr)
        return {"error": str(exc)}
    return {"where": control.where} | report


# -- human output -----------------------------------------------------------------------------


def _short(object_id: str) -> str:
    return object_id.rpartition(":")[2][:12]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _table(rows: Sequence[tuple[str, ...]]) -> None:
    header = ("WHAT", "ID", "NAME / TAGS", "SIZE", "WHY")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        print("  " + "  ".join([*cells, row[-1]]).rstrip())


def _print(r: Report) -> None:
    verb = "would remove" if r["dry_run"] else "removed"
    d = r["docker"]
    if "skipped" in d:
        print(f"docker: skipped ({d['skipped']})")
    else:
        print(
            f"docker ({d['host']}): {verb} {_plural(len(d['containers']), 'container')}, "
            f"{_plural(len(d['images']), 'image')}"
        )
        rows = [
            ("container", _short(c["id"]), c["name"], format_size(c["bytes"]), c["state"])
            for c in d["containers"]
        ]
        rows += [
            ("image", _short(i["id"]), _tags(i), format_size(i["bytes"]), i["reason"])
            for i in d["images"]
        ]
        rows += [("kept", _short(k["id"]), _tags(k), "", k["reason"]) for k in d["kept"]]
        rows += [
            (f"failed {f['kind']}", _short(f["id"]), f["name"], "", f["error"]) for f in d["failed"]
        ]
        if rows:
            _table(rows)
        how = "estimate, at least" if d["estimate"] else "measured by docker"
        done = "reclaimable" if d["dry_run"] else "reclaimed"
        print(f"  {done}: {format_size(d['bytes_reclaimed'])} ({how})")
    c = r["cache"]
    if "skipped" in c:
        print(f"cache: skipped ({c['skipped']})")
    elif "error" in c:
        print(f"cache: not trimmed ({c['error']})")
    else:
        print(
            f"cache ({c['where']}): {verb} {_plural(len(c['removed']), 'blob')}, "
            f"{format_size(c['bytes_freed'])}; {_plural(c['entries'], 'blob')}, "
            f"{format_size(c['bytes'])} left"
        )
    done = "reclaimable" if r["dry_run"] else "reclaimed"
    print(f"total {done}: {format_size(r['bytes_reclaimed'])}")


def _tags(row: Report) -> str:
    return ", ".join(row["tags"]) or "<none>"
