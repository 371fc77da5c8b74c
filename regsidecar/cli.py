"""``regsidecar``: thin subcommands. Build Settings, call the service; no logic here.

Every flag is also an environment variable ``REGSIDECAR_<FLAG>`` and a YAML key (see
:mod:`regsidecar.config`); flags win over the environment, which wins over the file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

from regsidecar import __version__, logs
from regsidecar.config import Settings, env_name, load_settings
from regsidecar.errors import ConfigError

log = logging.getLogger("regsidecar")

# (flag, dotted settings key, help)
_SERVE_FLAGS: list[tuple[str, str, str]] = [
    ("--listen", "listen", "HOST:PORT to listen on (default 127.0.0.1:5000)"),
    (
        "--storage",
        "storage",
        "s3://BUCKET[/PREFIX] or a directory holding a registry:2 tree "
        "(default: DATA_DIR/registry)",
    ),
    ("--s3-endpoint-url", "s3.endpoint_url", "S3 endpoint URL (for S3-compatible stores)"),
    ("--s3-region", "s3.region", "S3 region (default: from the AWS config chain, else us-east-1)"),
    (
        "--data-dir",
        "data_dir",
        "directory for the cache and the embedded store (default ~/.local/share/regsidecar)",
    ),
    ("--cache-max-bytes", "cache.max_bytes", "cache size bound, e.g. 20GiB (default 10GiB)"),
    ("--log-level", "log.level", "debug, info, warning or error (default info)"),
]


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("REGSIDECAR_CONFIG"),
        help="YAML settings file (env REGSIDECAR_CONFIG)",
    )
    for flag, key, help_ in _SERVE_FLAGS:
        p.add_argument(
            flag,
            dest=key,
            metavar=key.rsplit(".", 1)[-1].upper(),
            help=f"{help_} [env {env_name(key)}]",
        )
    p.add_argument(
        "--s3-path-style",
        dest="s3.path_style",
        action="store_const",
        const=True,
        help=f"use path-style S3 URLs [env {env_name('s3.path_style')}]",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regsidecar",
        description="Per-host OCI registry pull-through cache over a registry:2 store.",
    )
    parser.add_argument("--version", action="version", version=f"regsidecar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="serve the pull API on the configured store",
        description="Serve the OCI pull API (docker pull localhost:5000/...).",
    )
    _add_serve_flags(serve)
    demo = sub.add_parser(
        "demo",
        help="write a sample image into the embedded store, then serve",
        description="Write regsidecar/hello:latest (a tiny linux/amd64+arm64 image) into the "
        "embedded filesystem store and serve it: docker pull localhost:5000/regsidecar/hello",
    )
    _add_serve_flags(demo)
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
    _add_serve_flags(verify)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {key: getattr(args, key, None) for _, key, _ in _SERVE_FLAGS}
    overrides["s3.path_style"] = getattr(args, "s3.path_style", None)
    return load_settings(args.config, overrides=overrides)


def _cache_verify(settings: Settings) -> int:
    import json

    from regsidecar.cache.store import BlobCache

    cache = BlobCache(
        settings.cache_dir,
        max_bytes=settings.cache.max_bytes,
        min_free_bytes=settings.cache.min_free_bytes,
    )
    cache.open()
    checked, removed = cache.verify_all()
    print(json.dumps({"checked": checked, "removed": removed}))
    return 1 if removed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"regsidecar: invalid config: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log.level)
    if args.command == "cache":
        return _cache_verify(settings)
    if args.command == "demo":
        if settings.storage_kind != "filesystem":
            print(
                "regsidecar: invalid config: storage: demo writes the embedded filesystem store; "
                "drop --storage s3://...",
                file=sys.stderr,
            )
            return 2
        from regsidecar.demo import REPOSITORY, TAG, write_sample
        from regsidecar.storage.filesystem import FilesystemDriver

        digest = write_sample(FilesystemDriver(settings.filesystem_root))
        log.info(
            "sample image written",
            extra={
                "image": f"{REPOSITORY}:{TAG}",
                "digest": digest,
                "pull": f"docker pull localhost:{settings.port}/{REPOSITORY}",
            },
        )
    from regsidecar.api.app import serve

    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    return 0
