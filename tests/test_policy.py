"""Serve only what CI signed: a sidecar with a ``signed-by`` policy over a registry:2 bucket.

The bucket (moto) holds real images (gzip tar layers, configs whose diff_ids match) in
distribution's layout, and signatures as containers/image and cosign write them: a companion
manifest tagged ``sha256-<hex>.sig`` whose simple-signing layers carry the payload and the
``dev.cosignproject.cosign/signature`` annotation. Stand-in, named as such: the test writes
those signatures itself, with an ECDSA P-256 key it generates, because Debian's skopeo 1.9
and podman 4.3 are built with sigstore disabled (``--sign-by-sigstore-private-key`` fails with
"Debian-local change: sigstore disabled"; tests/rig/skopeo.py), so no real tool here can
sign or cross-check them. The format is the one their code writes (see README).

The policy: ``prod/*`` signed-by the CI key, ``*`` accepted. A real dockerd pulls through the
sidecar: the signed image (by tag and by digest) and a signed multi-arch index pull; unsigned,
signed by another key, a signature naming another digest, and an index whose children are not
signed are refused with 403 DENIED naming the policy and the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from regsidecar.oci import mediatypes
from tests.conftest import require, s3_args
from tests.ocistore import Store
from tests.rig.dockerd import Dockerd
from tests.rig.moto import MotoServer
from tests.rig.proc import CommandFailed
from tests.s3tree import BucketWriter
from tests.sidecar import Sidecar

pytestmark = pytest.mark.rig


def _pem(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@dataclass
class Site:
    sidecar: Sidecar
    store: Store
    ci: ec.EllipticCurvePrivateKey
    host: str
    digests: dict[str, str]
    args: list[str]  # the sidecar's store and config flags


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require("moto_server")
    base = tmp_path_factory.mktemp("policy")
    with MotoServer() as moto:
        bucket = "signed"
        moto.create_bucket(bucket)
        store = Store(BucketWriter(moto.client(), bucket))
        ci = ec.generate_private_key(ec.SECP256R1())
        other = ec.generate_private_key(ec.SECP256R1())
        config = base / "regsidecar.yml"
        rules = [
            {
                "repositories": "prod/*",
                "rule": "signed-by",
                "keys": [str(_pem(ci, base / "ci.pub"))],
            },
            {"repositories": "*", "rule": "accept"},
        ]
        config.write_text(json.dumps({"policy": {"rules": rules}}))
        args = [*s3_args(moto.endpoint_url, bucket), "--config", str(config)]
        sc = Sidecar(
            args,
            data_dir=base / "sc",
            env={"REGSIDECAR_CACHE_TAG_TTL_S": "1"},
        )
        host = f"localhost:{sc.port}"
        d: dict[str, str] = {}
        d["signed"] = store.image("prod/signed", "v1", "signed")
        store.sign("prod/signed", d["signed"], ci, f"{host}/prod/signed:v1")
        d["unsigned"] = store.image("prod/unsigned", "v1", "unsigned")
        d["otherkey"] = store.image("prod/otherkey", "v1", "other key")
        store.sign("prod/otherkey", d["otherkey"], other, f"{host}/prod/otherkey:v1")
        d["wrongdigest"] = store.image("prod/wrongdigest", "v1", "wrong digest")
        store.sign(
            "prod/wrongdigest",
            d["wrongdigest"],
            ci,
            f"{host}/prod/wrongdigest:v1",
            claims="sha256:" + "0" * 64,
        )
        d["dev"] = store.image("dev/app", "v1", "dev, accepted unsigned")
        children = []
        for arch in ("amd64", "arm64"):
            child = store.image("prod/multi", None, f"multi {arch}", arch)
            store.sign("prod/multi", child, ci, f"{host}/prod/multi:v1")
            children.append((child, arch))
        d["multi"] = store.index("prod/multi", "v1", children)
        store.sign("prod/multi", d["multi"], ci, f"{host}/prod/multi:v1")
        bare = [(store.image("prod/half", None, f"half {a}", a), a) for a in ("amd64", "arm64")]
        d["half"] = store.index("prod/half", "v1", bare)
        d["half-child"] = bare[0][0]
        store.sign("prod/half", d["half"], ci, f"{host}/prod/half:v1")
        with sc:
            yield Site(sc, store, ci, host, d, args)


async def _get(site: Site, path: str) -> tuple[int, dict[str, object]]:
    accept = ",".join([mediatypes.OCI_INDEX, mediatypes.OCI_MANIFEST])
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{site.sidecar.url}{path}", headers={"Accept": accept}) as r,
    ):
        body = await r.read()
        return r.status, (
            json.loads(body)
            if r.status >= 400
            else {"digest": r.headers.get("Docker-Content-Digest")}
        )


async def test_the_policy_serves_signed_manifests_and_refuses_the_rest_with_the_reason(
    site: Site,
) -> None:
    d = site.digests
    assert await _get(site, "/v2/prod/signed/manifests/v1") == (200, {"digest": d["signed"]})
    assert await _get(site, f"/v2/prod/signed/manifests/{d['signed']}") == (
        200,
        {"digest": d["signed"]},
    )
    assert await _get(site, "/v2/dev/app/manifests/v1") == (200, {"digest": d["dev"]})
    assert await _get(site, "/v2/prod/multi/manifests/v1") == (200, {"digest": d["multi"]})
    refused = {
        "unsigned": ("/v2/prod/unsigned/manifests/v1", "no signature"),
        "otherkey": ("/v2/prod/otherkey/manifests/v1", "not signed by a policy key"),
        "wrongdigest": ("/v2/prod/wrongdigest/manifests/v1", "covers another digest"),
        "half-child": (f"/v2/prod/half/manifests/{d['half-child']}", "no signature"),
    }
    for what, (path, reason) in refused.items():
        status, body = await _get(site, path)
        assert status == 403, (what, status, body)
        (error,) = body["errors"]  # type: ignore[misc]
        assert error["code"] == "DENIED", what
        assert error["detail"]["policy"] == "prod/*", what
        assert reason in error["detail"]["reason"], (what, error)
    # The signature manifests themselves are readable (verifiers fetch them).
    sig_tag = "sha256-" + d["signed"].split(":")[1] + ".sig"
    assert (await _get(site, f"/v2/prod/signed/manifests/{sig_tag}"))[0] == 200
    async with aiohttp.ClientSession() as s, s.get(f"{site.sidecar.url}/metrics") as r:
        metrics = await r.text()
    refusals = re.search(
        r'^regsidecar_policy_verdicts_total\{outcome="refused"\} (\S+)$', metrics, re.M
    )
    assert refusals and float(refusals.group(1)) >= 4


async def test_a_signature_added_later_takes_effect_within_the_tag_ttl(site: Site) -> None:
    digest = site.store.image("prod/late", "v1", "late")
    assert (await _get(site, "/v2/prod/late/manifests/v1"))[0] == 403
    site.store.sign("prod/late", digest, site.ci, f"{site.host}/prod/late:v1")
    deadline = time.monotonic() + 10
    status = 403
    while status == 403 and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        status = (await _get(site, "/v2/prod/late/manifests/v1"))[0]
    assert status == 200


def test_dockerd_pulls_what_ci_signed_and_is_refused_the_rest(site: Site) -> None:
    require("dockerd")
    d = site.digests
    with Dockerd() as docker:
        assert docker.pull(f"{site.host}/prod/signed:v1") == d["signed"]
        assert docker.pull(f"{site.host}/prod/signed@{d['signed']}") == d["signed"]
        assert docker.pull(f"{site.host}/prod/multi:v1") == d["multi"]
        assert docker.pull(f"{site.host}/dev/app:v1") == d["dev"]
        for repo in ("unsigned", "otherkey", "wrongdigest", "half"):
            with pytest.raises(CommandFailed) as failed:
                docker.pull(f"{site.host}/prod/{repo}:v1")
            assert "denied" in str(failed.value).lower(), (repo, str(failed.value)[-400:])


def test_verify_says_why_each_image_is_served_or_refused(site: Site) -> None:
    """``regsidecar verify`` reads the store as the sidecar does and gives the same verdicts,
    platform by platform for an index; exit status 1 when any is refused."""
    argv = [sys.executable, "-m", "regsidecar", "verify", "--json", *site.args]
    argv += ["--listen", site.sidecar.host]  # the identity host: localhost:<port>
    ok = subprocess.run(
        [*argv, f"{site.host}/prod/signed:v1", "prod/multi:v1", "dev/app:v1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
    )
    assert ok.returncode == 0, ok.stderr
    images = json.loads(ok.stdout)["images"]
    assert [i["served"] for i in images] == [True, True, True]
    assert images[0]["reason"].startswith("signed by ") and images[0]["key"].endswith("ci.pub")
    assert [c["served"] for c in images[1]["children"]] == [True, True]
    refused = subprocess.run(
        [*argv, "prod/unsigned:v1", "prod/half:v1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y"},
    )
    assert refused.returncode == 1, refused.stderr
    unsigned, half = json.loads(refused.stdout)["images"]
    assert (unsigned["served"], unsigned["reason"]) == (False, "no signature")
    assert half["served"] is True  # the index is signed, its children are not
    assert [c["served"] for c in half["children"]] == [False, False]
    assert all(c["reason"] == "no signature" for c in half["children"])
