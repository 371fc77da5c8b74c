"""Simple-signing payloads, their signatures and signedIdentity matching (pure)."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from regsidecar.signing.identity import InvalidIdentity, Rule, matches, parse_identity
from regsidecar.signing.payload import (
    InvalidSignature,
    load_public_key,
    parse_payload,
    verify_payload,
)
from regsidecar.signing.policy import PolicyRule, Signature, evaluate, rule_for

DIGEST = "sha256:" + "ab" * 32


def payload(digest: str = DIGEST, ref: str = "localhost:5000/app:v1", **extra: object) -> bytes:
    doc: dict[str, object] = {
        "critical": {
            "identity": {"docker-reference": ref},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": {"creator": "test", "timestamp": 1700000000},
    }
    doc.update(extra)
    return json.dumps(doc).encode()


def sign_ec(key: ec.EllipticCurvePrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()


def pem(public: object) -> bytes:
    return public.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_an_ecdsa_p256_signature_verifies_and_the_payload_is_read() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    data = payload()
    got = verify_payload([load_public_key(pem(key.public_key()))], data, sign_ec(key, data))
    assert (got.manifest_digest, got.docker_reference) == (DIGEST, "localhost:5000/app:v1")
    assert (got.creator, got.timestamp) == ("test", 1700000000)


def test_a_wrong_key_a_changed_payload_or_garbage_does_not_verify() -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    data = payload()
    sig = sign_ec(key, data)
    wrong = [load_public_key(pem(other.public_key()))]
    with pytest.raises(InvalidSignature, match="not signed by any"):
        verify_payload(wrong, data, sig)
    right = [load_public_key(pem(other.public_key())), load_public_key(pem(key.public_key()))]
    assert verify_payload(right, data, sig).manifest_digest == DIGEST  # any listed key will do
    with pytest.raises(InvalidSignature):
        verify_payload(right, data.replace(b"v1", b"v2"), sig)
    with pytest.raises(InvalidSignature):
        verify_payload(right, data, "not base64!")
    with pytest.raises(InvalidSignature, match="no keys"):
        verify_payload([], data, sig)


def test_ed25519_keys_verify_and_other_curves_are_refused() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    data = payload()
    sig = base64.b64encode(key.sign(data)).decode()
    assert verify_payload([load_public_key(pem(key.public_key()))], data, sig)
    with pytest.raises(ValueError, match="P-256"):
        load_public_key(pem(ec.generate_private_key(ec.SECP384R1()).public_key()))


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"not json", "not JSON"),
        (payload(extra_field=1), "exactly the fields"),
        (payload().replace(b'"image"', b'"images"'), "exactly the fields"),
        (payload().replace(b"cosign container image signature", b"other"), "unrecognized"),
        (payload().replace(b'"optional": {', b'"optional": 1, "x": {'), "exactly the fields"),
        (
            b'{"critical": {"type": "cosign container image signature", "type": "x", '
            b'"image": {}, "identity": {}}, "optional": null}',
            "duplicate",
        ),
        (payload().replace(b"1700000000", b"1700000000.5"), "not an integer"),
        (payload(digest=7), "must be strings"),  # type: ignore[arg-type]
    ],
)
def test_payloads_are_parsed_as_strictly_as_containers_image_does(data: bytes, why: str) -> None:
    with pytest.raises(InvalidSignature, match=why):
        parse_payload(data)


def test_optional_may_be_null_and_carry_other_fields() -> None:
    doc = json.loads(payload())
    doc["optional"] = None
    assert parse_payload(json.dumps(doc).encode()).creator is None
    doc["optional"] = {"anything": [1, 2], "timestamp": 5.0}
    assert parse_payload(json.dumps(doc).encode()).timestamp == 5


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("busybox", "docker.io/library/busybox"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("team/app", "docker.io/team/app"),
        ("localhost/app", "localhost/app"),
        ("localhost:5000/team/app:v1", "localhost:5000/team/app:v1"),
        ("registry.example/a/b/c", "registry.example/a/b/c"),
        (f"registry.example/app@{DIGEST}", f"registry.example/app@{DIGEST}"),
    ],
)
def test_references_expand_as_docker_does(text: str, expanded: str) -> None:
    assert str(parse_identity(text)) == expanded


@pytest.mark.parametrize("text", ["", " app", "App/Upper", "app:", "app@sha256:xyz", "a//b"])
def test_bad_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidIdentity):
        parse_identity(text)


def test_signed_identity_rules_follow_containers_policy_json() -> None:
    by_tag = parse_identity("localhost:5000/team/app:v1")
    by_digest = parse_identity(f"localhost:5000/team/app@{DIGEST}")
    same = parse_identity("localhost:5000/team/app:v1")
    other_tag = parse_identity("localhost:5000/team/app:v2")
    repo_only = parse_identity("localhost:5000/team/app")  # what cosign writes
    elsewhere = parse_identity("ci.example:5000/team/app:v1")
    default = Rule()
    assert matches(default, by_tag, same) and not matches(default, by_tag, other_tag)
    assert matches(default, by_digest, other_tag)  # by digest: the repository suffices
    assert not matches(default, by_tag, repo_only)
    assert matches(Rule("matchExact"), by_tag, same)
    assert not matches(Rule("matchExact"), by_digest, same)
    assert matches(Rule("matchRepository"), by_tag, repo_only)
    assert matches(Rule("matchRepository"), by_tag, other_tag)
    assert not matches(Rule("matchRepository"), by_tag, elsewhere)
    assert matches(
        Rule("exactReference", reference="ci.example:5000/team/app:v1"), by_tag, elsewhere
    )
    assert matches(
        Rule("exactRepository", repository="ci.example:5000/team/app"), by_tag, elsewhere
    )
    remap = Rule("remapIdentity", prefix="localhost:5000", signed_prefix="ci.example:5000")
    assert matches(remap, by_tag, elsewhere)
    assert not matches(remap, by_tag, same)
    # a prefix matches at a path boundary only
    apple = parse_identity("localhost:5000/team/apple:v1")
    narrow = Rule(
        "remapIdentity", prefix="localhost:5000/team/app", signed_prefix="ci.example:5000/x"
    )
    assert matches(narrow, apple, apple) and not matches(
        narrow, apple, parse_identity("ci.example:5000/xle:v1")
    )


# -- the policy's verdicts -----------------------------------------------------------------


def _keys() -> tuple[ec.EllipticCurvePrivateKey, list[tuple[str, object]]]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, [("ci.pub", load_public_key(pem(key.public_key())))]


def test_the_first_matching_rule_decides_and_no_rule_accepts() -> None:
    rules = [PolicyRule("prod/*", "signed-by", ("ci.pub",)), PolicyRule("*", "reject")]
    assert rule_for(rules, "prod/app") is rules[0]
    assert rule_for(rules, "dev/app") is rules[1]
    assert rule_for([], "app") is None
    image = parse_identity("localhost:5000/dev/app:v1")
    assert evaluate(None, [], image, DIGEST, []).accepted
    assert evaluate(PolicyRule("*", "accept"), [], image, DIGEST, []).accepted
    verdict = evaluate(rules[1], [], image, DIGEST, [])
    assert (verdict.accepted, verdict.reason, verdict.rule) == (
        False,
        "the policy rejects this repository",
        "*",
    )


def test_signed_by_accepts_a_valid_signature_and_names_the_reason_otherwise() -> None:
    key, keys = _keys()
    stranger = ec.generate_private_key(ec.SECP256R1())
    rule = PolicyRule("*", "signed-by", ("ci.pub",))
    image = parse_identity("localhost:5000/app:v1")

    def sig(data: bytes, by: ec.EllipticCurvePrivateKey = key) -> Signature:
        return Signature(data, sign_ec(by, data), "tag sha256-ab.sig")

    good = sig(payload())
    ok = evaluate(rule, keys, image, DIGEST, [good])  # type: ignore[arg-type]
    assert (ok.accepted, ok.key) == (True, "ci.pub")
    assert evaluate(rule, keys, image, DIGEST, []).reason == "no signature"  # type: ignore[arg-type]
    wrong_key = evaluate(rule, keys, image, DIGEST, [sig(payload(), stranger)])  # type: ignore[arg-type]
    assert wrong_key.reason.startswith("not signed by a policy key")
    other_digest = "sha256:" + "cd" * 32
    moved = evaluate(rule, keys, image, DIGEST, [sig(payload(digest=other_digest))])  # type: ignore[arg-type]
    assert moved.reason == f"the signature covers another digest, {other_digest}"
    renamed = evaluate(rule, keys, image, DIGEST, [sig(payload(ref="localhost:5000/app:v2"))])  # type: ignore[arg-type]
    assert renamed.reason.startswith("the signature names another image, localhost:5000/app:v2")
    # several signatures: one good one is enough; the reason names the most telling failure
    mixed = [sig(payload(), stranger), sig(payload(digest=other_digest)), good]
    assert evaluate(rule, keys, image, DIGEST, mixed).accepted  # type: ignore[arg-type]
    bad = [sig(payload(), stranger), sig(payload(digest=other_digest))]
    assert "another digest" in evaluate(rule, keys, image, DIGEST, bad).reason  # type: ignore[arg-type]
