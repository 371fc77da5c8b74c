"""``regsidecar doctor``: check this host's setup and say what to fix (see regsidecar.doctor)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from regsidecar.cli import add_settings_flags, settings_from
from regsidecar.commands import SubParsers
from regsidecar.errors import ConfigError
from regsidecar.logs import JsonFormatter

DESCRIPTION = """\
Check what a pull through this host's sidecar depends on and print one row per check with its
status (pass, warn or fail) and, for every row that does not pass, the fix. Checks, in order:

  config             the settings load (the same flags, REGSIDECAR_* variables and --config
                     file as serve)
  auth               the htpasswd and tokens files load (bcrypt only); every name in
                     auth.writers exists; warn when writers is empty (everyone may push)
  store              S3: list docker/registry/v2/repositories/ (s3:ListBucket) and read one
                     tag's current/link (s3:GetObject); a directory store: readable
  clock              local clock vs S3's Date header (warn over clock.max_offset_warn_s; fail
                     over 900 s with clock.correct off)
  cache              DATA_DIR/cache writable; the disk can hold cache.max_bytes above
                     cache.min_free_bytes (fail below cache.min_free_bytes)
  sidecar            GET http://LISTEN/v2/ answers as a registry (and /readyz, if served);
                     not running is a warning
  peers              with peer fetch on: the membership (peers.urls / dns / ec2_*) finds
                     members, and up to 16 others answer GET /peer/v1/ with the token (warn
                     when some do not, or when this host serves none)
  docker             the daemon answers (DOCKER_HOST or --docker-host; not reachable is a
                     warning: podman-only hosts exist); then its data-root free space (warn
                     under 10 GiB or 10%), log driver (warn: json-file without max-size) and
                     whether localhost:PORT is an insecure (plain HTTP) registry

Every network call times out after a few seconds; the whole run takes at most about 20 s.
Nothing is changed: the cache check writes and removes one temp file (and any directory it had
to create for that).

exit status: 0 every check passed, 1 the worst is a warning, 2 something failed (an invalid
config is a failed config row, also 2)."""


def register(sub: SubParsers) -> None:
    p = sub.add_parser(
        "doctor",
        help="check config, S3 access, clock, cache disk, the sidecar and docker; say what to fix",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_flags(p)
    p.add_argument(
        "--json",
        action="store_true",
        help='print {"checks": [{"name", "status", "detail", "fix"}, ...], "worst": STATUS} '
        "instead of the table",
    )
    p.add_argument(
        "--docker-host",
        metavar="URL",
        help="docker daemon to check, e.g. unix:///run/docker.sock or tcp://127.0.0.1:2375 "
        "(default: $DOCKER_HOST, else unix:///var/run/docker.sock)",
    )
    p.add_argument(
        "--daemon-json",
        metavar="PATH",
        default=None,
        help="the daemon's config file, read for log-opts max-size (default: the file the "
        "local dockerd was started with, its --config-file, else /etc/docker/daemon.json)",
    )
    p.add_argument("--skip-docker", action="store_true", help="do not check a docker daemon")
    p.add_argument(
        "--containerd-socket",
        metavar="PATH",
        default="/run/containerd/containerd.sock",
        help="containerd's socket (default %(default)s; absent: no containerd row to fix)",
    )
    p.add_argument(
        "--containerd-hosts-dir",
        metavar="DIR",
        default="/etc/containerd/certs.d",
        help="containerd's registry hosts directory (default %(default)s)",
    )
    # Settings are loaded in run(): an invalid config is a failed row here, not an early exit.
    p.set_defaults(run=run, needs_settings=False)


def run(args: argparse.Namespace) -> int:
    # Imported when the command runs, like the other commands: the probes pull in botocore.
    from regsidecar.doctor import config_failed, exit_code, render_json, render_table, run_checks

    try:
        settings = settings_from(args)
    except ConfigError as exc:
        checks = [config_failed(str(exc))]
    else:
        _quiet_logs(settings.log.level)
        checks = asyncio.run(
            run_checks(
                settings,
                docker_host=args.docker_host,
                daemon_json=args.daemon_json,
                skip_docker=args.skip_docker,
                containerd_socket=args.containerd_socket,
                containerd_hosts_dir=args.containerd_hosts_dir,
            )
        )
    print(render_json(checks) if args.json else render_table(checks))
    return exit_code(checks)


def _quiet_logs(level: str) -> None:
    """The report says what the drivers would log (the clock warning, retries): their lines
    go to stderr with --log-level debug, and nowhere otherwise, so stdout stays the report."""
    log = logging.getLogger("regsidecar")
    log.propagate = False
    if level == "debug":
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        log.setLevel(logging.DEBUG)
    else:
        handler = logging.NullHandler()
    log.addHandler(handler)
