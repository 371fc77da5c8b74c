"""The run and its report: every probe at once, each bounded; rows in a fixed order; the
table or JSON; the exit code (the worst status).

>>> exit_code([Check("cache", "pass", "ok"), Check("clock", "warn", "off", "enable NTP")])
1
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterable
from dataclasses import asdict
from typing import TypeVar

from regsidecar.config import Settings
from regsidecar.doctor.docker_verdicts import docker_skipped
from regsidecar.doctor.probes import (
    describe,
    probe_auth,
    probe_cache,
    probe_containerd,
    probe_docker,
    probe_peers,
    probe_policy,
    probe_sidecar,
    probe_store,
)
from regsidecar.doctor.verdicts import (
    Check,
    Status,
    auth_verdict,
    clock_not_needed,
    clock_verdict,
    config_verdict,
    containerd_verdict,
    peers_verdict,
    policy_verdict,
    sidecar_verdict,
    store_verdict,
)

T = TypeVar("T")

_RANK: dict[Status, int] = {"pass": 0, "warn": 1, "fail": 2}
#: Bound of a whole check (the S3 one makes several requests, retried once).
CHECK_TIMEOUT_S = 20.0

_HUNG_FIX = {
    "store": "check s3.endpoint_url / network / the instance role",
    "cache": "the data dir's disk does not answer: check the mount (NFS?) and dmesg",
    "sidecar": "the process is stuck: systemctl restart regsidecar",
    "docker": "the daemon is stuck: systemctl restart docker",
    "peers": "a membership source does not answer: check peers.dns / the EC2 API endpoint",
}


def worst(checks: Iterable[Check]) -> Status:
    return max((c.status for c in checks), key=_RANK.__getitem__, default="pass")


def exit_code(checks: Iterable[Check]) -> int:
    """0 when every check passes, 1 when the worst is a warning, 2 when something failed."""
    return _RANK[worst(checks)]


# -- running --------------------------------------------------------------------------------------


async def _bounded(name: str, work: Awaitable[T], timeout_s: float = CHECK_TIMEOUT_S) -> T | Check:
    """``work``'s result, or a failed check if it takes longer than ``timeout_s`` or raises
    something its probe did not expect (a doctor reports; it does not crash)."""
    try:
        return await asyncio.wait_for(work, timeout_s)
    except TimeoutError:
        return Check(name, "fail", f"no answer within {timeout_s:.0f} s", _HUNG_FIX[name])
    except Exception as exc:
        return Check(name, "fail", f"check failed: {describe(exc)}", _HUNG_FIX[name])


async def run_checks(
    settings: Settings,
    *,
    docker_host: str | None = None,
    daemon_json: str | None = None,
    skip_docker: bool = False,
    containerd_socket: str = "/run/containerd/containerd.sock",
    containerd_hosts_dir: str = "/etc/containerd/certs.d",
) -> list[Check]:
    """Every check, config first; measured concurrently, reported in a fixed order."""

    async def store_and_clock() -> list[Check]:
        got = await _bounded("store", probe_store(settings))
        if isinstance(got, Check):
            store, offset = got, None
        else:
            store, offset = store_verdict(got[0]), got[1]
        if settings.storage_kind != "s3":
            return [store, clock_not_needed()]
        clock = settings.clock
        return [store, clock_verdict(offset, clock.correct, clock.max_offset_warn_s)]

    async def docker() -> list[Check]:
        if skip_docker:
            return [docker_skipped()]
        work = asyncio.to_thread(probe_docker, docker_host, daemon_json, settings.port)
        got = await _bounded("docker", work)
        return [got] if isinstance(got, Check) else got

    async def one(name: str, work: Awaitable[Check]) -> list[Check]:
        return [await _bounded(name, work)]

    async def sidecar() -> Check:
        return sidecar_verdict(await probe_sidecar(settings.listen))

    async def peers() -> list[Check]:
        if not settings.peers.enabled:
            return []
        got = await _bounded("peers", probe_peers(settings))
        return [got if isinstance(got, Check) else peers_verdict(got)]

    async def containerd() -> Check:
        probe = await asyncio.to_thread(
            probe_containerd, containerd_socket, containerd_hosts_dir, settings.listen
        )
        return containerd_verdict(probe)

    groups = await asyncio.gather(
        store_and_clock(),
        one("cache", asyncio.to_thread(probe_cache, settings)),
        one("sidecar", sidecar()),
        peers(),
        docker(),
        one("containerd", containerd()),
    )
    checks = [
        config_verdict(settings),
        auth_verdict(await asyncio.to_thread(probe_auth, settings)),
        policy_verdict(await asyncio.to_thread(probe_policy, settings)),
    ]
    for group in groups:
        checks.extend(group)
    return checks


# -- rendering ------------------------------------------------------------------------------------


def render_table(checks: list[Check]) -> str:
    """CHECK, STATUS, DETAIL columns; a non-pass row is followed by its fix, indented."""
    width = max([len("CHECK"), *(len(c.name) for c in checks)])
    lines = [f"{'CHECK':<{width}}  STATUS  DETAIL"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.status:<6}  {c.detail}")
        if c.status != "pass" and c.fix:
            lines.append(f"{'':<{width}}  {'':<6}  fix: {c.fix}")
    return "\n".join(lines)


def render_json(checks: list[Check]) -> str:
    return json.dumps({"checks": [asdict(c) for c in checks], "worst": worst(checks)}, indent=2)
