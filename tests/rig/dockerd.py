"""A private Docker daemon (docker.io's dockerd 20.10) on its own unix socket."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from .ports import tail_file, wait_until
from .proc import (
    CommandFailed,
    LoggedProcess,
    can_isolate_mounts,
    child_env,
    private_mounts_argv,
    remove_tree,
    run,
    stop_pid,
    which,
)

_DIGEST_LINE = re.compile(r"^Digest: (sha256:[0-9a-f]{64})\s*$", re.M)
_DOCKER_ENV_DROP = [
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_CONFIG",
    "AWS_CA_BUNDLE",
]


def docker_cli() -> str:
    """The docker CLI to use: $RIG_DOCKER_CLI, else docker.io's /usr/bin/docker, else PATH."""
    env = os.environ.get("RIG_DOCKER_CLI")
    if env:
        return env
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    return which("docker")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 2.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class Dockerd:
    """``dockerd`` with vfs storage, no iptables/bridge, everything in a temp dir.

    Its own socket (``.sock``), data root, exec root (its managed containerd
    lives there too), pidfile and ``--config-file`` (so /etc/docker/daemon.json
    is not read; it also moves the 20.10 trust key off /etc/docker/key.json).
    Loopback registries are insecure (plain http) by default in dockerd.
    ``daemon_config`` is merged into daemon.json (e.g. ``registry-mirrors``).

    With ``isolate_mounts`` (default when root) it runs in a private mount
    namespace with temp dirs bound over /run and /opt: it then never sees (or
    uses) a system containerd at /run/containerd, its managed containerd does
    not create /opt/containerd, /run/docker/plugins stays private, and the
    mounts it makes (data-root bind, EXECROOT/netns/default) die with it.
    """

    def __init__(
        self,
        *,
        daemon_config: dict[str, Any] | None = None,
        log_level: str = "info",
        isolate_mounts: bool | None = None,
    ) -> None:
        self.dockerd = which("dockerd")
        self.cli = docker_cli()
        # short path: unix socket paths (containerd's too) must fit in 108 bytes
        base = None if len(tempfile.gettempdir()) <= 40 else "/tmp"
        self.workdir = Path(tempfile.mkdtemp(prefix="rig-dockerd-", dir=base))
        self.data_root = self.workdir / "data"
        self.exec_root = self.workdir / "exec"
        self.sock = self.workdir / "docker.sock"
        self.pidfile = self.workdir / "docker.pid"
        self.config_file = self.workdir / "daemon.json"
        self.cli_config = self.workdir / "cli"
        self.log_path = self.workdir / "dockerd.log"
        self.log_level = log_level
        self.isolate_mounts = can_isolate_mounts() if isolate_mounts is None else isolate_mounts
        self.daemon_config: dict[str, Any] = {
            "deprecated-key-path": str(self.workdir / "key.json"),
            **(daemon_config or {}),
        }
        self._proc: LoggedProcess | None = None
        self.startup_s: float | None = None

    @property
    def host_arg(self) -> str:
        """The ``-H`` value: ``unix:///.../docker.sock``."""
        return f"unix://{self.sock}"

    # -- lifecycle ---------------------------------------------------------
    def start(self, deadline_s: float = 60.0) -> Dockerd:
        t0 = time.monotonic()
        for d in (self.data_root, self.exec_root, self.cli_config):
            d.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(json.dumps(self.daemon_config, indent=2))
        argv = [
            self.dockerd,
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            "--data-root",
            str(self.data_root),
            "--exec-root",
            str(self.exec_root),
            "-H",
            self.host_arg,
            "--pidfile",
            str(self.pidfile),
            "--config-file",
            str(self.config_file),
            "--log-level",
            self.log_level,
        ]
        if self.isolate_mounts:
            (self.workdir / "host-run").mkdir(exist_ok=True)
            (self.workdir / "host-opt").mkdir(exist_ok=True)
            argv = private_mounts_argv(
                [(self.workdir / "host-run", "/run"), (self.workdir / "host-opt", "/opt")], argv
            )
        self._proc = LoggedProcess(
            argv, self.log_path, env=child_env(unset=_DOCKER_ENV_DROP), cwd=self.workdir
        )
        try:
            wait_until(self.ping, deadline_s, "dockerd /_ping", self._proc.proc, self.log_path)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        return self

    def ping(self) -> bool:
        """True if the daemon answers ``GET /_ping`` with 200 on its socket."""
        if not self.sock.exists():
            return False
        conn = _UnixHTTPConnection(str(self.sock))
        try:
            conn.request("GET", "/_ping")
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    def _containerd_pid(self) -> int | None:
        try:
            pid = int((self.exec_root / "containerd" / "containerd.pid").read_text().strip())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        # only if it really is *our* managed containerd (pid may be recycled)
        return pid if str(self.exec_root).encode() in cmd else None

    def stop(self) -> None:
        """Stop dockerd by PID (then its containerd if it outlived it), unmount, delete."""
        try:
            if self._proc is not None:
                self._proc.stop(timeout_s=30.0)
                self._proc = None
            pid = self._containerd_pid()
            if pid is not None:
                stop_pid(pid)
        finally:
            # e.g. EXECROOT/netns/default, the data-root self bind mount
            remove_tree(self.workdir)

    def __enter__(self) -> Dockerd:
        return self.start()

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if et is not None:
            sys.stderr.write(f"--- dockerd log tail ({self.log_path}) ---\n{self.log_tail()}\n")
        self.stop()

    def log_tail(self) -> str:
        return tail_file(self.log_path)

    # -- CLI ---------------------------------------------------------------
    def docker(self, *args: str, timeout_s: float = 300.0) -> str:
        """Run ``docker -H unix://SOCK ARGS`` with a private CLI config; return stdout."""
        env = child_env({"DOCKER_CONFIG": str(self.cli_config)}, unset=_DOCKER_ENV_DROP)
        return run([self.cli, "-H", self.host_arg, *args], env=env, timeout_s=timeout_s).stdout

    def pull(self, ref: str, timeout_s: float = 300.0) -> str:
        """``docker pull REF``; return the digest from its ``Digest:`` line.

        For a multi-platform image this is the index / manifest-list digest.
        """
        out = self.docker("pull", ref, timeout_s=timeout_s)
        m = _DIGEST_LINE.search(out)
        if m is None:
            raise CommandFailed([self.cli, "pull", ref], 0, out, "[rig] no 'Digest:' line")
        return m.group(1)

    def image_inspect(self, ref: str) -> dict[str, Any]:
        """``docker image inspect REF`` (the single object)."""
        doc: list[dict[str, Any]] = json.loads(self.docker("image", "inspect", ref))
        return doc[0]

    def rmi(self, ref: str, force: bool = True) -> None:
        """``docker rmi [-f] REF``."""
        self.docker("rmi", *(["-f"] if force else []), ref)

    def images(self) -> list[dict[str, Any]]:
        """``docker images --format json``-ish: one dict per image (ID, Repository, Tag, Digest)."""
        out = self.docker("images", "--digests", "--no-trunc", "--format", "{{json .}}")
        return [json.loads(line) for line in out.splitlines() if line.strip()]


__all__ = ["Dockerd", "docker_cli"]
