"""Sigstore "simple signing" payloads and their signatures (pure: bytes in, verdicts out).

A signature, as skopeo/podman ``--sign-by-sigstore-private-key`` and cosign write it, is one
layer of a companion manifest: the layer's blob is the **payload** (JSON), its annotation
``dev.cosignproject.cosign/signature`` the base64 of the signature over the payload bytes
(ECDSA over SHA-256, ASN.1 DER; or Ed25519). The payload::

    {"critical": {"identity": {"docker-reference": "registry.example/app:v1"},
                  "image": {"docker-manifest-digest": "sha256:..."},
                  "type": "cosign container image signature"},
     "optional": {"creator": "...", "timestamp": 1700000000}}      (or "optional": null)

Parsed as strictly as containers/image does (``signature/internal/sigstore_payload.go``):
``critical``, ``image`` and ``identity`` must have exactly their fields, once each; the type
must be the cosign one; ``optional`` may be null or any object (only ``creator`` and an
integral ``timestamp`` are read). The signature is checked before the payload is parsed, so
nothing an unsigned payload says is ever acted on.

>>> parse_payload(b'{"critical": {"identity": {"docker-reference": "r/a"}, '
...     b'"image": {"docker-manifest-digest": "sha256:' + b"a" * 64 + b'"}, '
...     b'"type": "cosign container image signature"}, "optional": null}').docker_reference
'r/a'
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature as _BadSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

SIGNATURE_TYPE = "cosign container image signature"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
#: A payload is a few hundred bytes; anything larger is not one.
MAX_PAYLOAD_BYTES = 64 * 1024

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class InvalidSignature(Exception):
    """The signature does not verify, or its payload is not a valid simple-signing payload."""


@dataclass(frozen=True, slots=True)
class Payload:
    """What a verified payload says (trusted only after :func:`verify_payload`)."""

    manifest_digest: str
    docker_reference: str
    creator: str | None = None
    timestamp: int | None = None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidSignature(f"duplicate field {key!r} in the payload")
        out[key] = value
    return out


def _exact(obj: Any, fields: Sequence[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InvalidSignature(f"{where} is not a JSON object")
    if set(obj) != set(fields):
        raise InvalidSignature(f"{where} must have exactly the fields {sorted(fields)}")
    return obj


def parse_payload(data: bytes) -> Payload:
    """The payload's fields; InvalidSignature when it is not exactly a simple-signing payload."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise InvalidSignature("payload too large")
    try:
        doc = json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidSignature(f"payload is not JSON: {exc}") from exc
    top = _exact(doc, ("critical", "optional"), "the payload")
    critical = _exact(top["critical"], ("type", "image", "identity"), "critical")
    if critical["type"] != SIGNATURE_TYPE:
        raise InvalidSignature(f"unrecognized signature type {critical['type']!r}")
    image = _exact(critical["image"], ("docker-manifest-digest",), "critical.image")
    identity = _exact(critical["identity"], ("docker-reference",), "critical.identity")
    digest, reference = image["docker-manifest-digest"], identity["docker-reference"]
    if not isinstance(digest, str) or not isinstance(reference, str):
        raise InvalidSignature("docker-manifest-digest and docker-reference must be strings")
    creator: str | None = None
    timestamp: int | None = None
    optional = top["optional"]
    if optional is not None:
        if not isinstance(optional, dict):
            raise InvalidSignature("optional is not a JSON object")
        if isinstance(optional.get("creator"), str):
            creator = optional["creator"]
        ts = optional.get("timestamp")
        if ts is not None:
            if isinstance(ts, bool) or not isinstance(ts, int | float) or int(ts) != ts:
                raise InvalidSignature("optional.timestamp is not an integer")
            timestamp = int(ts)
    return Payload(digest, reference, creator, timestamp)


def load_public_key(pem: bytes) -> PublicKey:
    """An ECDSA P-256 or Ed25519 public key from PEM (``-----BEGIN PUBLIC KEY-----``, as
    ``cosign generate-key-pair`` writes ``cosign.pub``); ValueError for anything else."""
    key = serialization.load_pem_public_key(pem)
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ValueError(f"ECDSA keys must be P-256, not {key.curve.name}")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise ValueError(f"unsupported public key type {type(key).__name__}")


def check_signature(key: PublicKey, payload: bytes, b64_signature: str) -> None:
    """Raise InvalidSignature unless ``b64_signature`` is ``key``'s signature of ``payload``."""
    try:
        raw = base64.b64decode(b64_signature, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSignature(f"the signature is not base64: {exc}") from exc
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, payload, ec.ECDSA(hashes.SHA256()))
        else:
            key.verify(raw, payload)
    except _BadSignature as exc:
        raise InvalidSignature("cryptographic signature verification failed") from exc


def verify_payload(keys: Sequence[PublicKey], payload: bytes, b64_signature: str) -> Payload:
    """The payload, once one of ``keys`` verifies its signature (checked before parsing)."""
    if not keys:
        raise InvalidSignature("no keys to verify with")
    for key in keys:
        try:
            check_signature(key, payload, b64_signature)
        except InvalidSignature:
            continue
        return parse_payload(payload)
    raise InvalidSignature("not signed by any of the policy's keys")
