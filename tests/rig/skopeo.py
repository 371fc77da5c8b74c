"""skopeo as a real client: push OCI layouts, copy images out, inspect raw manifests.

Every call runs with private state in a temp dir: a permissive policy.json
(``--policy``), an empty registries.d, a private registries.conf
(CONTAINERS_REGISTRIES_CONF), no credentials, TMPDIR/``--tmpdir``, HOME and
XDG_* dirs. As root, containers/image writes its blob-info cache to the fixed
path /var/lib/containers/cache (no flag/env moves it), so root runs happen in a
private mount namespace (``unshare --mount``) with the temp dir bind-mounted
over /var/lib: nothing lands on the host and no stale cache leaks between runs
(so paths handed to skopeo must not live under /var/lib).

Debian's skopeo 1.9.3 (and podman 4.3.1, on the same containers/image) is built with sigstore
disabled: ``--sign-by-sigstore-private-key`` and a ``sigstoreSigned`` policy both fail with
"Debian-local change: sigstore disabled" (checked 2026-12-07, with a signature in the exact
format containers/image writes). GPG simple signing is what it still has.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from .ports import assert_loopback
from .proc import (
    CommandFailed,
    can_isolate_mounts,
    child_env,
    private_mounts_argv,
    run_bytes,
    which,
)

Format = Literal["oci", "v2s2"]

_POLICY = {"default": [{"type": "insecureAcceptAnything"}]}
_REGISTRIES_CONF = 'unqualified-search-registries = []\nshort-name-mode = "disabled"\n'


def _check_host(host: str) -> None:
    assert_loopback(host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0])


class Skopeo:
    """A skopeo runner with private state (context manager; ``close()`` removes it)."""

    def __init__(self, *, isolate_mounts: bool | None = None, timeout_s: float = 300.0) -> None:
        self.skopeo = which("skopeo")
        self.timeout_s = timeout_s
        self.state = Path(tempfile.mkdtemp(prefix="rig-skopeo-"))
        for sub in ("tmp", "home", "data", "config", "run", "varlib", "registries.d"):
            (self.state / sub).mkdir()
        (self.state / "run").chmod(0o700)
        self.policy = self.state / "policy.json"
        self.policy.write_text(json.dumps(_POLICY))
        self.registries_conf = self.state / "registries.conf"
        self.registries_conf.write_text(_REGISTRIES_CONF)
        self.auth_file = self.state / "auth.json"
        self.auth_file.write_text('{"auths": {}}')
        if isolate_mounts is None:
            isolate_mounts = can_isolate_mounts()
        self.isolate_mounts = isolate_mounts

    def close(self) -> None:
        shutil.rmtree(self.state, ignore_errors=True)

    def __enter__(self) -> Skopeo:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------
    def run(self, *args: str, timeout_s: float | None = None) -> str:
        """Run ``skopeo [global flags] ARGS``; return stdout (CommandFailed on error)."""
        return self.run_bytes(*args, timeout_s=timeout_s).decode("utf-8", "replace")

    def run_bytes(self, *args: str, timeout_s: float | None = None) -> bytes:
        """Like ``run``, stdout as bytes."""
        argv = [
            self.skopeo,
            "--policy",
            str(self.policy),
            "--registries.d",
            str(self.state / "registries.d"),
            "--tmpdir",
            str(self.state / "tmp"),
            *args,
        ]
        if self.isolate_mounts:
            argv = private_mounts_argv([(self.state / "varlib", "/var/lib")], argv)
        env = child_env(
            {
                "TMPDIR": str(self.state / "tmp"),
                "HOME": str(self.state / "home"),
                "XDG_DATA_HOME": str(self.state / "data"),
                "XDG_CONFIG_HOME": str(self.state / "config"),
                "XDG_RUNTIME_DIR": str(self.state / "run"),
                "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
                "REGISTRY_AUTH_FILE": str(self.auth_file),
            },
            unset=["DOCKER_CONFIG", "CONTAINERS_CONF", "CONTAINERS_STORAGE_CONF"],
        )
        return run_bytes(argv, env=env, timeout_s=timeout_s or self.timeout_s).stdout

    def push(
        self,
        layout_dir: str | Path,
        tag: str,
        dest_host: str,
        repo_tag: str,
        fmt: Format | None = "oci",
        all: bool = True,
    ) -> str:
        """``skopeo copy [--all] [--format F] oci:DIR:TAG docker://HOST/REPO:TAG``.

        Returns the digest of the top manifest as pushed (from ``--digestfile``);
        with ``fmt="v2s2"`` and ``all`` an OCI index becomes a Docker manifest
        list and its OCI manifests schema2, so the digests change.
        """
        _check_host(dest_host)
        digestfile = self.state / "tmp" / "digest"
        digestfile.unlink(missing_ok=True)
        args = [
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-no-creds",
            "--digestfile",
            str(digestfile),
        ]
        if all:
            args.append("--all")
        if fmt is not None:
            args += ["--format", fmt]
        args += [f"oci:{layout_dir}:{tag}", f"docker://{dest_host}/{repo_tag}"]
        self.run(*args)
        return digestfile.read_text().strip()

    def copy_to_dir(
        self,
        src_host: str,
        repo_ref: str,
        out_dir: str | Path,
        *,
        arch: str | None = None,
        os_: str | None = None,
        variant: str | None = None,
        all: bool = False,
    ) -> str:
        """``skopeo copy docker://HOST/REPO_REF dir:OUT``; return the sha256 digest of
        the manifest written (for an index without ``all``: the chosen platform's
        manifest; ``arch``/``os_``/``variant`` override the platform choice).
        """
        _check_host(src_host)
        pre: list[str] = []
        if arch:
            pre += ["--override-arch", arch]
        if os_:
            pre += ["--override-os", os_]
        if variant:
            pre += ["--override-variant", variant]
        args = [*pre, "copy", "--quiet", "--src-tls-verify=false", "--src-no-creds"]
        if all:
            args.append("--all")
        args += [f"docker://{src_host}/{repo_ref}", f"dir:{out_dir}"]
        self.run(*args)
        return (
            "sha256:" + hashlib.sha256((Path(out_dir) / "manifest.json").read_bytes()).hexdigest()
        )

    def inspect_raw(self, host: str, ref: str, *, config: bool = False) -> bytes:
        """Raw manifest bytes (or, with ``config``, raw config) of ``docker://HOST/REF``."""
        _check_host(host)
        args = ["inspect", "--raw", "--tls-verify=false", "--no-creds"]
        if config:
            args.append("--config")
        return self.run_bytes(*args, f"docker://{host}/{ref}")


