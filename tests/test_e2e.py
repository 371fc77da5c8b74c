"""End to end: a stock registry:2 pushes, regsidecar serves, real clients pull.

distribution 2.8 (Debian's ``docker-registry``) writes the store, S3 on moto or a directory;
``skopeo copy`` pushes OCI layouts built here (a 2-platform OCI index, a Docker schema 2 image,
a Docker manifest list); the sidecar runs as a real process on the same store; a real dockerd,
skopeo and podman pull through it. Pulled digests must equal pushed digests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require
from tests.rig import skopeo
from tests.rig.dockerd import Dockerd
from tests.rig.images import MiB, OCIImage, build_oci_layout
from tests.rig.moto import MotoServer
from tests.rig.podman import Podman
from tests.rig.registry import Distribution
from tests.sidecar import Sidecar

TAG = "v1"
PLATFORMS = [("linux", "amd64"), ("linux", "arm64")]


@dataclass
class Pushed:
    """What distribution stored: repository -> top digest (and per-platform digests)."""

    sidecar: Sidecar
    oci_index: str
    oci_platforms: dict[str, str]
    docker_single: str
    docker_list: str
    docker_list_platforms: dict[str, str]


def _push_all(dist: Distribution, layout: Path, seed: str) -> tuple[dict[str, str], OCIImage]:
    multi = build_oci_layout(
        layout, "multi", PLATFORMS, [2 * MiB, 300 * 1024], seed=f"{seed}-multi"
    )
    build_oci_layout(layout, "single", [("linux", "amd64")], [1 * MiB], seed=f"{seed}-single")
    build_oci_layout(layout, "dlist", PLATFORMS, [512 * 1024], seed=f"{seed}-dlist")
    digests = {
        "e2e/oci-index": skopeo.push(layout, "multi", dist.host, f"e2e/oci-index:{TAG}", fmt="oci"),
        "e2e/docker": skopeo.push(layout, "single", dist.host, f"e2e/docker:{TAG}", fmt="v2s2"),
        "e2e/docker-list": skopeo.push(
            layout, "dlist", dist.host, f"e2e/docker-list:{TAG}", fmt="v2s2"
        ),
    }
    assert digests["e2e/oci-index"] == multi.digest, "an OCI push keeps the digest"
    return digests, multi


def _platform_digests(host: str, repo: str) -> dict[str, str]:
    """Per-platform manifest digests, read from the registry that stored them."""
    index = json.loads(skopeo.inspect_raw(host, f"{repo}:{TAG}"))
    return {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}


def _deploy(
    dist: Distribution, sidecar_args: list[str], layout: Path, seed: str
) -> Iterator[Pushed]:
    with dist:
        digests, multi = _push_all(dist, layout, seed)
        dlist = _platform_digests(dist.host, "e2e/docker-list")
        oci = _platform_digests(dist.host, "e2e/oci-index")
    assert oci == {p.platform.split("/")[1]: p.manifest_digest for p in multi.platforms}
    # The registry is stopped: from here on only the store and the sidecar exist.
    with Sidecar(sidecar_args) as sc:
        yield Pushed(
            sc,
            digests["e2e/oci-index"],
            oci,
            digests["e2e/docker"],
            digests["e2e/docker-list"],
            dlist,
        )


@pytest.fixture(scope="module", params=["s3", "filesystem"])
def pushed(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pushed]:
    require("docker-registry", "skopeo")
    layout = tmp_path_factory.mktemp(f"layout-{request.param}")
    if request.param == "s3":
        moto: MotoServer = request.getfixturevalue("moto")
        bucket = "e2e-registry"
        moto.create_bucket(bucket)
        dist = Distribution(moto=moto, bucket=bucket, s3_rootdirectory="/team/registry")
        args = [
            "--storage",
            f"s3://{bucket}/team/registry",
            "--s3-endpoint-url",
            moto.endpoint_url,
            "--s3-path-style",
            "--s3-region",
            "us-east-1",
        ]
    else:
        root = tmp_path_factory.mktemp("fs-store")
        dist = Distribution(root_dir=root)
        args = ["--storage", str(root)]
    yield from _deploy(dist, args, layout, seed=request.param)


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    require("dockerd")
    with Dockerd() as d:
        yield d


def test_dockerd_pulls_every_kind_of_image(pushed: Pushed, dockerd: Dockerd) -> None:
    """docker pull localhost:PORT/... gets exactly the digests distribution stored."""
    port = pushed.sidecar.port
    assert dockerd.pull(f"localhost:{port}/e2e/oci-index:{TAG}") == pushed.oci_index
    assert dockerd.pull(f"localhost:{port}/e2e/docker:{TAG}") == pushed.docker_single
    assert dockerd.pull(f"localhost:{port}/e2e/docker-list:{TAG}") == pushed.docker_list
    # And by digest, as deploys pin images.
    assert dockerd.pull(f"localhost:{port}/e2e/oci-index@{pushed.oci_index}") == pushed.oci_index
    served = [
        e for e in pushed.sidecar.logs() if e.get("msg") == "request" and "/blobs/" in e["path"]
    ]
    assert served and all(e["status"] == 200 for e in served)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_skopeo_copies_each_platform(pushed: Pushed, arch: str, tmp_path: Path) -> None:
    got = skopeo.copy_to_dir(
        pushed.sidecar.host, f"e2e/oci-index:{TAG}", tmp_path / "oci", arch=arch
    )
    assert got == pushed.oci_platforms[arch]
    got = skopeo.copy_to_dir(
        pushed.sidecar.host, f"e2e/docker-list:{TAG}", tmp_path / "dl", arch=arch
    )
    assert got == pushed.docker_list_platforms[arch]


def test_skopeo_copies_the_whole_index(pushed: Pushed, tmp_path: Path) -> None:
    got = skopeo.copy_to_dir(
        pushed.sidecar.host, f"e2e/oci-index:{TAG}", tmp_path / "all", all=True
    )
    assert got == pushed.oci_index


def test_podman_pulls(pushed: Pushed) -> None:
    require("podman")
    with Podman() as podman:
        assert podman.pull(f"{pushed.sidecar.host}/e2e/oci-index:{TAG}") == pushed.oci_index
        assert podman.pull(f"{pushed.sidecar.host}/e2e/docker:{TAG}") == pushed.docker_single


def test_s3_store_pulls_fill_the_cache_and_files_match_their_names(pushed: Pushed) -> None:
    """Every cached file hashes to its name: nothing unverified was committed."""
    import hashlib

    files = pushed.sidecar.cache_files()
    if "--storage" in pushed.sidecar.argv and not pushed.sidecar.argv[
        pushed.sidecar.argv.index("--storage") + 1
    ].startswith("s3://"):
        assert files == [], "a directory store is served in place, never copied"
        return
    assert len(files) >= 6
    for f in files:
        assert hashlib.sha256(f.read_bytes()).hexdigest() == f.name
    assert pushed.sidecar.temp_files() == []
