"""Real clients push through the sidecar: docker (login, push, pull), skopeo (a multi-arch OCI
index onto S3), and the store they leave is one a stock distribution registry serves -- and the
other way round: what distribution pushed, ``regsidecar promote`` tags, and both serve it.

Credentials (tests/rig/htpasswd.py): ``ci`` may push, ``reader`` may only pull, anonymous
clients may pull. Tag rules: ``v*`` immutable, ``production`` moves only by promotion.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require, s3_args
from tests.rig.dockerd import Dockerd
from tests.rig.htpasswd import READER, RELEASE_TOKEN, WRITER, PushAuth
from tests.rig.httpcall import Reply, call
from tests.rig.images import MT_OCI_MANIFEST, OCIImage, build_oci_layout
from tests.rig.moto import MotoServer
from tests.rig.proc import CommandFailed
from tests.rig.promote import promote_cli
from tests.rig.registry import (
    Distribution,
    blob_data_key,
    layer_link_key,
    revision_link_key,
    tag_current_link_key,
    tag_index_link_key,
)
from tests.rig.skopeo import Skopeo, digest_of
from tests.sidecar import Sidecar

pytestmark = [pytest.mark.rig, pytest.mark.timeout(240)]

PROTECT = [
    {"tags": "v*", "rule": "immutable"},
    {"tags": "production", "rule": "promote-only"},
]
PLATFORMS = [("linux", "amd64"), ("linux", "arm64")]
_PUSHED = re.compile(r"^\S+: digest: (sha256:[0-9a-f]{64}) size: \d+$", re.M)
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        MT_OCI_MANIFEST,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


@dataclass
class Site:
    """A sidecar that takes pushes, on a directory store it shares with the CLI."""

    sidecar: Sidecar
    root: Path
    config: Path

    @property
    def store(self) -> list[str]:
        return ["--storage", str(self.root), "--config", str(self.config)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("push-site")
    root = base / "store"
    root.mkdir()
    cfg = PushAuth(protect=PROTECT).write(base / "auth")
    with Sidecar(["--storage", str(root), "--config", str(cfg)]) as sc:
        yield Site(sc, root, cfg)


@pytest.fixture(scope="module")
def dockerd() -> Iterator[Dockerd]:
    require("dockerd", "docker")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root here")
    with Dockerd() as d:
        yield d


def _rootfs_tar(path: Path, text: str) -> Path:
    """A one-file root filesystem for ``docker import`` (a few hundred bytes)."""
    data = text.encode()
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mode, info.mtime = len(data), 0o644, 946684800
        tar.addfile(info, io.BytesIO(data))
    return path


def _skopeo_push(
    s: Skopeo,
    img: OCIImage,
    host: str,
    repo_tag: str,
    creds: tuple[str, str] | None = WRITER,
) -> str:
    """``skopeo copy --all --format oci [--dest-creds U:P]``; the pushed top digest."""
    digestfile = s.state / "tmp" / "pushed-digest"
    digestfile.unlink(missing_ok=True)
    auth = ["--dest-creds", ":".join(creds)] if creds else ["--dest-no-creds"]
    s.run(
        "copy",
        "--quiet",
        "--all",
        "--format",
        "oci",
        "--dest-tls-verify=false",
        *auth,
        "--digestfile",
        str(digestfile),
        img.oci_ref,
        f"docker://{host}/{repo_tag}",
    )
    return digestfile.read_text().strip()


def _manifest_digest(url: str, repo: str, ref: str, auth: tuple[str, str] = WRITER) -> Reply:
    return call("HEAD", f"{url}/v2/{repo}/manifests/{ref}", auth=auth, headers={"Accept": ACCEPT})


def _assert_refused(r: Reply, status: int, code: str) -> None:
    assert r.status == status, str(r)
    assert r.headers.get("content-type", "").startswith("application/json"), str(r)
    assert code in r.error_codes(), str(r)
    assert all(e.get("message") for e in r.json()["errors"]), str(r)
    if status == 401:
        assert r.headers.get("www-authenticate", "").startswith("Bearer realm="), str(r)


def _assert_stored(root: Path, repo: str, tag: str, digest: str) -> None:
    """distribution's keys for ``repo:tag`` -> ``digest`` exist in a directory store."""
    manifest = json.loads((root / blob_data_key(digest)).read_bytes())
    assert digest_of((root / blob_data_key(digest)).read_bytes()) == digest
    assert (root / revision_link_key(repo, digest)).read_text() == digest
    assert (root / tag_current_link_key(repo, tag)).read_text() == digest
    assert (root / tag_index_link_key(repo, tag, digest)).read_text() == digest
    for desc in [manifest["config"], *manifest["layers"]]:
        d = desc["digest"]
        assert (root / layer_link_key(repo, d)).read_text() == d
        assert digest_of((root / blob_data_key(d)).read_bytes()) == d


