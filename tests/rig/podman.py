"""podman as a real client (``podman pull``) with fully private state.

Rootful podman writes to /var/lib/containers/storage, /run/containers/storage,
/run/libpod, /dev/shm/libpod_lock and the system containers.conf files by
default; here every one of those is redirected into a temp dir: a storage.conf
(vfs driver, graphroot/runroot in the temp dir) via CONTAINERS_STORAGE_CONF, a
containers.conf (cgroupfs, file events, file locks, tmp/static/volume/network
dirs) via CONTAINERS_CONF, a private registries.conf and policy. As root it runs
in a private mount namespace with temp dirs bound over /var/lib (blob-info
cache) and /run (netavark's fixed /run/containers/networks).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from .ports import assert_loopback
from .proc import can_isolate_mounts, child_env, private_mounts_argv, remove_tree, run, which

_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}


def _check_ref(ref: str) -> None:
    host = ref.split("/", 1)[0]
    assert_loopback(host.rsplit(":", 1)[0])


class Podman:
    """A podman with private vfs storage and config (context manager; ``close()`` cleans)."""

    def __init__(self, *, isolate_mounts: bool | None = None, timeout_s: float = 300.0) -> None:
        self.podman = which("podman")
        self.timeout_s = timeout_s
        self.state = Path(tempfile.mkdtemp(prefix="rig-podman-"))
        s = self.state
        for sub in (
            "graph",
            "run",
            "tmp",
            "libpod-tmp",
            "static",
            "volumes",
            "networks",
            "events",
            "home",
            "xdg-run",
            "varlib",
            "hostrun",
        ):
            (s / sub).mkdir()
        (s / "xdg-run").chmod(0o700)
        (s / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{s / "graph"}"\nrunroot = "{s / "run"}"\n'
        )
        (s / "containers.conf").write_text(
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{s / "events" / "events.log"}"\n'
            'lock_type = "file"\n'
            f'tmp_dir = "{s / "libpod-tmp"}"\n'
            f'static_dir = "{s / "static"}"\n'
            f'volume_path = "{s / "volumes"}"\n'
            "[network]\n"
            f'network_config_dir = "{s / "networks"}"\n'
        )
        (s / "registries.conf").write_text(
            'unqualified-search-registries = []\nshort-name-mode = "disabled"\n'
        )
        (s / "policy.json").write_text(json.dumps(_POLICY))
        (s / "auth.json").write_text('{"auths": {}}')
        if isolate_mounts is None:
            isolate_mounts = can_isolate_mounts()
        self.isolate_mounts = isolate_mounts

    def close(self) -> None:
        remove_tree(self.state)

    def __enter__(self) -> Podman:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def run(self, *args: str, timeout_s: float | None = None) -> str:
        """Run ``podman [private global flags] ARGS``; return stdout (CommandFailed on error)."""
        s = self.state
        argv = [
            self.podman,
            "--root",
            str(s / "graph"),
            "--runroot",
            str(s / "run"),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--tmpdir",
            str(s / "libpod-tmp"),
            "--network-config-dir",
            str(s / "networks"),
            "--volumepath",
            str(s / "volumes"),
            *args,
        ]
        if self.isolate_mounts:
            # /var/lib: blob-info cache; /run: netavark's fixed /run/containers/networks
            argv = private_mounts_argv([(s / "varlib", "/var/lib"), (s / "hostrun", "/run")], argv)
        env = child_env(
            {
                "CONTAINERS_STORAGE_CONF": str(s / "storage.conf"),
                "CONTAINERS_CONF": str(s / "containers.conf"),
                "CONTAINERS_REGISTRIES_CONF": str(s / "registries.conf"),
                "REGISTRY_AUTH_FILE": str(s / "auth.json"),
                "TMPDIR": str(s / "tmp"),
                "HOME": str(s / "home"),
                "XDG_RUNTIME_DIR": str(s / "xdg-run"),
                "XDG_CONFIG_HOME": str(s / "home" / ".config"),
                "XDG_DATA_HOME": str(s / "home" / ".local" / "share"),
            },
            unset=["CONTAINER_HOST", "CONTAINER_CONNECTION", "DOCKER_HOST", "DOCKER_CONFIG"],
        )
        return run(argv, env=env, timeout_s=timeout_s or self.timeout_s).stdout

    def pull(self, ref: str, *, arch: str | None = None, variant: str | None = None) -> str:
        """``podman pull --tls-verify=false REF``; return the pulled digest.

        That is ``podman image inspect``'s ``.Digest``: the digest of what REF
        names, i.e. the index / manifest list for a multi-platform ref (the chosen
        platform's manifest digest is in ``RepoDigests`` too).
        """
        _check_ref(ref)
        args = [
            "pull",
            "--quiet",
            "--tls-verify=false",
            "--signature-policy",
            str(self.state / "policy.json"),
        ]
        if arch:
            args += ["--arch", arch]
        if variant:
            args += ["--variant", variant]
        image_id = self.run(*args, ref).strip().splitlines()[-1]
        if not re.fullmatch(r"[0-9a-f]{64}", image_id):
            raise RuntimeError(f"unexpected podman pull output: {image_id!r}")
        digest: str = self.image_inspect(image_id)["Digest"]
        return digest

    def image_inspect(self, ref: str) -> dict[str, Any]:
        """``podman image inspect REF`` (the single object)."""
        doc: list[dict[str, Any]] = json.loads(self.run("image", "inspect", ref))
        return doc[0]

    def rmi(self, ref: str) -> None:
        self.run("rmi", "-f", ref)


def pull(ref: str, *, arch: str | None = None) -> str:
    """One-shot ``Podman().pull`` with a throwaway private store."""
    with Podman() as p:
        return p.pull(ref, arch=arch)
