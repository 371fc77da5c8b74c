"""``regsidecar cache stats|verify|gc``: inspect, check and trim the local blob cache."""

from __future__ import annotations

import argparse
import json

from regsidecar.cli import add_settings_flags
from regsidecar.commands import SubParsers


def register(sub: SubParsers) -> None:
    cache = sub.add_parser(
        "cache",
        help="inspect or repair the local blob cache",
        description="Work on the cache under DATA_DIR/cache.",
    )
    cache_sub = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    verify = cache_sub.add_parser(
        "verify",
        help="re-hash every cached blob; remove those that do not match their digest",
        description="Re-hash every cached blob and remove those that do not match their "
        "digest (they are fetched again on the next pull). Prints a JSON summary; exit status "
        "1 if anything was removed.",
    )
    add_settings_flags(verify)
    verify.set_defaults(run=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from regsidecar.cache.store import BlobCache

    settings = args.settings
    cache = BlobCache(
        settings.cache_dir,
        max_bytes=settings.cache.max_bytes,
        min_free_bytes=settings.cache.min_free_bytes,
    )
    cache.open()
    checked, removed = cache.verify_all()
    print(json.dumps({"checked": checked, "removed": removed}))
    return 1 if removed else 0
