"""Clock skew end to end, against an S3 that really enforces request time (s3rver 3.7.1).

The sidecar process runs under libfaketime (its wall clock shifted, its monotonic clock not);
s3rver refuses any request signed more than 15 minutes from its own clock. Pulls through the
sidecar must succeed with correction on, and fail with a clear OCI error with it off, which
also proves the skew is real.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require
from tests.rig import skopeo
from tests.rig.dockerd import Dockerd
from tests.rig.images import MiB, build_oci_layout
from tests.rig.moto import MotoServer
from tests.rig.registry import Distribution
from tests.rig.s3rver import ACCESS_KEY, SECRET_KEY, S3rver, s3rver_missing
from tests.s3tree import BucketWriter
from tests.sidecar import FakeTime, Sidecar

BUCKET = "skew"
OFFSETS = {"+20m": 1200, "-2h": -7200, "+1d": 86400}


@dataclass
class Store:
    s3: S3rver
    tree: Path  # the registry:2 tree distribution wrote, as uploaded
    digests: dict[str, str]  # repo -> pushed top digest
    platforms: dict[str, str]  # arch -> manifest digest of skew/multi


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """Images pushed by distribution to a directory, then copied key by key into s3rver."""
    require("docker-registry", "skopeo", "faketime")
    missing = s3rver_missing()
    if missing:
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("tree")
    layout = tmp_path_factory.mktemp("layout")
    multi = build_oci_layout(
        layout,
        "multi",
        [("linux", "amd64"), ("linux", "arm64")],
        [1 * MiB, 200 * 1024],
        seed="skew-multi",
    )
    build_oci_layout(layout, "other", [("linux", "amd64")], [300 * 1024], seed="skew-other")
    with Distribution(root_dir=root) as dist:
        digests = {
            "skew/multi": skopeo.push(layout, "multi", dist.host, "skew/multi:v1", fmt="oci"),
            "skew/other": skopeo.push(layout, "other", dist.host, "skew/other:v1", fmt="v2s2"),
            "skew/third": skopeo.push(layout, "other", dist.host, "skew/third:v1", fmt="oci"),
        }
    with S3rver() as s3:
        s3.create_bucket(BUCKET)
        s3.upload_tree(BUCKET, root)
        platforms = {p.platform.split("/")[1]: p.manifest_digest for p in multi.platforms}
        yield Store(s3, root, digests, platforms)


def _sidecar(
    store: Store, faketime: str | None, *, correct: bool = True, s3: S3rver | None = None
) -> Sidecar:
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "REGSIDECAR_CLOCK_CORRECT": "true" if correct else "false",
        "REGSIDECAR_CACHE_TAG_TTL_S": "0",  # every tag lookup goes to S3
    }
    endpoint = (s3 or store.s3).endpoint_url
    args = [
        "--storage",
        f"s3://{BUCKET}",
        "--s3-endpoint-url",
        endpoint,
        "--s3-path-style",
        "--s3-region",
        "us-east-1",
    ]
    return Sidecar(args, env=env, faketime=faketime)


def _health(sc: Sidecar) -> dict[str, object]:
    with urllib.request.urlopen(f"{sc.url}/healthz", timeout=10) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def _get(url: str, accept: str) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    require("dockerd")
    with Dockerd() as d:
        yield d


@pytest.mark.parametrize("offset", list(OFFSETS))
def test_pulls_succeed_with_a_skewed_clock(
    store: Store, dockerd: Dockerd, offset: str, tmp_path: Path
) -> None:
    """+20 min, -2 h, +1 day: skopeo and dockerd pull the pushed digests; the offset is known."""
    with _sidecar(store, offset) as sc:
        got = skopeo.copy_to_dir(sc.host, "skew/multi:v1", tmp_path / "arm", arch="arm64")
        assert got == store.platforms["arm64"]
        assert dockerd.pull(f"localhost:{sc.port}/skew/multi:v1") == store.digests["skew/multi"]
        assert dockerd.pull(f"localhost:{sc.port}/skew/other:v1") == store.digests["skew/other"]
        clock = _health(sc)["clock"]
        assert isinstance(clock, dict)
        assert abs(clock["offset_s"] + OFFSETS[offset]) < 5, clock
        logs = sc.logs()
    assert any(e.get("msg") == "local clock is far from S3's" for e in logs)
    assert not [e for e in logs if e.get("level") == "error"]
    # (method UNKNOWN: docker's TLS probe of a plain-HTTP registry, answered 400)
    served = [e for e in logs if e.get("msg") == "request" and e["method"] != "UNKNOWN"]
    assert served
    for e in served:  # docker probes tags it may not find; never a 5xx
        assert e["status"] in (200, 404), (e["method"], e["path"], e["status"])
    dockerd.rmi(f"localhost:{sc.port}/skew/multi:v1")
    dockerd.rmi(f"localhost:{sc.port}/skew/other:v1")


@pytest.mark.parametrize("offset", list(OFFSETS))
def test_without_correction_pulls_fail_with_a_clear_oci_error(
    store: Store, offset: str, tmp_path: Path
) -> None:
    """Correction off: S3 really refuses the skewed time, and the client is told why."""
    with _sidecar(store, offset, correct=False) as sc:
        status, body = _get(
            f"{sc.url}/v2/skew/multi/manifests/v1", "application/vnd.oci.image.index.v1+json"
        )
        assert status == 503
        err = body["errors"][0]  # type: ignore[index]
        assert err["code"] == "UNAVAILABLE"
        assert "RequestTimeTooSkewed" in json.dumps(err["detail"])
        with pytest.raises(skopeo.CommandFailed):
            skopeo.copy_to_dir(sc.host, "skew/multi:v1", tmp_path / "x", arch="amd64")


def test_a_clock_jump_while_running_is_followed(store: Store, dockerd: Dockerd) -> None:
    """The wall clock steps by +3 h mid-run (monotonic does not): the next pull still works."""
    with _sidecar(store, "+0") as sc:
        assert dockerd.pull(f"localhost:{sc.port}/skew/other:v1") == store.digests["skew/other"]
        sc.set_faketime("+3h")
        assert dockerd.pull(f"localhost:{sc.port}/skew/third:v1") == store.digests["skew/third"]
        clock = _health(sc)["clock"]
        assert isinstance(clock, dict)
        assert clock["jumps"] >= 1
        assert abs(clock["offset_s"] + 3 * 3600) < 5, clock
    dockerd.rmi(f"localhost:{sc.port}/skew/other:v1")
    dockerd.rmi(f"localhost:{sc.port}/skew/third:v1")


def test_a_jump_the_sidecar_cannot_see_is_caught_by_the_rejection_and_retried(
    store: Store, tmp_path: Path
) -> None:
    """S3's clock moves by 2 h mid-run (here: s3rver under faketime), so nothing local changes
    and the estimate is silently wrong. S3's RequestTimeTooSkewed resets it and the request is
    retried at once: the client still gets 200."""
    ft = FakeTime("+0", tmp_path / "s3rver-time.rc")
    s3 = S3rver(env=ft.env())
    try:
        s3.start()
        s3.create_bucket(BUCKET)
        s3.upload_tree(BUCKET, store.tree)
        accept = "application/vnd.oci.image.index.v1+json"
        with _sidecar(store, None, s3=s3) as sc:
            assert _get(f"{sc.url}/v2/skew/multi/manifests/v1", accept)[0] == 200
            ft.set("+2h")
            assert _get(f"{sc.url}/v2/skew/multi/manifests/v1", accept)[0] == 200
            clock = _health(sc)["clock"]
            logs = sc.logs()
    finally:
        pid = s3.pid if s3._proc is not None else None
        s3.stop()
        if pid is not None:
            FakeTime.cleanup_shm(pid)
    assert isinstance(clock, dict)
    assert abs(clock["offset_s"] - 7200) < 5, clock
    assert clock["jumps"] == 0
    assert any(str(e.get("msg", "")).startswith("S3 rejected the request time") for e in logs)


def test_moto_with_signature_checks_accepts_corrected_signatures(tmp_path: Path) -> None:
    """Correction changes the signing time, not the signature's validity: moto, checking
    signatures of an IAM user's key, accepts what a +20 min sidecar signs."""
    require("moto_server", "faketime")
    with MotoServer(auth=True) as moto:
        moto.create_bucket("signed")
        _, layers = BucketWriter(moto.client(), "signed").image("app", "v1", [b"a" * 4096])
        env = {"AWS_ACCESS_KEY_ID": moto.access_key, "AWS_SECRET_ACCESS_KEY": moto.secret_key}
        args = [
            "--storage",
            "s3://signed",
            "--s3-endpoint-url",
            moto.endpoint_url,
            "--s3-path-style",
            "--s3-region",
            "us-east-1",
        ]
        with Sidecar(args, env=env, faketime="+20m") as sc:
            status, _ = _get(
                f"{sc.url}/v2/app/manifests/v1", "application/vnd.oci.image.manifest.v1+json"
            )
            assert status == 200
            with urllib.request.urlopen(f"{sc.url}/v2/app/blobs/{layers[0]}", timeout=30) as r:
                assert r.read() == b"a" * 4096
            clock = _health(sc)["clock"]
            assert isinstance(clock, dict)
            assert abs(clock["offset_s"] + 1200) < 5
        bad = {**env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
        with Sidecar(args, env=bad, faketime="+20m") as sc:
            status, body = _get(
                f"{sc.url}/v2/app/manifests/v1", "application/vnd.oci.image.manifest.v1+json"
            )
            assert status == 503, "a wrong signature must fail: the check is real"
            assert "SignatureDoesNotMatch" in json.dumps(body)
