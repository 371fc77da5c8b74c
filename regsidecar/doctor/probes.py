"""Probes: the doctor's I/O edge. Each reads one thing the sidecar depends on, bounded by
:data:`NETWORK_TIMEOUT_S` per request, and returns facts (or a finished row) for
:mod:`regsidecar.doctor.verdicts` to judge.

    probe_auth      load auth.htpasswd and auth.tokens as serve does (names only)
    probe_store     S3 (the sidecar's own driver, short timeouts, one retry) or a directory:
                    list repositories/, read one tag's current/link; S3's clock offset too
    probe_cache     write and remove a temp file in DATA_DIR/cache; statvfs; bytes cached
    probe_sidecar   GET /v2/, then /readyz, on the listen address
    probe_docker    the daemon's info through the docker SDK; daemon.json's log-opts

Errors a probe expects (refused, denied, missing) become facts; anything else is the caller's
to bound and report (see :func:`regsidecar.doctor.report.run_checks`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import socket
import tempfile
from dataclasses import replace
from typing import Any

import aiohttp
import botocore.exceptions

from regsidecar.config import Settings
from regsidecar.doctor.docker_verdicts import (
    data_root_verdict,
    docker_reachable,
    docker_unreachable,
    log_driver_verdict,
    registry_verdict,
)
from regsidecar.doctor.verdicts import (
    MAX_LISTINGS,
    AuthProbe,
    Check,
    ContainerdProbe,
    ErrorKind,
    PeerProbe,
    PolicyProbe,
    SidecarProbe,
    StoreProbe,
    cache_verdict,
)
from regsidecar.errors import ConfigError, NotFound, StorageError, UpstreamUnavailable
from regsidecar.retry import RetryPolicy
from regsidecar.signing.enforce import load_key_file
from regsidecar.storage import layout
from regsidecar.storage.base import Driver
from regsidecar.storage.filesystem import FilesystemDriver
from regsidecar.storage.s3 import AccessDenied, ClockSkewed, S3Driver

#: Timeout of one network request (connect or read) made by the doctor.
NETWORK_TIMEOUT_S = 4.0
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
# One retry: a doctor reports trouble, it does not ride it out.
_S3_RETRY = RetryPolicy(max_attempts=2, base_delay_s=0.2, max_delay_s=0.5, deadline_s=10.0)


# -- store ----------------------------------------------------------------------------------------


async def probe_store(settings: Settings) -> tuple[StoreProbe, float | None]:
    """Read the store as the sidecar would. For S3 also the clock offset (None: no sample)."""
    if settings.storage_kind != "s3":
        root = settings.filesystem_root
        probe = StoreProbe(root, "filesystem")
        if not await asyncio.to_thread(os.path.isdir, root):
            return replace(probe, error="no such directory", error_kind="missing"), None
        return await _read_store(FilesystemDriver(root), probe), None
    try:
        driver = await S3Driver.from_settings(
            settings, timeout_s=NETWORK_TIMEOUT_S, max_connections=4, retry=_S3_RETRY
        )
    except botocore.exceptions.BotoCoreError as exc:  # e.g. AWS_PROFILE names no profile
        probe = StoreProbe(settings.storage, "s3", error=describe(exc), error_kind="config")
        return probe, None
    try:
        await driver.sample_clock()
        base = StoreProbe(
            driver.description,
            "s3",
            credentials=driver.credentials_method,
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
        )
        probe = await _read_store(driver, base)
        return probe, (driver.clock.offset if driver.clock.samples else None)
    finally:
        await driver.close()


async def _read_store(driver: Driver, probe: StoreProbe) -> StoreProbe:
    """List the repositories, then find one tag (depth first, bounded) and read its link."""
    top: list[str] = []
    try:
        top = await driver.list_children(layout.repositories_dir())
        stack = list(reversed(top))
        listings = 0
        while stack and listings < MAX_LISTINGS:
            name = stack.pop()
            children = await driver.list_children(layout.repository(name))
            listings += 1
            if "_manifests" in children:
                tags = await driver.list_children(layout.tags_dir(name))
                listings += 1
                if tags:
                    key = layout.tag_current_link(name, tags[0])
                    probe = replace(probe, tag=f"{name}:{tags[0]}", link_key=key, step="get")
                    link = await driver.get(key, max_bytes=1024)
                    return replace(probe, repositories=len(top), link=_text(link))
            stack.extend(f"{name}/{c}" for c in reversed(children) if not c.startswith("_"))
        return replace(probe, repositories=len(top))
    except (StorageError, OSError) as exc:
        error = _one_line(str(exc))
        return replace(probe, repositories=len(top), error=error, error_kind=_error_kind(exc))


def _error_kind(exc: BaseException) -> ErrorKind:
    if isinstance(exc, ClockSkewed):
        return "skewed"
    if isinstance(exc, AccessDenied | PermissionError):
        return "denied"
    if isinstance(exc, UpstreamUnavailable):
        return "unreachable"
    if isinstance(exc, NotFound | FileNotFoundError):
        return "missing"
    return "other"


def describe(exc: BaseException) -> str:
    """``TypeName: message`` on one line, for a row's detail."""
    text = str(exc)
    return _one_line(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()[:80]


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- auth -----------------------------------------------------------------------------------------


def probe_auth(settings: Settings) -> AuthProbe:
    """Load the auth files as ``serve`` would (without creating the token key)."""
    from regsidecar.auth.htpasswd import Htpasswd
    from regsidecar.auth.statictokens import StaticTokens

    auth = settings.auth
    probe = AuthProbe(auth.enabled, writers=tuple(auth.writers), anonymous_pull=auth.anonymous_pull)
    if not auth.enabled:
        return probe
    try:
        users = Htpasswd.load(auth.htpasswd).users if auth.htpasswd else frozenset()
        tokens = StaticTokens.load(auth.tokens).names if auth.tokens else frozenset()
    except ConfigError as exc:
        return replace(probe, error=str(exc))
    return replace(probe, users=frozenset(users), tokens=frozenset(tokens))


# -- cache ----------------------------------------------------------------------------------------


def probe_cache(settings: Settings) -> Check:
    """Write and remove a temp file in DATA_DIR/cache (creating the directories for the test
    and removing what it created: run as another user, it must leave nothing owned by it)."""
    path = settings.cache_dir
    created: list[str] = []
    probe_dir = os.path.abspath(path)
    while not os.path.exists(probe_dir):
        created.append(probe_dir)
        probe_dir = os.path.dirname(probe_dir)
    c = settings.cache
    try:
        for d in reversed(created):
            os.mkdir(d)
        fd, tmp = tempfile.mkstemp(prefix=".doctor-", dir=path)
        os.close(fd)
        os.unlink(tmp)
        st = os.statvfs(path)
    except OSError as exc:
        return cache_verdict(
            path,
            free=0,
            cached=0,
            max_bytes=c.max_bytes,
            min_free=c.min_free_bytes,
            write_error=exc.strerror or str(exc),
        )
    finally:
        for d in created:
            with contextlib.suppress(OSError):
                os.rmdir(d)
    return cache_verdict(
        path,
        free=st.f_bavail * st.f_frsize,
        cached=_tree_bytes(os.path.join(path, "blobs")),
        max_bytes=c.max_bytes,
        min_free=c.min_free_bytes,
    )


def _tree_bytes(root: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(dirpath, f)).st_size
    return total


# -- sidecar --------------------------------------------------------------------------------------


def sidecar_url(listen: str) -> str:
    """Where a local client reaches ``listen`` (a wildcard address means loopback)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def probe_sidecar(listen: str) -> SidecarProbe:
    url = sidecar_url(listen)
    timeout = aiohttp.ClientTimeout(total=NETWORK_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.get(f"{url}/v2/") as resp:
                status, version = resp.status, resp.headers.get("Docker-Distribution-API-Version")
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ConnectionRefusedError):
                return SidecarProbe(url, refused=True)
            return SidecarProbe(url, error=describe(exc))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return SidecarProbe(url, error=describe(exc))
        probe = SidecarProbe(url, status=status, api_version=version)
        if status not in (200, 401):
            return probe
        try:
            async with session.get(f"{url}/readyz") as resp:
                ready, body = resp.status, await resp.read()
        except (aiohttp.ClientError, TimeoutError):
            return probe  # /v2/ answered: that verdict stands
        if ready not in (200, 503):
            return probe  # 404: a sidecar from before /readyz
        return replace(probe, ready_status=ready, ready_detail=_ready_detail(body))


def _ready_detail(body: bytes) -> str:
    """The reason a /readyz answer gives (``{"ready": false, "reason": ..., ...}``)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return _one_line(body.decode("utf-8", "replace"), 200)
    if isinstance(doc, dict):
        if doc.get("reason"):
            return _one_line(str(doc["reason"]), 200)
        doc = {k: v for k, v in doc.items() if k not in ("ready", "status")}
    return _one_line(json.dumps(doc, separators=(",", ":"), sort_keys=True), 200)


# -- docker ---------------------------------------------------------------------------------------


DEFAULT_DAEMON_JSON = "/etc/docker/daemon.json"


def config_file_of(argv: list[str]) -> str | None:
    """The ``--config-file`` a dockerd command line names, if any (pure).

    >>> config_file_of(["dockerd", "--config-file", "/x/d.json", "-H", "unix:///s"])
    '/x/d.json'
    >>> config_file_of(["dockerd", "--config-file=/y.json"]), config_file_of(["dockerd"])
    ('/y.json', None)
    """
    for i, arg in enumerate(argv):
        if arg == "--config-file" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config-file="):
            return arg.split("=", 1)[1]
    return None


def daemon_json_of(host: str) -> tuple[str, str]:
    """(the config file the local dockerd serving ``host`` reads, how that was told): from its
    command line's ``--config-file``, else dockerd's default; when no local dockerd (or more
    than one, none naming ``host``) can be found, the default and "assumed"."""
    socket_path = host.removeprefix("unix://")
    found: list[list[str]] = []
    with contextlib.suppress(OSError):
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() != "dockerd":
                        continue
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
            except OSError:
                continue
            found.append(argv)
    serving = [a for a in found if any(socket_path in x for x in a)] or (
        found if len(found) == 1 else []
    )
    if len(serving) != 1:
        return DEFAULT_DAEMON_JSON, "assumed: the daemon's command line could not be read"
    named = config_file_of(serving[0])
    return (named, "its --config-file") if named else (DEFAULT_DAEMON_JSON, "dockerd's default")


def probe_docker(host: str | None, daemon_json: str | None, port: int) -> list[Check]:
    """The daemon through the docker SDK (untyped: Any stays in here). ``daemon_json`` None:
    the file the daemon itself was started with (:func:`daemon_json_of`)."""
    docker: Any = importlib.import_module("docker")
    requests: Any = importlib.import_module("requests")
    shown = host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST
    errors: tuple[type[BaseException], ...] = (
        docker.errors.DockerException,
        requests.exceptions.RequestException,
        OSError,
    )
    try:
        client = (
            docker.DockerClient(base_url=host, timeout=NETWORK_TIMEOUT_S)
            if host
            else docker.from_env(timeout=NETWORK_TIMEOUT_S)
        )
    except errors as exc:
        return [docker_unreachable(shown, _one_line(str(exc), 200))]
    try:
        info: dict[str, Any] = client.info()
    except errors as exc:
        return [docker_unreachable(shown, _one_line(str(exc), 200))]
    finally:
        client.close()
    root = str(info.get("DockerRootDir") or "")
    free = total = None
    with contextlib.suppress(OSError):
        st = os.statvfs(root)
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    registry = info.get("RegistryConfig") or {}
    insecure_names = [
        name
        for name, cfg in (registry.get("IndexConfigs") or {}).items()
        if isinstance(cfg, dict) and cfg.get("Secure") is False
    ]
    if daemon_json is None:
        path, how = daemon_json_of(shown)
        label = f"{path} ({how})"
    else:
        path = label = daemon_json
    return [
        docker_reachable(shown, str(info.get("ServerVersion", "?"))),
        data_root_verdict(root or "?", free, total),
        log_driver_verdict(str(info.get("LoggingDriver", "?")), read_log_opts(path), label),
        registry_verdict(port, registry.get("InsecureRegistryCIDRs") or [], insecure_names),
    ]


def read_log_opts(path: str) -> dict[str, Any] | None:
    """``log-opts`` of a daemon.json; {} if the file does not exist (defaults apply), None if
    it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return None
    opts = doc.get("log-opts") if isinstance(doc, dict) else None
    return dict(opts) if isinstance(opts, dict) else {}


#: Members a doctor run pings (the rest are counted, not asked).
PEERS_PINGED = 16


async def probe_peers(settings: Settings) -> PeerProbe:
    """Refresh the membership once and ping up to PEERS_PINGED other members' listeners."""
    from regsidecar.peers.fleet import membership, peer_token
    from regsidecar.peers.ring import Member
    from regsidecar.peers.source import PeerSource
    from regsidecar.pull.window import ConnectionWindow
    from regsidecar.upstream import CircuitBreaker

    members = membership(settings)
    await members.refresh()
    token = peer_token(settings)
    others = members.others()[:PEERS_PINGED]
    timeout = aiohttp.ClientTimeout(total=NETWORK_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def ping(m: Member) -> str:
            source = PeerSource(
                m,
                session,
                token=token,
                me=members.me.url if members.me else None,
                breaker=CircuitBreaker(),
                window=ConnectionWindow(1),
            )
            return await source.ping(NETWORK_TIMEOUT_S)

        answers = await asyncio.gather(*(ping(m) for m in others))
    return PeerProbe(
        members=len(members.members),
        me=members.me.url if members.me else None,
        listen=settings.peer_listen,
        provider_errors=dict(members.errors),
        answers={m.url: a for m, a in zip(others, answers, strict=True)},
        asked=len(others),
    )


def probe_policy(settings: Settings) -> PolicyProbe:
    """Load every key file the policy names (nothing else: verdicts need the store)."""
    rules = settings.policy.rules
    paths = list(dict.fromkeys(k for r in rules for k in r.keys))
    errors = []
    for path in paths:
        try:
            load_key_file(path)
        except ConfigError as exc:
            errors.append((path, exc.message[:300]))  # names the file
    return PolicyProbe(
        len(rules), sum(r.rule == "signed-by" for r in rules), len(paths), tuple(errors)
    )


def probe_containerd(socket_path: str, hosts_dir: str, listen: str) -> ContainerdProbe | None:
    """None when there is no containerd socket at all; else whether it accepts a connection
    and whether ``hosts_dir`` has an entry for ``localhost:<listen port>`` naming it."""
    if not os.path.exists(socket_path):
        return None
    reachable, error = True, ""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(socket_path)
    except OSError as exc:
        reachable, error = False, exc.strerror or str(exc)
    port = listen.rpartition(":")[2]
    name = f"localhost:{port}"
    hosts_file = os.path.join(hosts_dir, name, "hosts.toml")
    try:
        with open(hosts_file, encoding="utf-8") as f:
            text = f.read()
        configured = f"://{name}" in text or f"://127.0.0.1:{port}" in text
    except OSError:
        configured = False
    return ContainerdProbe(socket_path, reachable, hosts_file, configured, error)
