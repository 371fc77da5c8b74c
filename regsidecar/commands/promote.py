"""``regsidecar promote REPO@DIGEST TAG...``: move tags to a tested image, server-side.

Writes the tag links in the store directly (the same ``--storage``/``--s3-*`` flags and
``REGSIDECAR_*`` variables as ``serve``), so a CI job needs no running sidecar and copies no
blob. Each move is audited: a JSON line on stderr and a record in the store under
``repositories/<name>/_audit/``. Tag-protection rules (``push.protect``) apply.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import socket
import sys

from regsidecar.cli import add_settings_flags
from regsidecar.commands import SubParsers
from regsidecar.config import Settings
from regsidecar.errors import ConfigError, OCIError
from regsidecar.oci.reference import Digest
from regsidecar.push import Pusher, TagMove, parse_promotion
from regsidecar.service import Registry
from regsidecar.storage.drivers import open_driver

_EPILOG = """\
examples:
  regsidecar promote team/app@sha256:4f1c... qa
  regsidecar promote team/app@sha256:4f1c... production prod/app:1.4.2 --by "$CI_JOB_URL"

exit status: 0 moved, 1 refused (unknown image, protected tag), 2 bad arguments or config,
3 the store failed.
"""


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "promote",
        help="point tags at an image already in the store (no re-upload)",
        description="Point each TARGET (TAG, or REPOSITORY:TAG for another repository) at "
        "SOURCE (REPOSITORY@DIGEST). Only links are written: into another repository the "
        "image's blobs are linked, never copied. Every move is recorded (who, when, old and "
        "new digest). Works on the store directly; no sidecar needs to run.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="REPOSITORY@DIGEST of the tested image")
    p.add_argument("targets", metavar="TARGET", nargs="+", help="TAG or REPOSITORY:TAG")
    p.add_argument(
        "--by",
        default=None,
        help="who to record in the audit trail (default USER@HOST; CI: the job's URL or id)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_settings_flags(p)
    p.set_defaults(run=run)


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def run(args: argparse.Namespace) -> int:
    try:
        (name, digest), targets = parse_promotion(args.source, list(args.targets))
    except OCIError as exc:
        print(f"regsidecar promote: {exc.message}", file=sys.stderr)
        return 2
    try:
        moves = asyncio.run(_promote(args.settings, name, digest, targets, args.by or _who()))
    except ConfigError as exc:
        print(f"regsidecar promote: {exc}", file=sys.stderr)
        return 2
    except OCIError as exc:
        print(f"regsidecar promote: {exc.code}: {exc.message}", file=sys.stderr)
        return 3 if exc.status >= 500 else 1
    if args.json:
        print(json.dumps({"moved": [m.as_json() for m in moves]}))
    else:
        for m in moves:
            old = str(m.old) if m.old else "(new)"
            print(f"{m.repository}:{m.tag}  {old} -> {m.new}")
    return 0


async def _promote(
    settings: Settings, name: str, digest: Digest, targets: list[tuple[str, str]], by: str
) -> list[TagMove]:
    driver = await open_driver(settings)
    try:
        if settings.policy.rules:
            # Each target tag's policy must accept the image (signatures from the source).
            await Registry(driver, None, settings).require_promotable(name, digest, targets)
        return await Pusher(driver, settings).promote(name, digest, targets, by=by)
    finally:
        await driver.close()
