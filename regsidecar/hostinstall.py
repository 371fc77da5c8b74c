"""What ``regsidecar install`` writes onto a host, and how it writes it.

The files come from one place, the package data under ``regsidecar/hostfiles/`` (the
repository's top-level ``systemd/`` and ``upstart/`` are symlinks into it). The unit files name
the executable as :data:`DEFAULT_EXEC`; :func:`render` puts the real path in its place, so for
the default path the installed files are byte for byte the checked-in ones::

    kind      destination (under --root, default /)        package data
    systemd   etc/systemd/system/regsidecar.service        systemd/regsidecar.service
              etc/systemd/system/regsidecar-prune.service  systemd/regsidecar-prune.service
              etc/systemd/system/regsidecar-prune.timer    systemd/regsidecar-prune.timer
    upstart   etc/init/regsidecar.conf                     upstart/regsidecar.conf
              etc/cron.d/regsidecar-prune                  upstart/regsidecar-prune.cron
    both      etc/regsidecar/config.yml                    config.yml
              etc/default/regsidecar                       default-regsidecar
              etc/regsidecar/docker-daemon.json            docker-daemon.json

A file already there is never replaced unless ``force`` (:func:`decide`); a replaced file's old
content is kept beside it as ``<file>~``. ``/etc/docker/daemon.json`` is never touched: the
snippet is for the operator to merge.

>>> files = render("systemd", "/usr/local/bin/regsidecar")
>>> b"ExecStart=/usr/local/bin/regsidecar serve" in files["etc/systemd/system/regsidecar.service"]
True
>>> decide(None, b"new", force=False), decide(b"old", b"new", force=False)
('written', 'kept')
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

Kind = Literal["systemd", "upstart"]
Action = Literal["written", "unchanged", "kept", "replaced", "failed"]

KINDS: tuple[Kind, ...] = ("systemd", "upstart")

# Where the cloud-init example (deploy/cloud-init.yaml) installs the venv; the checked-in unit
# files name this path and install substitutes the real one.
DEFAULT_EXEC = "/opt/regsidecar/bin/regsidecar"

# Characters a path may hold and still be written unquoted into a unit's ExecStart= (where
# "%" is a specifier and "$" a variable), an upstart script and a crontab line (where "%" ends
# the command).
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._+@/-]+")


@dataclass(frozen=True)
class HostFile:
    """One file to install: ``dest`` relative to the root, ``source`` under hostfiles/."""

    dest: str
    source: str
    mode: int = 0o644


_COMMON: tuple[HostFile, ...] = (
    HostFile("etc/regsidecar/config.yml", "config.yml"),
    HostFile("etc/regsidecar/docker-daemon.json", "docker-daemon.json"),
)

FILES: dict[Kind, tuple[HostFile, ...]] = {
    "systemd": (
        HostFile("etc/systemd/system/regsidecar.service", "systemd/regsidecar.service"),
        HostFile("etc/systemd/system/regsidecar-prune.service", "systemd/regsidecar-prune.service"),
        HostFile("etc/systemd/system/regsidecar-prune.timer", "systemd/regsidecar-prune.timer"),
        *_COMMON,
        # systemd reads EnvironmentFile= as root: it may hold keys, so only root reads it.
        HostFile("etc/default/regsidecar", "default-regsidecar", 0o600),
    ),
    "upstart": (
        HostFile("etc/init/regsidecar.conf", "upstart/regsidecar.conf"),
        HostFile("etc/cron.d/regsidecar-prune", "upstart/regsidecar-prune.cron"),
        *_COMMON,
        # The upstart job reads it after setuid regsidecar: it must stay readable to that user.
        HostFile("etc/default/regsidecar", "default-regsidecar"),
    ),
}

NEXT_STEPS: dict[Kind, tuple[str, ...]] = {
    "systemd": (
        "edit /etc/regsidecar/config.yml (storage: s3://BUCKET, s3.region)",
        "merge /etc/regsidecar/docker-daemon.json into /etc/docker/daemon.json, then "
        "systemctl restart docker",
        "systemctl daemon-reload && systemctl enable --now regsidecar regsidecar-prune.timer",
    ),
    "upstart": (
        "edit /etc/regsidecar/config.yml (storage: s3://BUCKET, s3.region)",
        "merge /etc/regsidecar/docker-daemon.json into /etc/docker/daemon.json, then "
        "restart docker",
        "id regsidecar >/dev/null 2>&1 || useradd --system --home-dir /var/lib/regsidecar "
        "--shell /usr/sbin/nologin regsidecar",
        "install -d -o regsidecar -g regsidecar -m 0750 /var/lib/regsidecar",
        "initctl reload-configuration && start regsidecar",
    ),
}


@dataclass(frozen=True)
class Result:
    """What happened to one file; ``path`` is where it is on this machine."""

    path: str
    action: Action
    detail: str = ""

    def line(self) -> str:
        tail = f" ({self.detail})" if self.detail else ""
        return f"{self.action:<10} {self.path}{tail}"


def source_bytes(source: str) -> bytes:
    """The package's copy of ``hostfiles/<source>``."""
    return resources.files("regsidecar").joinpath("hostfiles", *source.split("/")).read_bytes()


