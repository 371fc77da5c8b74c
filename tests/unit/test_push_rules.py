"""Pure rules of the write side: pushed-manifest checks, chunk ranges, tag protection,
manifest digests and promotion targets. No I/O."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from regsidecar.config import TagRule
from regsidecar.errors import Denied, DigestInvalid, ManifestInvalid, OCIError, RangeInvalid
from regsidecar.oci import mediatypes
from regsidecar.oci.manifest import parse_pushed
from regsidecar.oci.ranges import ByteRange, parse_chunk_range
from regsidecar.oci.reference import Digest, Reference, parse_digest
from regsidecar.push import (
    PromotionInvalid,
    check_tag_move,
    manifest_digest,
    parse_promotion,
    tag_rule,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha512:" + "3" * 128


def desc(digest: str, media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip", **kw: Any):
    return {"mediaType": media_type, "digest": digest, "size": 10, **kw}


def image(**kw: Any) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": desc(D1, "application/vnd.oci.image.config.v1+json"),
        "layers": [desc(D2), desc(D3)],
        **kw,
    }
    return json.dumps(doc).encode()


def test_image_manifest_needs_config_and_layers() -> None:
    m = parse_pushed(image(), mediatypes.OCI_MANIFEST)
    assert m.media_type == mediatypes.OCI_MANIFEST
    assert [str(d) for d in m.blobs] == [D1, D2, D3]
    assert m.manifests == ()
    assert m.artifact_type == "application/vnd.oci.image.config.v1+json"
    assert m.subject is None


def test_index_needs_its_children() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_INDEX,
        "manifests": [desc(D1, mediatypes.OCI_MANIFEST), desc(D2, mediatypes.OCI_MANIFEST)],
        "artifactType": "application/x-sbom",
    }
    m = parse_pushed(json.dumps(doc).encode(), mediatypes.OCI_INDEX)
    assert [str(d) for d in m.manifests] == [D1, D2]
    assert m.blobs == ()
    assert m.artifact_type == "application/x-sbom"


def test_subject_and_annotations_are_read() -> None:
    m = parse_pushed(
        image(
            subject=desc(D3, mediatypes.OCI_MANIFEST),
            artifactType="application/x-sig",
            annotations={"a": "b"},
        ),
        None,
    )
    assert m.subject is not None and str(m.subject.digest) == D3
    assert m.artifact_type == "application/x-sig"
    assert m.annotations == {"a": "b"}


def test_foreign_layers_with_urls_are_not_required() -> None:
    foreign = desc(
        D3, "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", urls=["https://x"]
    )
    m = parse_pushed(image(layers=[desc(D2), foreign]), None)
    assert [str(d) for d in m.blobs] == [D1, D2]


def test_content_type_may_be_absent_or_generic() -> None:
    for ctype in (None, "", "application/json", f"{mediatypes.OCI_MANIFEST}; charset=utf-8"):
        assert parse_pushed(image(), ctype).media_type == mediatypes.OCI_MANIFEST


@pytest.mark.parametrize(
    ("payload", "ctype", "why"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[]", None, "not a JSON object"),
        (image(), mediatypes.DOCKER_SCHEMA2, "does not match"),
        (image(schemaVersion=1), None, "schema 1"),
        (image(schemaVersion=3), None, "schemaVersion must be 2"),
        (image(mediaType="application/x-nope"), None, "unsupported"),
        (image(config="nope"), None, "config is not a descriptor"),
        (image(layers=[desc("sha256:abc")]), None, "layers[0].digest is invalid"),
        (image(layers=[{**desc(D2), "size": -1}]), None, "size"),
        (image(layers=[{**desc(D2), "size": True}]), None, "size"),
        (image(annotations={"a": 1}), None, "annotations"),
        (
            json.dumps({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX}).encode(),
            None,
            "manifests list",
        ),
        (
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": mediatypes.DOCKER_SCHEMA2,
                    "config": desc(D1),
                    "layers": [],
                }
            ).encode(),
            None,
            "at least one layer",
        ),
    ],
)
def test_invalid_manifests_are_refused(payload: bytes, ctype: str | None, why: str) -> None:
    with pytest.raises(ManifestInvalid) as err:
        parse_pushed(payload, ctype)
    assert why in err.value.message


def test_chunk_ranges() -> None:
    assert parse_chunk_range("0-1023") == ByteRange(0, 1023)
    assert parse_chunk_range("bytes 1024-2047/*") == ByteRange(1024, 2047)
    assert parse_chunk_range("bytes=5-5") == ByteRange(5, 5)
    for bad in ("", "1-", "-5", "5-4", "a-b", "0-1,2-3", "1" * 20 + "-" + "1" * 20):
        with pytest.raises(RangeInvalid):
            parse_chunk_range(bad)
    assert RangeInvalid(None).status == 416


RULES = [
    TagRule(tags="v*", rule="immutable"),
    TagRule(tags="production", rule="promote-only", repositories="prod/*"),
]


def test_tag_rules_match_tag_and_repository_globs() -> None:
    assert tag_rule(RULES, "team/app", "v1.2") == "immutable"
    assert tag_rule(RULES, "prod/app", "production") == "promote-only"
    assert tag_rule(RULES, "team/app", "production") is None
    assert tag_rule(RULES, "team/app", "latest") is None
    assert tag_rule(RULES, "team/app", "V1") is None  # case-sensitive


def test_tag_moves_against_rules() -> None:
    a, b = parse_digest(D1), parse_digest(D2)
    check_tag_move("immutable", "v1", None, a, promotion=False)  # first write
    check_tag_move("immutable", "v1", a, a, promotion=False)  # same digest again
    with pytest.raises(Denied, match="immutable"):
        check_tag_move("immutable", "v1", a, b, promotion=False)
    with pytest.raises(Denied, match="immutable"):
        check_tag_move("immutable", "v1", a, b, promotion=True)
    with pytest.raises(Denied, match="immutable"):
        check_tag_move("immutable", "v1", a, None, promotion=False)  # delete
    with pytest.raises(Denied, match="promotion"):
        check_tag_move("promote-only", "production", None, a, promotion=False)
    check_tag_move("promote-only", "production", a, b, promotion=True)
    check_tag_move("promote-only", "production", a, a, promotion=False)
    check_tag_move(None, "latest", a, b, promotion=False)


def test_manifest_digest_follows_the_reference() -> None:
    body = b'{"schemaVersion":2}'
    assert manifest_digest(body, Reference(tag="x")) == Digest(
        "sha256", hashlib.sha256(body).hexdigest()
    )
    sha512 = Digest("sha512", hashlib.sha512(body).hexdigest())
    assert manifest_digest(body, Reference(digest=sha512)) == sha512
    with pytest.raises(DigestInvalid):
        manifest_digest(body + b" ", Reference(digest=sha512))


def test_promotion_targets() -> None:
    (name, digest), targets = parse_promotion(f"team/app@{D1}", ["qa", "prod/app:1.0"])
    with pytest.raises(PromotionInvalid):
        parse_promotion("team/app", ["qa"])
    assert (name, str(digest)) == ("team/app", D1)
    assert targets == [("team/app", "qa"), ("prod/app", "1.0")]
    for source, tags in (
        ("team/app:v1", ["qa"]),
        (f"team/app@{D1}", []),
        (f"team/app@{D1}", [f"app@{D2}"]),
        (f"team/app@{D1}", ["Bad/Repo:qa"]),
        (f"team/app@{D1}", "qa"),
    ):
        with pytest.raises(OCIError):
            parse_promotion(source, tags)