# --------------------------------------------------------------------------- docker
def test_docker_login_push_then_anonymous_pull(
    site: Site, dockerd: Dockerd, tmp_path: Path
) -> None:
    """docker login + push works for the writer; the image then pulls anonymously."""
    registry = f"localhost:{site.sidecar.port}"
    ref = f"{registry}/team/hello:1.0"
    dockerd.docker("import", str(_rootfs_tar(tmp_path / "rootfs.tar", "hello")), ref)

    dockerd.docker("login", "-u", WRITER[0], "-p", WRITER[1], registry)
    auths = json.loads((dockerd.cli_config / "config.json").read_text())["auths"]
    assert registry in auths, "the CLI keeps the login in DOCKER_CONFIG"
    out = dockerd.docker("push", ref)
    m = _PUSHED.search(out)
    assert m, out
    pushed = m.group(1)
    _assert_stored(site.root, "team/hello", "1.0", pushed)
    head = _manifest_digest(site.sidecar.url, "team/hello", "1.0")
    assert head.status == 200 and head.headers["docker-content-digest"] == pushed, str(head)

    dockerd.docker("logout", registry)
    dockerd.rmi(ref)
    assert ref not in {f"{i['Repository']}:{i['Tag']}" for i in dockerd.images()}
    assert dockerd.pull(ref) == pushed, "anonymous pull gets what the writer pushed"
    assert f"{registry}/team/hello@{pushed}" in dockerd.image_inspect(ref)["RepoDigests"]


