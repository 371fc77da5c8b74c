"""`regsidecar prune` as a real process against a private real dockerd and a cache directory.

Every test builds the same scene in the daemon (tiny images from tests/rig/containers.py,
loaded offline): two running containers, one on a tagged image and one on an image a rebuild
left dangling; a stopped and a created container; a dangling image nothing uses; a tagged old
image and a tagged recent one nothing uses. Afterwards the daemon is emptied again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.cachefiles import write_blobs
from tests.conftest import require
from tests.rig.containers import TinyImage, load
from tests.rig.dockerd import Dockerd
from tests.rig.ports import free_port
from tests.rig.proc import child_env

pytestmark = pytest.mark.rig

DAY = 86400.0
NO_NET = ("--network", "none")  # the rig daemon has no bridge
KiB = 1024


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    require("dockerd")
    with Dockerd() as d:
        yield d


@dataclass
class Scene:
    """IDs of what the test put in the daemon, by role."""

    dockerd: Dockerd
    client: Any  # docker.DockerClient on the private daemon
    containers: dict[str, str]  # name -> container ID
    images: dict[str, str]  # role -> image ID

    def state(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        """Every container (ID -> status) and image (ID -> sorted tags), from the SDK."""
        containers = {c.id: c.status for c in self.client.containers.list(all=True)}
        images = {i.id: sorted(i.tags) for i in self.client.images.list(all=True)}
        return containers, images


def _wipe(d: Dockerd) -> None:
    """Remove every container and image of the private daemon (rm -f: the sleeper ignores
    SIGTERM as PID 1, SIGKILL ends it at once)."""
    ids = d.docker("ps", "-aq").split()
    if ids:
        d.docker("rm", "-f", *ids)
    ids = sorted(set(d.docker("images", "-aq", "--no-trunc").split()))
    if ids:
        d.docker("rmi", "-f", *ids)


@pytest.fixture
def scene(dockerd: Dockerd, tmp_path: Path) -> Iterator[Scene]:
    now = time.time()
    old, recent = now - 400 * DAY, now - 2 * DAY
    run_old = TinyImage("prune/run:1", "sleep", old, "run-old")
    run_new = TinyImage("prune/run:1", "sleep", old, "run-new")
    app_old = TinyImage("prune/app:1", "exit", old, "app-old")
    app_new = TinyImage("prune/app:1", "exit", recent, "app-new")
    exit_old = TinyImage("prune/exit:1", "exit", old, "exit-old")
    client = docker.DockerClient(base_url=dockerd.host_arg, version="auto")
    try:
        load(dockerd, [run_old], tmp_path)
        dockerd.docker("run", "-d", *NO_NET, "--name", "runs-dangling", "prune/run:1")
        # A rebuild takes the tag: run_old is now dangling, and still in use.
        load(dockerd, [run_new, app_old, app_new, exit_old], tmp_path)
        dockerd.docker("run", "-d", *NO_NET, "--name", "runs-tagged", "prune/run:1")
        dockerd.docker("run", *NO_NET, "--name", "stopped", "prune/exit:1")  # exits at once
        dockerd.docker("create", *NO_NET, "--name", "created", "prune/exit:1")
        containers = {c.name: c.id for c in client.containers.list(all=True)}
        yield Scene(
            dockerd,
            client,
            containers,
            {
                "run-dangling": run_old.id,
                "run-tagged": run_new.id,
                "dangling": app_old.id,
                "recent": app_new.id,
                "old": exit_old.id,
            },
        )
    finally:
        _wipe(dockerd)
        client.close()


def _prune(
    data_dir: Path,
    *args: str,
    docker_host: str | None,
    env: dict[str, str] | None = None,
) -> tuple[int, Any, str]:
    """Run ``regsidecar prune --json ...``; exit status, the parsed report, stderr."""
    return _run(data_dir, "--json", *args, docker_host=docker_host, env=env, parse=True)


def _run(
    data_dir: Path,
    *args: str,
    docker_host: str | None,
    env: dict[str, str] | None = None,
    parse: bool = False,
) -> tuple[int, Any, str]:
    base = child_env(unset=["DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY"])
    base = {k: v for k, v in base.items() if not k.startswith("REGSIDECAR_")}
    base["DOCKER_CONFIG"] = str(data_dir / "docker-cli")  # no ~/.docker contexts
    if docker_host:
        base["DOCKER_HOST"] = docker_host
    base.update(env or {})
    argv = [sys.executable, "-m", "regsidecar", "prune", *args, "--data-dir", str(data_dir)]
    # a port nobody listens on: the cache is worked on directly, not through some sidecar
    argv += ["--listen", f"127.0.0.1:{free_port()}"]
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=base)
    out: Any = cp.stdout
    if parse:
        assert cp.stdout.count("\n") == 1, f"one JSON line expected:\n{cp.stdout}\n{cp.stderr}"
        out = json.loads(cp.stdout)
    return cp.returncode, out, cp.stderr


def _ids(rows: list[dict[str, Any]]) -> set[str]:
    return {r["id"] for r in rows}


def test_dry_run_lists_the_stopped_containers_and_the_dangling_image_and_removes_nothing(
    scene: Scene, tmp_path: Path
) -> None:
    before = scene.state()
    rc, report, err = _prune(tmp_path, "--dry-run", docker_host=scene.dockerd.host_arg)
    assert (rc, err) == (0, "")
    d = report["docker"]
    assert d["dry_run"] and d["estimate"]
    assert _ids(d["containers"]) == {scene.containers["stopped"], scene.containers["created"]}
    assert _ids(d["images"]) == {scene.images["dangling"]}
    # the dangling image the running container uses is named as kept, not listed for removal
    assert [(k["id"], k["reason"]) for k in d["kept"]] == [
        (scene.images["run-dangling"], "used by container runs-dangling")
    ]
    assert d["bytes_reclaimed"] >= 64 * KiB  # the dangling image's own layer
    assert scene.state() == before

    # The human report names the same objects, by short ID.
    rc, text, err = _run(tmp_path, "--dry-run", docker_host=scene.dockerd.host_arg)
    assert (rc, err) == (0, "")
    assert "would remove 2 containers, 1 image" in text
    for oid in (scene.containers["stopped"], scene.images["dangling"].split(":")[1]):
        assert oid[:12] in text
    assert "used by container runs-dangling" in text
    assert scene.state() == before


def test_prune_removes_exactly_what_the_dry_run_listed_and_keeps_what_is_in_use(
    scene: Scene, tmp_path: Path
) -> None:
    host = scene.dockerd.host_arg
    _, dry, _ = _prune(tmp_path, "--dry-run", docker_host=host)
    rc, report, err = _prune(tmp_path, docker_host=host)
    assert (rc, err) == (0, "")
    d = report["docker"]
    assert not d["dry_run"] and not d["estimate"] and d["failed"] == []
    assert _ids(d["containers"]) == _ids(dry["docker"]["containers"])
    assert _ids(d["images"]) == _ids(dry["docker"]["images"]) == {scene.images["dangling"]}

    containers, images = scene.state()
    assert containers == {
        scene.containers["runs-dangling"]: "running",
        scene.containers["runs-tagged"]: "running",
    }
    assert images == {
        scene.images["run-dangling"]: [],  # dangling, but a running container uses it
        scene.images["run-tagged"]: ["prune/run:1"],
        scene.images["recent"]: ["prune/app:1"],
        scene.images["old"]: ["prune/exit:1"],  # tagged: only --unused-days takes it
    }
    # measured by docker: at least the dangling image's 64 KiB filler left the disk
    assert d["bytes_reclaimed"] >= 64 * KiB
    assert report["bytes_reclaimed"] == d["bytes_reclaimed"] + report["cache"]["bytes_freed"]

    # Nothing is left to prune.
    rc, again, _ = _prune(tmp_path, docker_host=host)
    assert rc == 0
    assert again["docker"]["containers"] == again["docker"]["images"] == []
    assert again["docker"]["bytes_reclaimed"] == 0


@pytest.mark.parametrize(
    ("days", "also_removed"),
    [("30", {"old"}), ("1", {"old", "recent"}), ("0", {"old", "recent"})],
)
def test_unused_days_takes_old_unused_tagged_images_never_used_ones(
    scene: Scene, tmp_path: Path, days: str, also_removed: set[str]
) -> None:
    """--unused-days N reads the image's Created time, as docker's until filter does; an
    image in use stays however old it is (prune/run:1 is 400 days old). --docker-host wins
    over DOCKER_HOST."""
    args = ("--unused-days", days, "--docker-host", scene.dockerd.host_arg)
    _, dry, _ = _prune(tmp_path, "--dry-run", *args, docker_host="unix:///nonexistent.sock")
    rc, report, err = _prune(tmp_path, *args, docker_host="unix:///nonexistent.sock")
    assert (rc, err) == (0, "")
    d = report["docker"]
    expected = {scene.images[role] for role in {"dangling", *also_removed}}
    assert _ids(d["images"]) == _ids(dry["docker"]["images"]) == expected
    assert {k["id"]: k["reason"] for k in d["kept"]} == {
        scene.images["run-dangling"]: "used by container runs-dangling",
        scene.images["run-tagged"]: "used by container runs-tagged",
    }
    _, images = scene.state()
    assert set(images) == set(scene.images.values()) - expected
    assert d["bytes_reclaimed"] >= len(expected) * 64 * KiB


def test_unreachable_daemon_is_reported_and_the_cache_is_still_trimmed(tmp_path: Path) -> None:
    rc, report, err = _prune(tmp_path, docker_host=f"unix://{tmp_path}/no-docker.sock")
    assert rc == 1
    assert len(err.splitlines()) == 1 and "docker skipped" in err, err
    assert "cannot reach the docker daemon" in report["docker"]["skipped"]
    assert report["cache"]["where"] == "local" and "bytes_freed" in report["cache"]

    # --no-docker: the same host is fine
    rc, report, err = _prune(tmp_path, "--no-docker", docker_host=None)
    assert (rc, err) == (0, "")
    assert report["docker"] == {"skipped": "--no-docker"}


@pytest.mark.parametrize(
    "total_kib",
    [
        pytest.param(950, id="over-low-watermark"),
        # Over max_bytes: opening the directory must not evict already (a dry run stays dry).
        pytest.param(1200, id="over-max"),
    ],
)
def test_cache_is_trimmed_to_its_low_watermark_and_a_dry_run_removes_nothing(
    tmp_path: Path, total_kib: int
) -> None:
    """max 1000 KiB, low watermark 0.9: the oldest 50 KiB blobs go until <= 900 KiB."""
    blobs = write_blobs(tmp_path, [50] * (total_kib // 50))
    env = {"REGSIDECAR_CACHE_MIN_FREE_BYTES": "0"}
    args = ("--no-docker", "--cache-max-bytes", "1000KiB")
    n_gone = (total_kib - 900 + 49) // 50
    gone = {f"sha256:{p.name}" for p in blobs[:n_gone]}

    rc, dry, err = _prune(tmp_path, "--dry-run", *args, docker_host=None, env=env)
    assert (rc, err) == (0, "")
    assert all(p.exists() for p in blobs), "a dry run removed cache files"
    assert {r["digest"] for r in dry["cache"]["removed"]} == gone
    assert dry["cache"]["bytes_freed"] == dry["bytes_reclaimed"] == n_gone * 50 * KiB

    rc, report, err = _prune(tmp_path, *args, docker_host=None, env=env)
    assert (rc, err) == (0, "")
    assert {r["digest"] for r in report["cache"]["removed"]} == gone
    assert report["cache"]["bytes_freed"] == report["bytes_reclaimed"] == n_gone * 50 * KiB
    assert [p for p in blobs if not p.exists()] == blobs[:n_gone]
    assert report["cache"]["bytes"] == (len(blobs) - n_gone) * 50 * KiB <= 900 * KiB


def test_help_names_every_flag() -> None:
    cp = subprocess.run(
        [sys.executable, "-m", "regsidecar", "prune", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for flag in (
        "--dry-run",
        "--unused-days",
        "--docker-host",
        "--no-cache",
        "--no-docker",
        "--json",
        "--data-dir",
        "--cache-max-bytes",
    ):
        assert flag in cp.stdout