def check_exec_path(path: str) -> str:
    """``path`` if it can stand unquoted in a unit, an upstart job and a crontab line."""
    if not _SAFE_PATH.fullmatch(path) or os.path.normpath(path) != path:
        raise ValueError(
            f"--exec must be an absolute, normalised path of letters, digits and ._+@-/ "
            f"(got {path!r})"
        )
    return path


def default_exec(argv0: str | None = None, executable: str | None = None) -> str | None:
    """The ``regsidecar`` executable that is running: the script itself, the one beside this
    Python (``python -m regsidecar`` from a venv), else the first on PATH; None if none is."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    executable = sys.executable if executable is None else executable
    candidates = [argv0 if os.path.basename(argv0) == "regsidecar" else ""]
    if executable:
        candidates.append(os.path.join(os.path.dirname(executable), "regsidecar"))
    candidates.append(shutil.which("regsidecar") or "")
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    return None


_DOCKER_GROUP_LINE = b"SupplementaryGroups=docker\n"
_NO_DOCKER_GROUP = (
    b"# No docker group on this host when installed (a containerd node?): no docker to prune.\n"
)


def render(kind: Kind, exec_path: str = DEFAULT_EXEC, *, docker: bool = True) -> dict[str, bytes]:
    """Destination (relative to the root) -> content, with ``exec_path`` as the executable.
    ``docker`` False (the host has no docker group): the prune service neither joins that
    group, which systemd would refuse to start it without (216/GROUP), nor prunes docker."""
    check_exec_path(exec_path)
    new = exec_path.encode()
    out = {f.dest: source_bytes(f.source).replace(DEFAULT_EXEC.encode(), new) for f in FILES[kind]}
    if not docker and kind == "systemd":
        dest = "etc/systemd/system/regsidecar-prune.service"
        unit = out[dest].replace(_DOCKER_GROUP_LINE, _NO_DOCKER_GROUP)
        out[dest] = unit.replace(b" prune --config ", b" prune --no-docker --config ")
    return out


def has_docker_group(root: Path) -> bool:
    """Whether ``root``'s /etc/group has a docker group (True when there is no such file to
    tell: a packaging root, where the default stands)."""
    try:
        text = (root / "etc/group").read_text(errors="replace")
    except OSError:
        return True
    return any(line.split(":", 1)[0] == "docker" for line in text.splitlines())


def decide(existing: bytes | None, new: bytes, force: bool) -> Action:
    """What to do with a file: absent -> written; same bytes -> unchanged; different ->
    kept, or replaced with ``force``."""
    if existing is None:
        return "written"
    if existing == new:
        return "unchanged"
    return "replaced" if force else "kept"


def write_atomic(path: Path, data: bytes, mode: int) -> None:
    """Write ``path`` so that a reader sees the old content or the new, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def install(kind: Kind, root: Path, exec_path: str, force: bool = False) -> list[Result]:
    """Write ``kind``'s files under ``root``; one :class:`Result` per file, in order."""
    rendered = render(kind, exec_path, docker=has_docker_group(root))
    return install_files(root, [(f.dest, rendered[f.dest], f.mode) for f in FILES[kind]], force)


