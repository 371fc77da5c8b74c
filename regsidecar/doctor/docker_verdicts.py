"""Verdicts on the docker daemon: its ``info`` (and daemon.json) in, four rows out.

Pure, like :mod:`regsidecar.doctor.verdicts`; :func:`regsidecar.doctor.probes.probe_docker`
asks the daemon. A daemon that does not answer is a warning, not a failure: podman-only
hosts exist.

>>> registry_verdict(5000, ["127.0.0.0/8"]).status
'pass'
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from regsidecar.config import format_size
from regsidecar.doctor.verdicts import Check

GiB = 1024**3
#: Docker's data-root warns below this much free space, or below this fraction of its disk.
DOCKER_MIN_FREE_BYTES = 10 * GiB
DOCKER_MIN_FREE_FRACTION = 0.10


def docker_skipped() -> Check:
    return Check("docker", "pass", "not checked (--skip-docker)")


def docker_unreachable(host: str, error: str) -> Check:
    return Check(
        "docker",
        "warn",
        f"no docker daemon at {host}: {error}",
        "start it (systemctl start docker) or point DOCKER_HOST / --docker-host at it; "
        "on podman-only hosts use --skip-docker",
    )


def docker_reachable(host: str, version: str) -> Check:
    return Check("docker", "pass", f"docker {version} at {host}")


def data_root_verdict(path: str, free: int | None, total: int | None) -> Check:
    if free is None or not total:
        return Check(
            "docker-data-root",
            "warn",
            f"{path}: not visible from this host (a remote or VM daemon): free space unknown",
            "run regsidecar doctor where the daemon runs",
        )
    detail = f"{path}: {format_size(free)} free of {format_size(total)}"
    if free < DOCKER_MIN_FREE_BYTES or free < DOCKER_MIN_FREE_FRACTION * total:
        return Check(
            "docker-data-root",
            "warn",
            f"{detail} (under {format_size(DOCKER_MIN_FREE_BYTES)} or "
            f"{DOCKER_MIN_FREE_FRACTION:.0%})",
            "docker system prune (or regsidecar prune), or move data-root to the big disk "
            '("data-root" in /etc/docker/daemon.json)',
        )
    return Check("docker-data-root", "pass", detail)


def log_driver_verdict(
    driver: str, log_opts: Mapping[str, Any] | None, daemon_json: str = "daemon.json"
) -> Check:
    """json-file keeps every line unless ``max-size`` is set; ``log_opts`` None means the
    daemon.json that would say so could not be read."""
    name = "docker-log-driver"
    if driver != "json-file":
        return Check(name, "pass", f"{driver}")
    if log_opts is None:
        return Check(
            name,
            "warn",
            f"json-file; cannot read {daemon_json} to see whether max-size is set",
            "run doctor as root or with --daemon-json PATH; or use the local log driver",
        )
    if log_opts.get("max-size"):
        return Check(name, "pass", f"json-file, max-size {log_opts['max-size']}")
    return Check(
        name,
        "warn",
        f"json-file without max-size in {daemon_json}: container logs grow without bound",
        f'set "log-driver": "local" (or "log-opts": {{"max-size": "10m", "max-file": "3"}}) '
        f"in {daemon_json} and restart docker",
    )


def registry_verdict(
    port: int, insecure_cidrs: Iterable[str], insecure_names: Iterable[str] = ()
) -> Check:
    """docker pulls ``localhost:PORT/...`` over plain HTTP only from an insecure registry:
    loopback (127.0.0.0/8) is one by default, unless daemon.json replaced the list."""
    name = "docker-registry"
    loopback = ipaddress.ip_address("127.0.0.1")
    for cidr in insecure_cidrs:
        with contextlib.suppress(ValueError):
            if loopback in ipaddress.ip_network(cidr, strict=False):
                return Check(name, "pass", f"localhost:{port} is insecure (plain HTTP) via {cidr}")
    if f"localhost:{port}" in set(insecure_names):
        return Check(name, "pass", f"localhost:{port} is listed in insecure-registries")
    return Check(
        name,
        "warn",
        f"loopback is not an insecure registry: docker would pull localhost:{port} over TLS",
        f'add "insecure-registries": ["localhost:{port}", "127.0.0.0/8"] to '
        "/etc/docker/daemon.json and restart docker",
    )
