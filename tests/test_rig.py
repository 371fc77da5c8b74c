"""Self-test of the test rig (tests/rig) end to end, with registry:2 as the server.

No regsidecar here: this proves that the real components the sidecar tests rely
on (moto S3, distribution 2.8.2, skopeo, dockerd, podman) work together on this
machine, and that the rig's helpers (image builder, request counter, bucket
layout keys) tell the truth. Each group skips only when its binary is missing.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.rig import skopeo as sk
from tests.rig.dockerd import Dockerd
from tests.rig.images import (
    MT_DOCKER_CONFIG,
    MT_DOCKER_LAYER_GZIP,
    MT_DOCKER_LIST,
    MT_DOCKER_MANIFEST,
    MT_OCI_INDEX,
    MT_OCI_MANIFEST,
    MiB,
    OCIImage,
    build_oci_layout,
)
from tests.rig.moto import MotoServer
from tests.rig.podman import Podman
from tests.rig.ports import free_port, http_status, tcp_open, wait_http, wait_tcp
from tests.rig.proc import missing
from tests.rig.registry import (
    Distribution,
    blob_data_key,
    layer_link_key,
    revision_link_key,
    tag_current_link_key,
    tag_index_link_key,
)

BUCKET = "rig-registry"
TAG = "v1"
MULTI, SINGLE = "rig/multi", "rig/single"
MULTI_V2S2, SINGLE_V2S2 = "rig/multi-v2s2", "rig/single-v2s2"


def need(*binaries: str, root: bool = False) -> None:
    """Skip (with the reason) when a real component is genuinely not installed."""
    absent = missing(*binaries)
    if absent:
        pytest.skip(f"not installed: {', '.join(absent)} (run tests/rig/install-deps.sh)")
    if root and os.geteuid() != 0:
        pytest.skip(f"{binaries[0]} needs root here")


@dataclass(frozen=True)
class Images:
    layout: Path
    multi: OCIImage
    single: OCIImage


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    layout = tmp_path_factory.mktemp("layout")
    multi = build_oci_layout(
        layout,
        "multi",
        [("linux", "amd64"), ("linux", "arm64", "v8")],
        [4 * MiB, 256 * 1024],
        seed="rig-multi",
    )
    # one large layer: the builder streams, and every client below moves 64 MiB
    single = build_oci_layout(
        layout,
        "single",
        [("linux", "amd64")],
        [64 * MiB, 1024],
        seed="rig-single",
        cmd=["/bin/sh", "-c", "true"],
    )
    return Images(layout, multi, single)


@pytest.fixture(scope="module")
def s3_registry() -> Iterator[tuple[MotoServer, Distribution]]:
    need("moto_server", "docker-registry")
    with MotoServer() as moto:
        moto.create_bucket(BUCKET)
        with Distribution(moto=moto, bucket=BUCKET) as dist:
            yield moto, dist


@pytest.fixture(scope="module")
def pushed(images: Images, s3_registry: tuple[MotoServer, Distribution]) -> dict[str, str]:
    """Both images pushed as OCI and as Docker v2s2; repo -> top digest as pushed."""
    need("skopeo")
    _, dist = s3_registry
    out = {}
    with sk.Skopeo() as s:
        out[MULTI] = s.push(images.layout, "multi", dist.host, f"{MULTI}:{TAG}")
        out[SINGLE] = s.push(images.layout, "single", dist.host, f"{SINGLE}:{TAG}")
        out[MULTI_V2S2] = s.push(
            images.layout, "multi", dist.host, f"{MULTI_V2S2}:{TAG}", fmt="v2s2"
        )
        out[SINGLE_V2S2] = s.push(
            images.layout, "single", dist.host, f"{SINGLE_V2S2}:{TAG}", fmt="v2s2"
        )
    return out


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    need("dockerd", "docker", root=True)
    with Dockerd() as d:
        yield d


# --------------------------------------------------------------------------- ports
def test_ports_helpers() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    assert not tcp_open("127.0.0.1", port)
    assert http_status(f"http://127.0.0.1:{port}/") is None
    with pytest.raises(TimeoutError):
        wait_tcp("127.0.0.1", port, 0.2)
    with pytest.raises(ValueError):
        wait_http("http://10.0.0.1:80/", 0.1)  # never leaves loopback


# -------------------------------------------------------------------------- images
def test_build_oci_layout_is_valid_and_deterministic(images: Images, tmp_path: Path) -> None:
    multi, single = images.multi, images.single
    again = build_oci_layout(
        tmp_path / "again",
        "x",
        [("linux", "amd64"), ("linux", "arm64", "v8")],
        [4 * MiB, 256 * 1024],
        seed="rig-multi",
    )
    assert again.digest == multi.digest
    assert again.manifest_digests == multi.manifest_digests
    other = build_oci_layout(tmp_path / "other", "x", [("linux", "amd64")], [1024], seed="other")
    assert other.digest != single.digest

    # every blob is stored under its own sha256 with the right size
    for img in (multi, single):
        for b in img.blobs:
            data = img.read_blob(b.digest)
            assert hashlib.sha256(data).hexdigest() == b.hex and len(data) == b.size

    # the layout's index.json tags both images
    idx = json.loads((images.layout / "index.json").read_text())
    tags = {e["annotations"]["org.opencontainers.image.ref.name"]: e for e in idx["manifests"]}
    assert tags["multi"]["digest"] == multi.digest and tags["multi"]["mediaType"] == MT_OCI_INDEX
    assert tags["single"]["digest"] == single.digest
    assert tags["single"]["mediaType"] == MT_OCI_MANIFEST
    assert json.loads((images.layout / "oci-layout").read_text())["imageLayoutVersion"] == "1.0.0"

    # index -> per-platform manifests with platforms; platforms get different layers
    index = json.loads(multi.read_blob(multi.digest))
    assert [
        (m["platform"]["os"], m["platform"]["architecture"], m["platform"].get("variant"))
        for m in index["manifests"]
    ] == [("linux", "amd64", None), ("linux", "arm64", "v8")]
    amd, arm = multi.for_platform("linux", "amd64"), multi.for_platform("linux", "arm64")
    assert {lay.digest for lay in amd.layers}.isdisjoint({lay.digest for lay in arm.layers})

    # config: os/arch, Cmd, rootfs.diff_ids = sha256 of the *uncompressed* tars
    for img in (multi, single):
        for p in img.platforms:
            cfg = json.loads(img.read_blob(p.config.digest))
            assert (cfg["os"], cfg["architecture"]) == (p.os, p.architecture)
            assert cfg["config"]["Cmd"]
            assert cfg["rootfs"]["diff_ids"] == [lay.diff_id for lay in p.layers]

    # the 64 MiB layer: a real gzip'd tar, diff_id matches, file has the right size
    big = single.platforms[0].layers[0]
    assert big.file_size == 64 * MiB
    h = hashlib.sha256()
    with gzip.open(single.blob_path(big.digest), "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    assert f"sha256:{h.hexdigest()}" == big.diff_id
    with tarfile.open(single.blob_path(big.digest), "r:gz") as t:
        sizes = {m.name: m.size for m in t.getmembers() if m.isfile()}
    assert sizes == {"rig/layer0.bin": 64 * MiB}
    assert big.size > 64 * MiB  # random content: incompressible


# ---------------------------------------------------- (a) registry:2 layout in S3
def test_push_writes_registry2_layout(
    images: Images, s3_registry: tuple[MotoServer, Distribution], pushed: dict[str, str]
) -> None:
    moto, _ = s3_registry
    assert pushed[MULTI] == images.multi.digest  # OCI -> OCI keeps the digests
    assert pushed[SINGLE] == images.single.digest
    keys = set(moto.list_keys(BUCKET))

    for repo, img in ((MULTI, images.multi), (SINGLE, images.single)):
        for b in img.blobs:
            assert blob_data_key(b.digest) in keys, b
        assert moto.get(BUCKET, tag_current_link_key(repo, TAG)).decode() == img.digest
        assert tag_index_link_key(repo, TAG, img.digest) in keys
        assert revision_link_key(repo, img.digest) in keys
        for p in img.platforms:
            assert revision_link_key(repo, p.manifest.digest) in keys
            for b in (p.config, *p.layers):
                link = layer_link_key(repo, b.digest)
                assert moto.get(BUCKET, link).decode() == b.digest
        # the blob the tag points at is the exact manifest/index we built
        assert moto.get(BUCKET, blob_data_key(img.digest)) == img.read_blob(img.digest)

    # blobs are shared between repos, not stored twice
    big = images.single.platforms[0].layers[0]
    assert sum(1 for k in keys if big.hex in k and k.endswith("/data")) == 1
    assert all(k.startswith("docker/registry/v2/") for k in keys)


# ------------------------------------------------- (b) --format v2s2 conversion
def test_push_v2s2_converts_index_and_manifests(
    images: Images, s3_registry: tuple[MotoServer, Distribution], pushed: dict[str, str]
) -> None:
    moto, dist = s3_registry
    raw = sk.inspect_raw(dist.host, f"{MULTI_V2S2}:{TAG}")
    top = json.loads(raw)
    assert sk.digest_of(raw) == pushed[MULTI_V2S2] != images.multi.digest
    assert top["mediaType"] == MT_DOCKER_LIST
    # what registry:2 stored for the tag is that manifest list
    stored = moto.get(BUCKET, tag_current_link_key(MULTI_V2S2, TAG)).decode()
    assert stored == pushed[MULTI_V2S2]
    assert json.loads(moto.get(BUCKET, blob_data_key(stored)))["mediaType"] == MT_DOCKER_LIST

    for entry in top["manifests"]:
        assert entry["mediaType"] == MT_DOCKER_MANIFEST
        child = json.loads(sk.inspect_raw(dist.host, f"{MULTI_V2S2}@{entry['digest']}"))
        assert child["mediaType"] == MT_DOCKER_MANIFEST
        assert child["config"]["mediaType"] == MT_DOCKER_CONFIG
        assert {lay["mediaType"] for lay in child["layers"]} == {MT_DOCKER_LAYER_GZIP}
        oci = images.multi.for_platform(entry["platform"]["os"], entry["platform"]["architecture"])
        # only the manifests change: config and layer blobs are the same bytes
        assert child["config"]["digest"] == oci.config.digest
        assert [lay["digest"] for lay in child["layers"]] == [lay.digest for lay in oci.layers]

    single = json.loads(sk.inspect_raw(dist.host, f"{SINGLE_V2S2}:{TAG}"))
    assert single["mediaType"] == MT_DOCKER_MANIFEST
    stored = moto.get(BUCKET, tag_current_link_key(SINGLE_V2S2, TAG)).decode()
    assert stored == pushed[SINGLE_V2S2]
    assert json.loads(moto.get(BUCKET, blob_data_key(stored)))["mediaType"] == MT_DOCKER_MANIFEST


# ------------------------------------------------------------- (c) docker pull
def test_docker_pull_returns_pushed_digest(
    images: Images,
    s3_registry: tuple[MotoServer, Distribution],
    pushed: dict[str, str],
    dockerd: Dockerd,
) -> None:
    _, dist = s3_registry
    for repo in (MULTI, SINGLE, MULTI_V2S2, SINGLE_V2S2):
        ref = f"{dist.host}/{repo}:{TAG}"
        # multi-platform: docker prints the index / manifest-list digest
        assert dockerd.pull(ref) == pushed[repo], repo
        info = dockerd.image_inspect(ref)
        assert f"{dist.host}/{repo}@{pushed[repo]}" in info["RepoDigests"]
        assert info["Architecture"] == "amd64"
    amd = images.multi.for_platform("linux", "amd64")
    info = dockerd.image_inspect(f"{dist.host}/{MULTI}:{TAG}")
    assert info["RootFS"]["Layers"] == [lay.diff_id for lay in amd.layers]
    assert info["Id"] == amd.config.digest
    assert info["Config"]["Cmd"] == ["/bin/true"]
    # by digest too, and rmi works
    assert dockerd.pull(f"{dist.host}/{SINGLE}@{images.single.digest}") == images.single.digest
    dockerd.rmi(f"{dist.host}/{SINGLE}:{TAG}")
    assert f"{dist.host}/{SINGLE}" not in {
        i["Repository"] for i in dockerd.images() if i["Tag"] == TAG
    }


# ------------------------------------------------ (d) podman pull, skopeo copy
def test_podman_pull(
    images: Images, s3_registry: tuple[MotoServer, Distribution], pushed: dict[str, str]
) -> None:
    need("podman", root=True)
    _, dist = s3_registry
    with Podman() as p:
        assert p.pull(f"{dist.host}/{MULTI}:{TAG}") == images.multi.digest
        info = p.image_inspect(f"{dist.host}/{MULTI}:{TAG}")
        amd = images.multi.for_platform("linux", "amd64")
        assert f"{dist.host}/{MULTI}@{amd.manifest.digest}" in info["RepoDigests"]
        assert info["Architecture"] == "amd64"
        assert p.pull(f"{dist.host}/{SINGLE}:{TAG}") == images.single.digest
        state = p.state
    assert not state.exists()


def test_skopeo_copy_to_dir(
    images: Images,
    s3_registry: tuple[MotoServer, Distribution],
    pushed: dict[str, str],
    tmp_path: Path,
) -> None:
    _, dist = s3_registry
    for arch in ("amd64", "arm64"):
        want = images.multi.for_platform("linux", arch)
        out = tmp_path / arch
        got = sk.copy_to_dir(dist.host, f"{MULTI}:{TAG}", out, arch=arch)
        assert got == want.manifest.digest
        for lay in want.layers:
            assert hashlib.sha256((out / lay.hex).read_bytes()).hexdigest() == lay.hex
    got = sk.copy_to_dir(dist.host, f"{SINGLE}@{images.single.digest}", tmp_path / "single")
    assert got == images.single.digest


# ----------------------------------------------------- (e) S3 request counter
def test_moto_request_counter(
    images: Images,
    s3_registry: tuple[MotoServer, Distribution],
    pushed: dict[str, str],
    tmp_path: Path,
) -> None:
    moto, dist = s3_registry
    cfg_key = blob_data_key(images.single.platforms[0].config.digest)

    since = moto.mark()
    moto.client().get_object(Bucket=BUCKET, Key=cfg_key)
    moto.client().head_object(Bucket=BUCKET, Key=cfg_key)
    assert moto.count("GET", key=cfg_key, since=since) == 1
    assert moto.count("HEAD", key=cfg_key, since=since) == 1
    assert moto.count(key=cfg_key, since=since, status=200) == 2
    # nothing else happened, and the rig's own sync probes are not counted
    assert len(moto.requests(since=since)) == 2

    # one arm64 copy through registry:2: exactly one GET of each of its blobs' data,
    # none of the amd64 ones, and a pull never writes to the bucket
    arm = images.multi.for_platform("linux", "arm64")
    amd = images.multi.for_platform("linux", "amd64")
    since = moto.mark()
    sk.copy_to_dir(dist.host, f"{MULTI}:{TAG}", tmp_path / "arm", arch="arm64")
    for b in (arm.config, *arm.layers):
        assert moto.count("GET", key=blob_data_key(b.digest), since=since) == 1, b
    for b in amd.layers:
        assert moto.count(key=blob_data_key(b.digest), since=since) == 0
    reqs = moto.requests(since=since)
    assert reqs and {r.method for r in reqs} <= {"GET", "HEAD"}
    assert all(r.bucket == BUCKET for r in reqs)


# ------------------------------------------ other storage setups of Distribution
def test_distribution_filesystem_and_s3_rootdirectory(
    images: Images, s3_registry: tuple[MotoServer, Distribution], tmp_path: Path
) -> None:
    need("docker-registry", "skopeo")
    moto, _ = s3_registry
    small = build_oci_layout(tmp_path / "small", "s", [("linux", "amd64")], [1024], seed="small")
    root = tmp_path / "fsroot"
    with Distribution(root_dir=root) as dist:
        assert sk.push(small.layout_dir, "s", dist.host, "fs/img:1") == small.digest
        assert (root / tag_current_link_key("fs/img", "1")).read_text() == small.digest
        for b in small.blobs:
            assert (root / blob_data_key(b.digest)).is_file()

    moto.create_bucket("rig-prefixed")
    with Distribution(moto=moto, bucket="rig-prefixed", s3_rootdirectory="/mirror/a") as dist:
        assert sk.push(small.layout_dir, "s", dist.host, "pfx/img:1") == small.digest
        keys = moto.list_keys("rig-prefixed")
        assert keys and all(k.startswith("mirror/a/docker/registry/v2/") for k in keys)
        assert tag_current_link_key("pfx/img", "1", root="/mirror/a") in keys