# -- containerd ---------------------------------------------------------------------------------

CONTAINERD_HOSTS_DIR = "etc/containerd/certs.d"
# The registry containerd asks for docker.io images.
_DOCKER_HUB = "registry-1.docker.io"
_REGISTRY_NAME = re.compile(r"[A-Za-z0-9.-]+(?::[0-9]{1,5})?")


def containerd_hosts(sidecar: str, mirrors: Sequence[str] = ()) -> dict[str, bytes]:
    """``certs.d/<host>/hosts.toml`` files (destination relative to the root -> content): one
    for the sidecar's own name (``sidecar``, e.g. ``localhost:5000``: plain HTTP), and one per
    registry of ``mirrors`` that containerd then asks through the sidecar first, and the
    registry itself (its ``server``) only if the sidecar fails."""
    for name in (sidecar, *mirrors):
        if not _REGISTRY_NAME.fullmatch(name):
            raise ValueError(f"not a registry host[:port]: {name!r}")
    url = f"http://{sidecar}"
    out = {
        f"{CONTAINERD_HOSTS_DIR}/{sidecar}/hosts.toml": (
            "# Written by regsidecar install --containerd: this host's sidecar, plain HTTP on\n"
            "# loopback (ctr needs no --plain-http with --hosts-dir).\n"
            f'server = "{url}"\n\n'
            f'[host."{url}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        ).encode()
    }
    for name in mirrors:
        upstream = _DOCKER_HUB if name == "docker.io" else name
        out[f"{CONTAINERD_HOSTS_DIR}/{name}/hosts.toml"] = (
            f"# Written by regsidecar install --containerd --mirror {name}: pulls of {name}\n"
            f"# go through this host's sidecar first; {upstream} itself only if it fails.\n"
            f'server = "https://{upstream}"\n\n'
            f'[host."{url}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
        ).encode()
    return out


_HOSTS = "/" + CONTAINERD_HOSTS_DIR
CONTAINERD_NEXT_STEPS: tuple[str, ...] = (
    f"containerd's CRI (kubelet) reads {_HOSTS} when /etc/containerd/config.toml has "
    f'[plugins."io.containerd.grpc.v1.cri".registry] config_path = "{_HOSTS}" '
    "(then systemctl restart containerd); this command never edits config.toml",
    f"ctr: ctr images pull --hosts-dir {_HOSTS} IMAGE",
    "regsidecar doctor checks the containerd socket, the hosts dir and the mirror",
)


def install_files(
    root: Path, files: Sequence[tuple[str, bytes, int]], force: bool = False
) -> list[Result]:
    """Write each (destination relative to ``root``, content, mode) as :func:`decide` says."""
    results = []
    for dest, new, file_mode in files:
        path = root / dest
        try:
            existing = _read(path)
            action = decide(existing, new, force)
            detail = ""
            if action == "written":
                write_atomic(path, new, file_mode)
            elif action == "replaced":
                assert existing is not None
                mode = path.stat().st_mode & 0o7777
                # "~" as GNU install/cp --backup: every cron (cronie runs x.bak), systemd and
                # upstart skip such a name, so the old copy never runs beside the new one.
                backup = path.with_name(path.name + "~")
                write_atomic(backup, existing, mode)
                write_atomic(path, new, mode)
                detail = f"your copy is in {backup}"
            elif action == "kept":
                detail = "edited; --force replaces it"
        except OSError as exc:
            action, detail = "failed", exc.strerror or str(exc)
        results.append(Result(str(path), action, detail))
    return results
