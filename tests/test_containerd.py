"""containerd nodes: a real containerd (its own root, state and socket in a temp dir) pulls
through a sidecar with the hosts.toml files ``regsidecar install --containerd`` writes.

- ``localhost:PORT/app:v1``: the sidecar's own name (certs.d/localhost:PORT/hosts.toml);
- a mirror: ``127.0.0.2:5999/app:v1`` with ``--mirror 127.0.0.2:5999``: containerd asks the
  sidecar (``?ns=127.0.0.2:5999``) and never the registry itself (a loopback address where
  nothing listens: were the mirror skipped, the pull would fail, and nothing leaves the host);
- a multi-arch index: ctr takes this host's platform.
``doctor``'s containerd row passes against that containerd and hosts dir, and says what to do
when the hosts dir does not name the sidecar.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require, s3_args
from tests.ocistore import Store
from tests.rig.moto import MotoServer
from tests.s3tree import BucketWriter
from tests.sidecar import Sidecar

pytestmark = pytest.mark.rig


class Containerd:
    """``containerd --config C`` with everything under a short temp dir; stopped by PID."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))
        self.socket = str(self.dir / "c.sock")
        config = self.dir / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.dir / "root"}"\n'
            f'state = "{self.dir / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
        )
        self.log = open(self.dir / "containerd.log", "wb")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            ["containerd", "--config", str(config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.path.exists(self.socket) and self.ctr("version").returncode == 0:
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("containerd did not start")

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "-a", self.socket, "-n", "test", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def pulled_digest(self, ref: str) -> str:
        out = self.ctr("images", "ls").stdout.splitlines()
        for line in out[1:]:
            parts = line.split()
            if parts and parts[0] == ref:
                return next(p for p in parts if p.startswith("sha256:"))
        raise AssertionError(f"{ref} not in ctr images ls:\n" + "\n".join(out))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        # Snapshots may hold mounts: unmount anything left under the dir before removing it.
        mounts = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if line.split()[1].startswith(str(self.dir))
        ]
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", m], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Containerd, Sidecar, dict[str, str], Path]]:
    require("containerd", "ctr", "moto_server")
    if os.geteuid() != 0:
        pytest.skip("containerd needs root")
    base = tmp_path_factory.mktemp("ctd")
    with MotoServer() as moto:
        moto.create_bucket("node")
        store = Store(BucketWriter(moto.client(), "node"))
        digests = {"app": store.image("app", "v1", "through the sidecar")}
        children = [(store.image("multi", None, f"multi {a}", a), a) for a in ("amd64", "arm64")]
        digests["multi"] = store.index("multi", "v1", children)
        with Sidecar(s3_args(moto.endpoint_url, "node"), data_dir=base / "sc") as sc:
            root = base / "root"
            r = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "regsidecar",
                    "install",
                    "--containerd",
                    "--root",
                    str(root),
                    "--sidecar",
                    f"localhost:{sc.port}",
                    "--mirror",
                    "127.0.0.2:5999",
                    "--json",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert r.returncode == 0, r.stderr
            report = json.loads(r.stdout)
            assert [f["action"] for f in report["files"]] == ["written", "written"]
            ctd = Containerd()
            try:
                yield ctd, sc, digests, root / "etc/containerd/certs.d"
            finally:
                ctd.stop()


def test_containerd_pulls_by_the_sidecars_name_through_a_mirror_and_a_multi_arch_index(
    node: tuple[Containerd, Sidecar, dict[str, str], Path],
) -> None:
    ctd, sc, digests, hosts = node
    for ref in (
        f"localhost:{sc.port}/app:v1",
        "127.0.0.2:5999/app:v1",
        f"localhost:{sc.port}/multi:v1",
    ):
        r = ctd.ctr("images", "pull", "--hosts-dir", str(hosts), ref)
        assert r.returncode == 0, (ref, r.stdout[-2000:], r.stderr[-2000:])
    assert ctd.pulled_digest(f"localhost:{sc.port}/app:v1") == digests["app"]
    assert ctd.pulled_digest("127.0.0.2:5999/app:v1") == digests["app"]
    assert ctd.pulled_digest(f"localhost:{sc.port}/multi:v1") == digests["multi"]
    # The mirror's requests reached the sidecar, naming the registry they were for.
    mirrored = [
        e
        for e in sc.logs()
        if e.get("msg") == "request" and e.get("path", "").startswith("/v2/app/manifests/")
    ]
    assert mirrored, "no manifest request for app reached the sidecar"


def test_doctor_has_a_containerd_row(
    node: tuple[Containerd, Sidecar, dict[str, str], Path], tmp_path: Path
) -> None:
    ctd, sc, _, hosts = node

    def row(hosts_dir: Path) -> dict[str, str]:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "regsidecar",
                "doctor",
                "--json",
                "--skip-docker",
                "--listen",
                sc.host,
                "--data-dir",
                str(tmp_path / "d"),
                "--containerd-socket",
                ctd.socket,
                "--containerd-hosts-dir",
                str(hosts_dir),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"},
        )
        doc = json.loads(r.stdout)
        (found,) = [c for c in doc["checks"] if c["name"] == "containerd"]
        return found

    good = row(hosts)
    assert good["status"] == "pass", good
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = row(empty)
    assert bad["status"] == "warn", bad
    assert "regsidecar install --containerd" in bad["fix"]
