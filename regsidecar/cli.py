"""``regsidecar``: thin subcommands. Build Settings, call the service; no logic here.

Every settings flag is also an environment variable ``REGSIDECAR_<FLAG>`` and a YAML key (see
:mod:`regsidecar.config`); flags win over the environment, which wins over the file. Each
subcommand lives in :mod:`regsidecar.commands` and registers its own parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from regsidecar import __version__, logs
from regsidecar.config import Settings, env_name, load_settings
from regsidecar.errors import ConfigError

# (flag, dotted settings key, help)
SETTINGS_FLAGS: list[tuple[str, str, str]] = [
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
    (
        "--peer-listen",
        "peer_listen",
        "HOST:PORT where other sidecars fetch blobs by digest, e.g. 0.0.0.0:5001 (default: off)",
    ),
    (
        "--peers",
        "peers.urls",
        "peer sidecars' URLs, comma-separated (this host may be among them); peers.dns and "
        "peers.ec2_asg find them instead (default: none, peer fetch off)",
    ),
    ("--log-level", "log.level", "debug, info, warning or error (default info)"),
]


def add_settings_flags(p: argparse.ArgumentParser) -> None:
    """The flags every command that reads Settings accepts (``--config`` and the table)."""
    p.add_argument(
        "--config",
        metavar="FILE",
        default=os.environ.get("REGSIDECAR_CONFIG"),
        help="YAML settings file (env REGSIDECAR_CONFIG)",
    )
    for flag, key, help_ in SETTINGS_FLAGS:
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


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from ``--config``, the environment and the flags; raises ConfigError."""
    overrides: dict[str, Any] = {key: getattr(args, key, None) for _, key, _ in SETTINGS_FLAGS}
    overrides["s3.path_style"] = getattr(args, "s3.path_style", None)
    return load_settings(getattr(args, "config", None), overrides=overrides)


def config_error(message: str) -> int:
    print(f"regsidecar: invalid config: {message}", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    from regsidecar import commands

    parser = argparse.ArgumentParser(
        prog="regsidecar",
        description="Per-host OCI registry pull-through cache over a registry:2 store.",
    )
    parser.add_argument("--version", action="version", version=f"regsidecar {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in commands.modules():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "needs_settings", True):
        try:
            args.settings = settings_from(args)
        except ConfigError as exc:
            return config_error(str(exc))
        if getattr(args, "serves", False):
            logs.setup(args.settings.log.level)
        else:
            # A tool's stdout is its report; its log lines go to stderr, warnings and up.
            level = args.settings.log.level
            logs.setup(level if level in ("warning", "error") else "warning", sys.stderr)
    rc: int = args.run(args)
    return rc