# -- one-shot module-level helpers (fresh private state per call) -------------
def push(
    layout_dir: str | Path,
    tag: str,
    dest_host: str,
    repo_tag: str,
    fmt: Format | None = "oci",
    all: bool = True,
) -> str:
    """See ``Skopeo.push``."""
    with Skopeo() as s:
        return s.push(layout_dir, tag, dest_host, repo_tag, fmt=fmt, all=all)


def copy_to_dir(
    src_host: str,
    repo_ref: str,
    out_dir: str | Path,
    *,
    arch: str | None = None,
    os_: str | None = None,
    variant: str | None = None,
    all: bool = False,
) -> str:
    """See ``Skopeo.copy_to_dir``."""
    with Skopeo() as s:
        return s.copy_to_dir(
            src_host, repo_ref, out_dir, arch=arch, os_=os_, variant=variant, all=all
        )


def inspect_raw(host: str, ref: str, *, config: bool = False) -> bytes:
    """See ``Skopeo.inspect_raw``."""
    with Skopeo() as s:
        return s.inspect_raw(host, ref, config=config)


def inspect_json(host: str, ref: str) -> dict[str, Any]:
    """``inspect_raw`` parsed as JSON."""
    doc: dict[str, Any] = json.loads(inspect_raw(host, ref))
    return doc


def digest_of(raw: bytes) -> str:
    """``sha256:<hex>`` of some bytes (e.g. a raw manifest)."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


__all__: Sequence[str] = (
    "CommandFailed",
    "Format",
    "Skopeo",
    "copy_to_dir",
    "digest_of",
    "inspect_json",
    "inspect_raw",
    "push",
)
