"""``regsidecar serve`` and ``regsidecar demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging

from regsidecar.cli import add_settings_flags, config_error
from regsidecar.commands import SubParsers
from regsidecar.errors import ConfigError

log = logging.getLogger("regsidecar")


def register(sub: SubParsers) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve the registry API on the configured store (push only for writers)",
        description="Serve the OCI distribution API (docker pull localhost:5000/...). A blob "
        "that is not cached is fetched from the store once however many clients ask, and "
        "over parallel ranged GETs once one connection proves too slow (download.* "
        "settings, env REGSIDECAR_DOWNLOAD_*); no response's last byte leaves before the "
        "blob is verified. With peers (--peers, peers.dns or peers.ec2_asg; the others' "
        "--peer-listen), each part of a blob comes from its rendezvous tree's parent on "
        "another host and only that tree's root reads it from S3; every blob is still "
        "verified, and a peer that is down, slow or lying costs a fetch from S3. It is "
        "read-only unless auth.htpasswd or auth.tokens names "
        "writers; then those may push, delete (push.delete) and promote (POST /-/promote). "
        "Under systemd (Type=notify) it reports READY=1 once it listens and the store "
        "answers or the cache holds content, and pings the watchdog when WatchdogSec= is set.",
    )
    add_settings_flags(serve)
    serve.set_defaults(run=run_serve, serves=True)
    demo = sub.add_parser(
        "demo",
        help="write a sample image into the embedded store, then serve",
        description="Write regsidecar/hello:latest (a tiny linux/amd64+arm64 image) into the "
        "embedded filesystem store and serve it: docker pull localhost:5000/regsidecar/hello",
    )
    add_settings_flags(demo)
    demo.set_defaults(run=run_demo, serves=True)


def run_serve(args: argparse.Namespace) -> int:
    from regsidecar.api.app import serve
    from regsidecar.datadir import DataDirBusy

    try:
        asyncio.run(serve(args.settings))
    except ConfigError as exc:  # found while opening (a policy key file, an auth file)
        return config_error(str(exc))
    except DataDirBusy as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    except OSError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 1
    return 0


def run_demo(args: argparse.Namespace) -> int:
    settings = args.settings
    if settings.storage_kind != "filesystem":
        return config_error(
            "storage: demo writes the embedded filesystem store; drop --storage s3://..."
        )
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
    return run_serve(args)
