"""Which manifests a host serves: the policy's rule for a repository, and its verdict (pure).

Rules are tried in order; the first whose ``repositories`` glob matches the repository
decides (no match: ``accept``, today's behaviour)::

    accept      serve anything
    reject      serve nothing
    signed-by   serve a manifest only when a signature made by one of ``keys`` covers its
                digest (the payload's docker-manifest-digest) and names an identity the
                rule's signedIdentity accepts (identity.py)

A verdict is reached from facts gathered elsewhere (the signatures found for the digest,
already fetched): :func:`evaluate` does no I/O, so every reason a manifest is refused is
unit-tested here.

>>> evaluate(PolicyRule("*", "reject"), (), Identity("localhost:5000/app", "v1"), "sha256:x", [])
Verdict(accepted=False, reason='the policy rejects this repository', rule='*', key=None)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from regsidecar.signing.identity import Identity, InvalidIdentity, Rule, matches, parse_identity
from regsidecar.signing.payload import InvalidSignature, PublicKey, check_signature, parse_payload

RuleKind = Literal["accept", "reject", "signed-by"]


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One rule: a repository glob, what it requires, and (signed-by) the key files."""

    repositories: str
    rule: RuleKind
    keys: tuple[str, ...] = ()
    identity: Rule = field(default_factory=Rule)


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature found for a digest: its payload bytes and base64 signature, and where
    it was found (for reasons: ``tag sha256-….sig`` or ``referrer sha256:…``)."""

    payload: bytes
    signature: str
    source: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    accepted: bool
    reason: str
    rule: str  # the matching rule's repositories glob ("" : no rule, accepted)
    key: str | None = None  # the key file whose signature accepted it


def rule_for(rules: Sequence[PolicyRule], repository: str) -> PolicyRule | None:
    """The first rule whose glob matches ``repository`` (fnmatch, case-sensitive)."""
    for r in rules:
        if fnmatch.fnmatchcase(repository, r.repositories):
            return r
    return None


def evaluate(
    rule: PolicyRule | None,
    keys: Sequence[tuple[str, PublicKey]],
    image: Identity,
    digest: str,
    signatures: Sequence[Signature],
) -> Verdict:
    """The verdict on serving the manifest ``digest`` as ``image`` under ``rule``; ``keys``
    are the rule's keys, loaded, with their file names."""
    if rule is None:
        return Verdict(True, "no policy rule for this repository", "")
    if rule.rule == "accept":
        return Verdict(True, "the policy accepts this repository", rule.repositories)
    if rule.rule == "reject":
        return Verdict(False, "the policy rejects this repository", rule.repositories)
    if not signatures:
        return Verdict(False, "no signature", rule.repositories)
    # Why each signature did not accept the image, ranked: the verdict names the most
    # telling (another digest, another image, an invalid payload, then an unknown key).
    reasons: list[tuple[int, str]] = []
    for sig in signatures:
        signer = _signer(keys, sig)
        if signer is None:
            reasons.append((3, f"not signed by a policy key ({sig.source})"))
            continue
        try:
            payload = parse_payload(sig.payload)
        except InvalidSignature as exc:
            reasons.append((2, f"invalid signature payload ({sig.source}): {exc}"))
            continue
        if payload.manifest_digest != digest:
            reasons.append((0, f"the signature covers another digest, {payload.manifest_digest}"))
            continue
        try:
            claim = parse_identity(payload.docker_reference)
        except InvalidIdentity as exc:
            reasons.append((2, f"invalid signed identity: {exc}"))
            continue
        if not matches(rule.identity, image, claim):
            reasons.append(
                (
                    1,
                    f"the signature names another image, {payload.docker_reference} "
                    f"(signedIdentity {rule.identity.type})",
                )
            )
            continue
        return Verdict(True, f"signed by {signer} ({sig.source})", rule.repositories, signer)
    reasons.sort()
    return Verdict(False, reasons[0][1], rule.repositories)


def _signer(keys: Sequence[tuple[str, PublicKey]], sig: Signature) -> str | None:
    for name, key in keys:
        try:
            check_signature(key, sig.payload, sig.signature)
        except InvalidSignature:
            continue
        return name
    return None