def test_docker_push_is_refused_for_anonymous_and_reader(
    site: Site, dockerd: Dockerd, tmp_path: Path
) -> None:
    """docker push without login, or as the pull-only user, fails: 401 / 403 DENIED."""
    registry = f"localhost:{site.sidecar.port}"
    anon_ref = f"{registry}/team/anon:1"
    reader_ref = f"{registry}/team/readers:1"
    tar = _rootfs_tar(tmp_path / "rootfs.tar", "refused")
    dockerd.docker("import", str(tar), anon_ref)
    dockerd.docker("tag", anon_ref, reader_ref)

    with pytest.raises(CommandFailed) as anon:
        dockerd.docker("push", anon_ref, timeout_s=120)
    # The sidecar answers 401 (checked over HTTP below); docker words it as "denied".
    said = (anon.value.stdout + anon.value.stderr).lower()
    assert "denied" in said or "unauthorized" in said, said

    dockerd.docker("login", "-u", READER[0], "-p", READER[1], registry)
    try:
        with pytest.raises(CommandFailed) as reader:
            dockerd.docker("push", reader_ref, timeout_s=120)
    finally:
        dockerd.docker("logout", registry)
    said = (reader.value.stdout + reader.value.stderr).lower()
    assert "denied" in said, said

    for repo in ("team/anon", "team/readers"):
        r = _manifest_digest(site.sidecar.url, repo, "1")
        assert r.status == 404, f"{repo}: nothing was tagged: {r}"
        assert not (site.root / tag_current_link_key(repo, "1")).exists()

    # The same refusals over plain HTTP, with the OCI error body.
    url = site.sidecar.url
    uploads = f"{url}/v2/team/anon/blobs/uploads/"
    manifest = f"{url}/v2/team/anon/manifests/1"
    body = json.dumps({"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST}).encode()
    mt = {"Content-Type": MT_OCI_MANIFEST}
    _assert_refused(call("POST", uploads), 401, "UNAUTHORIZED")
    _assert_refused(call("PUT", manifest, body=body, headers=mt), 401, "UNAUTHORIZED")
    _assert_refused(call("POST", uploads, auth=READER), 403, "DENIED")
    _assert_refused(call("PUT", manifest, body=body, headers=mt, auth=READER), 403, "DENIED")
    _assert_refused(
        call("DELETE", f"{url}/v2/team/hello/manifests/1.0", auth=READER), 403, "DENIED"
    )
    # Docker's way: a token from the realm. The reader's holds pull only, so push is denied.
    token = call(
        "GET",
        f"{url}/-/token?service=regsidecar&scope=repository:team/anon:pull,push",
        auth=READER,
    )
    assert token.status == 200, str(token)
    _assert_refused(call("POST", uploads, token=token.json()["token"]), 403, "DENIED")
    # A wrong password is no identity at all.
    _assert_refused(call("POST", uploads, auth=(WRITER[0], "wrong")), 401, "UNAUTHORIZED")
    # The static CI token is a writer: it may open (and cancel) an upload.
    opened = call("POST", uploads, token=RELEASE_TOKEN[1])
    assert opened.status == 202, str(opened)
    cancelled = call("DELETE", url + opened.headers["location"], token=RELEASE_TOKEN[1])
    assert cancelled.status == 204, str(cancelled)


# ------------------------------------------------------------------- skopeo + distribution
def _verify_copy(out: Path, img: OCIImage) -> None:
    """Every config and layer skopeo copied out is byte-identical to the one built here
    (manifests are compared by digest: ``dir:`` names them differently)."""
    for p in img.platforms:
        for blob in (p.config, *p.layers):
            assert (out / blob.hex).read_bytes() == img.read_blob(blob.digest), blob


def test_skopeo_push_of_multiarch_index_is_served_by_distribution(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    """A 2-platform OCI index skopeo pushed through the sidecar onto S3: a stock distribution
    on the same bucket serves the same index, both manifests and every blob."""
    require("skopeo", "docker-registry")
    img = build_oci_layout(
        tmp_path / "layout", "multi", PLATFORMS, [512 * 1024, 64 * 1024], seed="push-multi"
    )
    cfg = PushAuth(protect=PROTECT).write(tmp_path / "auth")
    repo = "team/multi"
    with Skopeo() as s:
        with Sidecar([*s3_args(moto.endpoint_url, bucket), "--config", str(cfg)]) as sc:
            assert _skopeo_push(s, img, sc.host, f"{repo}:1.0") == img.digest

        keys = set(moto.list_keys(bucket))
        for blob in img.blobs:
            assert blob_data_key(blob.digest) in keys, blob
        for p in img.platforms:
            assert revision_link_key(repo, p.manifest_digest) in keys
            for b in (p.config, *p.layers):
                assert layer_link_key(repo, b.digest) in keys
        assert revision_link_key(repo, img.digest) in keys
        assert tag_index_link_key(repo, "1.0", img.digest) in keys
        assert moto.get(bucket, tag_current_link_key(repo, "1.0")).decode() == img.digest
        assert not [k for k in keys if "/_uploads/" in k], "no upload state left in the store"

        with Distribution(moto=moto, bucket=bucket) as dist:
            raw = s.inspect_raw(dist.host, f"{repo}:1.0")
            assert raw == img.read_blob(img.digest), "distribution serves the index as pushed"
            for p in img.platforms:
                got = s.inspect_raw(dist.host, f"{repo}@{p.manifest_digest}")
                assert got == img.read_blob(p.manifest_digest), p.platform
            out = tmp_path / "from-distribution"
            # skopeo verifies each blob's digest as it copies
            assert s.copy_to_dir(dist.host, f"{repo}:1.0", out, all=True) == img.digest
            _verify_copy(out, img)


def test_image_pushed_to_distribution_is_promoted_and_served_by_both(
    moto: MotoServer, bucket: str, tmp_path: Path
) -> None:
    """distribution pushes; `regsidecar promote` tags it (also into another repository);
    distribution and the sidecar then serve the new tags with the pushed digest."""
    require("skopeo", "docker-registry")
    img = build_oci_layout(
        tmp_path / "layout", "rev", PLATFORMS, [256 * 1024, 32 * 1024], seed="push-rev"
    )
    store = s3_args(moto.endpoint_url, bucket)
    with Skopeo() as s, Distribution(moto=moto, bucket=bucket) as dist:
        pushed = _skopeo_push(s, img, dist.host, "team/rev:build-7", creds=None)
        assert pushed == img.digest

        p = promote_cli(
            f"team/rev@{pushed}", "qa", "other/rev:qa", "--by", "job-7", "--json", store=store
        )
        assert p.returncode == 0, str(p)
        moved = sorted(p.json()["moved"], key=lambda m: m["repository"])
        assert moved == [
            {"repository": "other/rev", "tag": "qa", "old": None, "new": pushed},
            {"repository": "team/rev", "tag": "qa", "old": None, "new": pushed},
        ]

        with Sidecar(store) as sc:
            for host in (dist.host, sc.host):
                for ref in ("team/rev:qa", "other/rev:qa"):
                    assert digest_of(s.inspect_raw(host, ref)) == pushed, (host, ref)
                out = tmp_path / f"other-{host.replace(':', '_')}"
                assert s.copy_to_dir(host, "other/rev:qa", out, all=True) == pushed, host
                _verify_copy(out, img)


# ---------------------------------------------------------------------- tag protection
def test_protected_tags_refuse_pushes_and_production_moves_by_promotion(
    site: Site, tmp_path: Path
) -> None:
    """An immutable v1 keeps its image, production refuses pushes; promotion moves
    production and leaves an audit record."""
    require("skopeo")
    layout = tmp_path / "layout"
    a = build_oci_layout(layout, "a", [("linux", "amd64")], [64 * 1024], seed="prot-a")
    b = build_oci_layout(layout, "b", [("linux", "amd64")], [64 * 1024], seed="prot-b")
    repo, url, host = "team/prot", site.sidecar.url, site.sidecar.host
    manifest_b = b.read_blob(b.digest)

    def put_b(tag: str) -> Reply:
        """PUT b's manifest to ``tag`` over plain HTTP, as the writer."""
        headers = {"Content-Type": MT_OCI_MANIFEST}
        return call(
            "PUT", f"{url}/v2/{repo}/manifests/{tag}", body=manifest_b, headers=headers, auth=WRITER
        )

    with Skopeo() as s:
        assert _skopeo_push(s, a, host, f"{repo}:v1") == a.digest
        assert _skopeo_push(s, a, host, f"{repo}:v1") == a.digest, "same image again: allowed"
        assert _skopeo_push(s, b, host, f"{repo}:candidate") == b.digest

        with pytest.raises(CommandFailed) as moved_v1:
            _skopeo_push(s, b, host, f"{repo}:v1")
        assert "denied" in (moved_v1.value.stdout + moved_v1.value.stderr).lower()
        _assert_refused(put_b("v1"), 403, "DENIED")
        # Nor can it be deleted: not by tag, not by the digest it points at.
        for ref in ("v1", a.digest):
            r = call("DELETE", f"{url}/v2/{repo}/manifests/{ref}", auth=WRITER)
            _assert_refused(r, 403, "DENIED")
        assert _manifest_digest(url, repo, "v1").headers["docker-content-digest"] == a.digest

        with pytest.raises(CommandFailed) as pushed_prod:
            _skopeo_push(s, b, host, f"{repo}:production")
        assert "denied" in (pushed_prod.value.stdout + pushed_prod.value.stderr).lower()
        _assert_refused(put_b("production"), 403, "DENIED")
        r = _manifest_digest(url, repo, "production")
        assert r.status == 404, str(r)

        p = promote_cli(f"{repo}@{b.digest}", "production", "--by", "release-42", store=site.store)
        assert p.returncode == 0, str(p)
        assert p.stdout.split() == [f"{repo}:production", "(new)", "->", b.digest], str(p)
        assert digest_of(s.inspect_raw(host, f"{repo}:production")) == b.digest
        _assert_stored(site.root, repo, "production", b.digest)

        # Promotion may not move an immutable tag either (CLI: exit 1; API: 403 DENIED).
        p = promote_cli(f"{repo}@{b.digest}", "v1", store=site.store)
        assert p.returncode == 1, str(p)
        refused = call(
            "POST",
            f"{url}/-/promote",
            json_body={"source": f"{repo}@{b.digest}", "tags": ["v1"]},
            auth=WRITER,
        )
        _assert_refused(refused, 403, "DENIED")
        assert _manifest_digest(url, repo, "v1").headers["docker-content-digest"] == a.digest

        # production moves back to a by the API, as the writer.
        r = call(
            "POST",
            f"{url}/-/promote",
            json_body={"source": f"{repo}@{a.digest}", "tags": ["production"]},
            auth=WRITER,
        )
        assert r.status == 200, str(r)
        assert r.json() == {
            "moved": [{"repository": repo, "tag": "production", "old": b.digest, "new": a.digest}]
        }
        assert digest_of(s.inspect_raw(host, f"{repo}:production")) == a.digest

    audit_dir = site.root / "docker/registry/v2/repositories" / repo / "_audit"
    records = [json.loads(f.read_text()) for f in sorted(audit_dir.glob("*.json"))]
    assert [(r["by"], r["old"], r["new"]) for r in records] == [
        ("release-42", None, b.digest),
        (WRITER[0], b.digest, a.digest),
    ], records
    for rec, src in zip(records, (b.digest, a.digest), strict=True):
        assert rec["action"] == "promote"
        assert rec["source"] == f"{repo}@{src}"
        assert rec["repository"] == repo and rec["tag"] == "production"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", rec["time"])


def test_sidecar_without_auth_refuses_writes_as_read_only(tmp_path: Path) -> None:
    """No auth section: the sidecar is read-only and says so (405 UNSUPPORTED)."""
    with Sidecar(["--storage", str(tmp_path / "store")]) as sc:
        _assert_refused(call("POST", f"{sc.url}/v2/team/app/blobs/uploads/"), 405, "UNSUPPORTED")
        _assert_refused(
            call("POST", f"{sc.url}/v2/team/app/blobs/uploads/", auth=WRITER), 405, "UNSUPPORTED"
        )
        promote = {"source": f"team/app@sha256:{'0' * 64}", "tags": ["qa"]}
        r = call("POST", f"{sc.url}/-/promote", json_body=promote, auth=WRITER)
        _assert_refused(r, 405, "UNSUPPORTED")
        r = call("GET", f"{sc.url}/v2/")
        assert r.status == 200, "pulls need no credentials without auth"
