"""The policy at the pull point: find a manifest's signatures in the store, judge, remember.

The I/O edge of :mod:`regsidecar.signing.policy` (which judges without I/O). For a manifest
``name@digest`` served as ``<registry>/<name>[:tag]``:

1. the rule for ``name`` (first glob match; none: accept);
2. for ``signed-by``, the signatures of ``digest`` as real tools leave them:
   - the cosign / containers-image "simple signing" companion: the manifest tagged
     ``sha256-<hex>.sig`` in the same repository, each layer of media type
     ``application/vnd.dev.cosign.simplesigning.v1+json`` a payload, its
     ``dev.cosignproject.cosign/signature`` annotation the signature (base64);
   - the same manifests found through the referrers of ``digest`` (OCI 1.1: pushed with a
     ``subject``), as this registry stores them;
3. the verdict (:func:`regsidecar.signing.policy.evaluate`), cached per (repository, digest,
   identity) for ``cache.tag_ttl_s``: a signature added later takes effect within a tag TTL.
   When the store fails while looking, the last verdict (within ``cache.stale_if_error_s``)
   stands: an outage never turns a verified image into a refusal.

A manifest that is itself a signature (every layer a simple-signing payload) is served
without one: it runs nothing, and verifiers read it through this registry.

>>> enforcer = Enforcer.from_settings(settings, finder, metrics)  # doctest: +SKIP
>>> verdict = await enforcer.check("prod/app", digest, tag="v1")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cachetools import LRUCache, TTLCache

from regsidecar.config import PolicyRuleSettings, Settings
from regsidecar.errors import ConfigError, Denied, NotFound, OCIError, StorageError, Unavailable
from regsidecar.metrics import Metrics
from regsidecar.oci.reference import Digest, parse_digest
from regsidecar.signing.identity import Identity, InvalidIdentity, Rule, parse_identity
from regsidecar.signing.payload import (
    MAX_PAYLOAD_BYTES,
    PAYLOAD_MEDIA_TYPE,
    SIGNATURE_ANNOTATION,
    PublicKey,
    load_public_key,
)
from regsidecar.signing.policy import PolicyRule, Signature, Verdict, evaluate, rule_for

log = logging.getLogger(__name__)

MAX_SIGNATURES = 64  # payloads read per manifest at most (a repository full of junk is no DoS)


def signature_tag(digest: Digest) -> str:
    """The cosign companion tag of ``digest``: ``sha256-<hex>.sig``."""
    return f"{digest.algorithm}-{digest.hex}.sig"


def signature_layers(payload: bytes) -> list[tuple[Digest, str]] | None:
    """(payload digest, base64 signature) of each simple-signing layer of a manifest, or None
    when the manifest is not a signature manifest (some layer is something else)."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list) or not layers:
        return None
    out = []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != PAYLOAD_MEDIA_TYPE:
            return None
        annotations = layer.get("annotations")
        sig = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        try:
            digest = parse_digest(str(layer.get("digest", "")))
        except OCIError:
            continue
        if isinstance(sig, str) and sig:
            out.append((digest, sig))
    return out


class SignatureStore(Protocol):
    """What the enforcer reads from the registry (the Registry implements it)."""

    async def tag_digest(self, name: str, tag: str) -> Digest | None:
        """The digest ``name:tag`` points at, None if no such tag."""
        ...

    async def manifest_bytes(self, name: str, digest: Digest) -> bytes: ...

    async def blob_bytes(self, digest: Digest, max_bytes: int) -> bytes: ...

    async def referrer_digests(self, name: str, subject: Digest) -> list[Digest]: ...


@dataclass(frozen=True, slots=True)
class _Judged:
    verdict: Verdict
    at: float  # wall time


