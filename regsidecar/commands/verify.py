"""``regsidecar verify IMAGE...``: would this host serve it, and why (the signature policy)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from regsidecar.cli import add_settings_flags
from regsidecar.commands import SubParsers
from regsidecar.config import Settings
from regsidecar.errors import ConfigError, NotFound, OCIError
from regsidecar.oci import mediatypes
from regsidecar.oci.reference import parse_digest
from regsidecar.service import Registry
from regsidecar.storage.drivers import open_driver
from regsidecar.warm import parse_image

_EPILOG = """\
examples:
  regsidecar verify prod/app:1.4.2
  regsidecar verify localhost:5000/prod/app@sha256:4f1c... --json

exit status: 0 every image would be served, 1 some would be refused (or is unknown),
2 bad arguments or config, 3 the store failed.
"""


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "verify",
        help="say whether the signature policy serves an image, and why",
        description="Judge each IMAGE (NAME[:TAG] or NAME@DIGEST, a localhost:PORT/ prefix is "
        "dropped) as the sidecar would when a client pulls it: the policy rule for its "
        "repository, the signatures found for its digest (the sha256-<hex>.sig companion tag "
        "and the referrers), and the verdict with its reason; for a multi-platform image, "
        "every platform's manifest too. Reads the store directly (the same --storage/--s3-* "
        "flags and REGSIDECAR_* variables as serve); no sidecar needs to run.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_settings_flags(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        images = [parse_image(text) for text in args.images]
    except ValueError as exc:
        print(f"regsidecar verify: {exc}", file=sys.stderr)
        return 2
    try:
        results = asyncio.run(_verify_all(args.settings, images))
    except ConfigError as exc:
        print(f"regsidecar verify: {exc}", file=sys.stderr)
        return 2
    except OCIError as exc:
        print(f"regsidecar verify: {exc.code}: {exc.message}", file=sys.stderr)
        return 3 if exc.status >= 500 else 1
    if args.json:
        print(json.dumps({"images": results}))
    else:
        for r in results:
            _print(r, "")
    return 0 if all(_served(r) for r in results) else 1


def _served(result: dict[str, Any]) -> bool:
    return bool(result.get("served")) and all(_served(c) for c in result.get("children", []))


def _print(r: dict[str, Any], indent: str) -> None:
    word = "SERVED" if r.get("served") else "REFUSED"
    where = f" [rule {r['rule']}]" if r.get("rule") else ""
    print(f"{indent}{r['image']} ({r.get('digest', '?')}): {word}: {r['reason']}{where}")
    for c in r.get("children", []):
        _print(c, indent + "  ")


async def _verify_all(settings: Settings, images: list[tuple[str, str]]) -> list[dict[str, Any]]:
    driver = await open_driver(settings)
    # No cache: this reads manifests and small signature payloads only, and must not touch
    # the data directory of a sidecar that may be running.
    registry = Registry(driver, None, settings)
    try:
        if registry.enforcer is None:
            return [
                {"image": f"{n}:{r}", "served": True, "reason": "no policy rules", "rule": ""}
                for n, r in images
            ]
        return [await _verify(registry, name, ref) for name, ref in images]
    finally:
        await driver.close()


async def _verify(registry: Registry, name: str, ref: str) -> dict[str, Any]:
    enforcer = registry.enforcer
    assert enforcer is not None
    tag = None if ref.startswith(("sha256:", "sha512:")) else ref
    shown = f"{name}:{tag}" if tag else f"{name}@{ref}"
    try:
        digest = await registry.names.resolve(name, tag) if tag is not None else parse_digest(ref)
        payload = await registry.manifest_bytes(name, digest)
    except (OCIError, NotFound) as exc:
        if isinstance(exc, OCIError) and exc.status >= 500:
            raise
        return {"image": shown, "served": False, "reason": f"unknown image ({exc})", "rule": ""}
    verdict = await enforcer.check(name, digest, tag=tag, payload=payload)
    out: dict[str, Any] = {
        "image": shown,
        "digest": str(digest),
        "served": verdict.accepted,
        "reason": verdict.reason,
        "rule": verdict.rule,
        "key": verdict.key,
    }
    info = mediatypes.detect(payload)
    children = []
    for child, os_, arch in info.entries:
        r = await _verify(registry, name, child)
        r["image"] = f"{shown} {os_}/{arch}"
        children.append(r)
    if children:
        out["children"] = children
    return out
