"""``regsidecar cache stats|verify|gc``: inspect, check and trim the local blob cache.

Each action goes to the running sidecar when one answers on its operator address (so its
in-memory index and pins stay true), else works on ``DATA_DIR/cache`` directly.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from regsidecar.cache.control import CacheControlError, NoCache, Report, open_control
from regsidecar.cli import add_settings_flags
from regsidecar.commands import SubParsers
from regsidecar.config import format_size

_WHERE = (
    " Works through the running sidecar when one answers on its operator address (listen, "
    "or ops_listen), else on DATA_DIR/cache directly, but never under a sidecar that holds "
    "DATA_DIR (its lock) without answering: then it says so and exits 1."
)


def register(sub: SubParsers) -> None:
    cache = sub.add_parser(
        "cache",
        help="inspect, verify or trim the local blob cache",
        description="Work on the blob cache under DATA_DIR/cache." + _WHERE,
    )
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    stats = cache_sub.add_parser(
        "stats",
        help="entries, bytes, limits and free disk of the cache",
        description="Print the cache's entries, bytes, size bound, low watermark and the free "
        "space of its disk." + _WHERE,
    )
    verify = cache_sub.add_parser(
        "verify",
        help="re-hash every cached blob; remove those that do not match their digest",
        description="Re-hash every cached blob and remove those that do not match their "
        "digest (they are fetched again on the next pull). Exit status 1 if anything was "
        "removed." + _WHERE,
    )
    gc = cache_sub.add_parser(
        "gc",
        help="trim least recently used blobs down to the low watermark",
        description="Remove least recently used blobs until the cache is under "
        "cache.low_watermark x cache.max_bytes and its disk has cache.min_free_bytes free. "
        "Blobs being read or downloaded are never removed." + _WHERE,
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    for p, run in ((stats, run_stats), (verify, run_verify), (gc, run_gc)):
        add_settings_flags(p)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        p.set_defaults(run=run)


def _act(args: argparse.Namespace, action: str) -> Report | None:
    try:
        control = open_control(args.settings)
    except NoCache as exc:
        # Not an error: the answer to the question is "there is no cache here".
        print(json.dumps({"cache": None, "reason": str(exc)}) if args.json else str(exc))
        return {"no_cache": True}
    except CacheControlError as exc:
        print(f"regsidecar: cache {action}: {exc}", file=sys.stderr)
        return None
    calls: dict[str, Callable[[], Report]] = {
        "stats": control.stats,
        "verify": control.verify,
        "gc": lambda: control.gc(dry_run=args.dry_run),
    }
    try:
        report = calls[action]()
    except CacheControlError as exc:
        print(f"regsidecar: cache {action}: {exc}", file=sys.stderr)
        return None
    report["where"] = control.where
    if args.json:
        print(json.dumps(report))
    return report


def run_stats(args: argparse.Namespace) -> int:
    r = _act(args, "stats")
    if r is None:
        return 1
    if not args.json and "no_cache" not in r:
        print(f"cache      {r['root']} ({r['where']})")
        print(f"entries    {r['entries']}")
        print(f"size       {format_size(r['bytes'])} of {format_size(r['max_bytes'])}")
        print(f"trims to   {format_size(r['low_watermark_bytes'])} (low watermark)")
        print(
            f"disk free  {format_size(r['free_bytes'])} (keeps {format_size(r['min_free_bytes'])})"
        )
    return 0


def run_verify(args: argparse.Namespace) -> int:
    r = _act(args, "verify")
    if r is None:
        return 1
    if "no_cache" in r:
        return 0
    if not args.json:
        print(f"checked {r['checked']} blobs ({r['where']}); removed {len(r['removed'])} corrupt")
        for digest in r["removed"]:
            print(f"  removed {digest}")
    return 1 if r["removed"] else 0


def run_gc(args: argparse.Namespace) -> int:
    r = _act(args, "gc")
    if r is None:
        return 1
    if "no_cache" in r:
        return 0
    if not args.json:
        verb = "would remove" if r["dry_run"] else "removed"
        for item in r["removed"]:
            print(f"  {verb} {item['digest']}  {format_size(item['bytes'])}")
        print(
            f"{verb} {len(r['removed'])} blobs, {format_size(r['bytes_freed'])} ({r['where']}); "
            f"cache now {r['entries']} entries, {format_size(r['bytes'])}"
        )
    return 0