class Enforcer:
    """The policy of one sidecar: rules with their keys loaded, and the verdict caches."""

    def __init__(
        self,
        rules: Sequence[PolicyRule],
        keys: dict[str, PublicKey],
        registry: str,
        store: SignatureStore,
        metrics: Metrics,
        *,
        ttl_s: float,
        stale_s: float,
        now: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.rules = list(rules)
        self.keys = keys
        self.registry = registry
        self.store = store
        self.metrics = metrics
        self._stale_s = stale_s
        self._wall = wall
        self._fresh: TTLCache[tuple[str, str, str], Verdict] = TTLCache(65536, ttl_s, timer=now)
        self._known: LRUCache[tuple[str, str, str], _Judged] = LRUCache(65536)

    @classmethod
    def from_settings(
        cls, settings: Settings, store: SignatureStore, metrics: Metrics
    ) -> Enforcer | None:
        """None when the policy has no rules (everything is served, as before)."""
        p = settings.policy
        if not p.rules:
            return None
        keys: dict[str, PublicKey] = {}
        rules = []
        for r in p.rules:
            for path in r.keys:
                if path not in keys:
                    keys[path] = load_key_file(path)
            rules.append(_rule(r))
        registry = p.registry or f"localhost:{settings.port}"
        c = settings.cache
        return cls(
            rules, keys, registry, store, metrics, ttl_s=c.tag_ttl_s, stale_s=c.stale_if_error_s
        )

    def image(self, name: str, tag: str | None, digest: Digest) -> Identity:
        """The reference a client pulled: ``<registry>/<name>:<tag>``, or ``@<digest>``."""
        text = f"{self.registry}/{name}" + (f":{tag}" if tag else f"@{digest}")
        return parse_identity(text)

    async def check(
        self,
        name: str,
        digest: Digest,
        *,
        tag: str | None,
        payload: bytes,
        signatures_in: str | None = None,
    ) -> Verdict:
        """The verdict on serving ``name@digest`` (asked by ``tag`` or by digest), with the
        signatures found in ``signatures_in`` (default ``name``; a promotion judges the
        target with the source's signatures). :meth:`require` turns a refusal into 403."""
        rule = rule_for(self.rules, name)
        if rule is None or rule.rule != "signed-by":
            # accept / reject / no rule: the image's name plays no part.
            verdict = evaluate(rule, (), Identity(name), str(digest), ())
            self.metrics.policy_verdicts.labels(_outcome(verdict)).inc()
            return verdict
        where = signatures_in or name
        key = (name, str(digest), f"{tag or ''}@{where}")
        cached = self._fresh.get(key)
        if cached is not None:
            return cached  # before any parsing: this is every pull of a signed image
        if signature_layers(payload) is not None:
            verdict = Verdict(True, "a signature manifest (runs nothing)", rule.repositories)
            self._fresh[key] = verdict
            self.metrics.policy_verdicts.labels("signature-artifact").inc()
            return verdict
        try:
            image = self.image(name, tag, digest)
        except InvalidIdentity as exc:
            verdict = Verdict(False, f"not a Docker reference: {exc}", rule.repositories)
            self.metrics.policy_verdicts.labels("refused").inc()
            return verdict
        try:
            signatures = await self._signatures(where, digest)
        except (StorageError, Unavailable) as exc:
            known = self._known.get(key)
            if known is None or self._wall() - known.at > self._stale_s:
                raise
            log.warning(
                "store unavailable; the last policy verdict stands",
                extra={"image": str(image), "error": str(exc)[:200]},
            )
            self.metrics.stale_serves.labels("policy").inc()
            self._fresh[key] = known.verdict
            return known.verdict
        keys = [(path, self.keys[path]) for path in rule.keys]
        verdict = evaluate(rule, keys, image, str(digest), signatures)
        self._fresh[key] = verdict
        self._known[key] = _Judged(verdict, self._wall())
        self.metrics.policy_verdicts.labels(_outcome(verdict)).inc()
        if not verdict.accepted:
            log.warning(
                "policy refused a manifest",
                extra={"image": str(image), "digest": str(digest), "reason": verdict.reason},
            )
        return verdict

    async def require(
        self,
        name: str,
        digest: Digest,
        *,
        tag: str | None,
        payload: bytes,
        signatures_in: str | None = None,
    ) -> None:
        verdict = await self.check(
            name, digest, tag=tag, payload=payload, signatures_in=signatures_in
        )
        if not verdict.accepted:
            raise Denied(
                f"the signature policy refuses {name}@{digest}: {verdict.reason}",
                detail={"policy": verdict.rule, "reason": verdict.reason, "digest": str(digest)},
            )

    async def _signatures(self, name: str, digest: Digest) -> list[Signature]:
        """Every simple-signing signature of ``digest``: its companion tag's, then its
        referrers' (at most MAX_SIGNATURES payloads read)."""
        found: list[tuple[Digest, str, str]] = []
        manifests: list[tuple[Digest, str]] = []
        companion = await self.store.tag_digest(name, signature_tag(digest))
        if companion is not None:
            manifests.append((companion, f"tag {signature_tag(digest)}"))
        for ref in await self.store.referrer_digests(name, digest):
            if ref != companion:
                manifests.append((ref, f"referrer {ref}"))
        for m, source in manifests:
            try:
                payload = await self.store.manifest_bytes(name, m)
            except NotFound:
                continue
            for layer, sig in signature_layers(payload) or []:
                found.append((layer, sig, source))
        out = []
        for layer, sig, source in found[:MAX_SIGNATURES]:
            try:
                data = await self.store.blob_bytes(layer, MAX_PAYLOAD_BYTES)
            except NotFound:
                continue
            out.append(Signature(data, sig, source))
        return out


def _outcome(verdict: Verdict) -> str:
    if verdict.rule == "":
        return "no-rule"
    return "accepted" if verdict.accepted else "refused"


def _rule(r: PolicyRuleSettings) -> PolicyRule:
    i = r.signed_identity
    return PolicyRule(
        r.repositories,
        r.rule,
        tuple(r.keys),
        Rule(i.type, i.reference, i.repository, i.prefix, i.signed_prefix),
    )


def load_key_file(path: str) -> PublicKey:
    """The public key in the PEM file ``path``; ConfigError saying why not."""
    try:
        with open(path, "rb") as f:
            return load_public_key(f.read())
    except OSError as exc:
        raise ConfigError("policy.rules.keys", f"{path}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ConfigError("policy.rules.keys", f"{path}: {exc}") from exc
