"""``regsidecar warm IMAGE... | --file LIST``: pre-pull images into the running sidecar's cache."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from dataclasses import asdict
from typing import TextIO

from regsidecar.cache.control import ops_url
from regsidecar.cli import add_settings_flags
from regsidecar.commands import SubParsers
from regsidecar.config import format_size
from regsidecar.warm import Progress, host_platform, render_progress, warm_all


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "warm",
        help="pre-pull images into the running sidecar's cache",
        description="Pull manifests and blobs of each image through the running sidecar (as "
        "docker pull would), so they are on local disk before a scale-up and still serve if "
        "S3 goes away. Images are NAME[:TAG], NAME@DIGEST or localhost:5000/NAME:TAG. A "
        "progress bar (bytes, rate, ETA) goes to stderr on a terminal; the summary to stdout. "
        "Exit status 1 if any image failed.",
    )
    p.add_argument("images", nargs="*", metavar="IMAGE", help="images to warm")
    p.add_argument(
        "--file",
        metavar="LIST",
        help="read images from LIST, one per line ('#' starts a comment; '-' is stdin)",
    )
    p.add_argument(
        "--platform",
        action="append",
        metavar="OS/ARCH[/VARIANT]",
        help=f"platform to take from a multi-platform image; repeatable (default: this host, "
        f"{host_platform()})",
    )
    p.add_argument(
        "--all-platforms", action="store_true", help="take every platform of a multi-platform image"
    )
    p.add_argument(
        "--registry",
        metavar="URL",
        help="the sidecar's URL (default: http://LISTEN from the settings)",
    )
    p.add_argument(
        "--concurrency", type=int, default=4, metavar="N", help="blobs fetched at once (default 4)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="give up on the whole run after this long (default 3600)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_settings_flags(p)
    p.set_defaults(run=run)


def _images(args: argparse.Namespace) -> list[str]:
    images = list(args.images)
    if args.file:
        with sys.stdin if args.file == "-" else open(args.file, encoding="utf-8") as f:
            for line in f:
                line = line.split("#", 1)[0].strip()
                if line:
                    images.append(line)
    return images


class _Bar:
    """Redraws the progress line on a terminal (at most 10 times a second)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = 0.0

    def __call__(self, p: Progress, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last < 0.1:
            return
        self._last = now
        line = render_progress(p.done, p.total, p.blobs_done, p.blobs_total, now - p.started)
        self._stream.write("\r" + line + ("\n" if final else ""))
        self._stream.flush()


def run(args: argparse.Namespace) -> int:
    try:
        images = _images(args)
    except OSError as exc:
        print(f"regsidecar: warm: {exc}", file=sys.stderr)
        return 2
    if not images:
        print("regsidecar: warm: no images given (IMAGE... or --file LIST)", file=sys.stderr)
        return 2
    if args.concurrency < 1:
        print("regsidecar: warm: --concurrency must be at least 1", file=sys.stderr)
        return 2
    settings = args.settings
    base_url = args.registry or ops_url(settings.model_copy(update={"ops_listen": ""}))
    store = _directory_store(base_url)
    if store is not None:
        message = (
            f"the sidecar at {base_url} serves a directory store ({store}): it reads blobs in "
            "place and keeps no cache, so warming would copy nothing; its images are ready"
        )
        print(json.dumps({"warmed": False, "reason": message}) if args.json else message)
        return 0
    platforms = None if args.all_platforms else (args.platform or [host_platform()])
    bar = _Bar(sys.stderr) if sys.stderr.isatty() and not args.quiet else None
    progress = Progress(on_change=bar)
    try:
        results = asyncio.run(
            warm_all(
                base_url,
                images,
                platforms=platforms,
                concurrency=args.concurrency,
                progress=progress,
                timeout_s=args.timeout,
            )
        )
    except TimeoutError:
        print(f"regsidecar: warm: gave up after {args.timeout:.0f} s", file=sys.stderr)
        return 1
    if bar is not None:
        bar(progress, final=True)
    elapsed = time.monotonic() - progress.started
    total = sum(r.bytes for r in results)
    failed = [r for r in results if r.error]
    rate = int(total / elapsed) if elapsed > 0 else 0
    summary = {
        "images": [asdict(r) for r in results],
        "blobs": sum(r.blobs for r in results),
        "cached_before": sum(r.cached for r in results),
        "bytes": total,
        "seconds": round(elapsed, 3),
        "bytes_per_second": rate,
        "failed": len(failed),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for r in results:
            if r.error:
                print(f"FAIL  {r.image}: {r.error}")
            else:
                print(
                    f"ok    {r.image}  {r.digest[:19]}  {r.manifests} manifests, {r.blobs} "
                    f"blobs ({r.cached} already cached), {format_size(r.bytes)}"
                )
        print(
            f"warmed {len(results) - len(failed)}/{len(results)} images: {summary['blobs']} "
            f"blobs, {format_size(total)} in {elapsed:.1f} s "
            f"({format_size(rate)}/s)"
        )
    return 1 if failed else 0


def _directory_store(base_url: str) -> str | None:
    """The store of the sidecar at ``base_url`` if it is a directory (its /healthz says so);
    None for S3, or when /healthz does not answer (the warm itself then says why)."""
    try:
        with urllib.request.urlopen(f"{base_url}/healthz", timeout=5) as resp:
            store = str(json.load(resp).get("store", ""))
    except (OSError, ValueError):
        return None
    return None if not store or store.startswith("s3://") else store
