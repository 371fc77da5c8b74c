"""Image identities and the ``signedIdentity`` rules of containers-policy.json(5) (pure).

An identity is a Docker reference in its fully expanded form: ``host[:port]/path[:tag]`` or
``host[:port]/path@digest`` (``busybox`` is ``docker.io/library/busybox``). The image being
served has one (the sidecar's host as its clients name it, the repository, and the tag or
digest asked for); a signature's payload claims one (``docker-reference``). A rule says
which claims accept the image, exactly as containers/image decides:

    matchRepoDigestOrExact  (the default) by tag: the same reference; by digest: the same
                            repository, any tag
    matchExact              the same reference (an image asked for by digest never matches)
    matchRepository         the same repository (what cosign-made signatures need: they name
                            a repository only)
    exactReference R        the claim is R
    exactRepository R       the claim's repository is R
    remapIdentity P -> S    the image's prefix P replaced by S, then matchRepoDigestOrExact

>>> image = parse_identity("localhost:5000/team/app:v1")
>>> matches(Rule("matchRepoDigestOrExact"), image, parse_identity("localhost:5000/team/app:v1"))
True
>>> matches(Rule("matchRepoDigestOrExact"), image, parse_identity("localhost:5000/team/app:v2"))
False
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

RuleType = Literal[
    "matchRepoDigestOrExact",
    "matchExact",
    "matchRepository",
    "exactReference",
    "exactRepository",
    "remapIdentity",
]

_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}")


class InvalidIdentity(ValueError):
    """Not a Docker reference."""


@dataclass(frozen=True, slots=True)
class Identity:
    """A fully expanded Docker reference: ``repository`` includes the host."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        if self.digest:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag}" if self.tag else self.repository


def _is_host(component: str) -> bool:
    return "." in component or ":" in component or component == "localhost"


def parse_identity(text: str) -> Identity:
    """Expand a Docker reference as docker and containers/image do.

    >>> str(parse_identity("busybox"))
    'docker.io/library/busybox'
    >>> str(parse_identity("localhost:5000/app@sha256:" + "a" * 64))[:30]
    'localhost:5000/app@sha256:aaaa'
    """
    if not text or text != text.strip() or any(c.isspace() for c in text):
        raise InvalidIdentity(f"not a Docker reference: {text!r}")
    name, digest = text, None
    if "@" in text:
        name, digest = text.split("@", 1)
        if not _DIGEST.fullmatch(digest):
            raise InvalidIdentity(f"invalid digest in {text!r}")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidIdentity(f"invalid tag in {text!r}")
    parts = name.split("/")
    if len(parts) == 1 or not _is_host(parts[0]):
        parts = ["docker.io", *parts]
    if parts[0] == "docker.io" and len(parts) == 2:
        parts.insert(1, "library")
    path = "/".join(parts[1:])
    if not path or path != path.lower() or any(not p for p in parts[1:]):
        raise InvalidIdentity(f"invalid repository in {text!r}")
    return Identity("/".join(parts), tag, digest)


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``signedIdentity`` requirement (``reference`` / ``repository`` / ``prefix`` and
    ``signed_prefix`` only where its type uses them)."""

    type: RuleType = "matchRepoDigestOrExact"
    reference: str = ""  # exactReference
    repository: str = ""  # exactRepository
    prefix: str = ""  # remapIdentity
    signed_prefix: str = ""  # remapIdentity


def _repo_or_exact(image: Identity, claim: Identity) -> bool:
    if image.tag is not None and image.digest is None:
        return claim == image
    return claim.repository == image.repository


def _remap(image: Identity, prefix: str, signed_prefix: str) -> Identity:
    """``image`` with ``prefix`` (a host[:port], namespace or repository, matched at a path
    boundary of the expanded form) replaced by ``signed_prefix``."""
    repo = image.repository
    if repo == prefix or repo.startswith(prefix + "/"):
        return Identity(signed_prefix + repo[len(prefix) :], image.tag, image.digest)
    return image


def matches(rule: Rule, image: Identity, claim: Identity) -> bool:
    """Whether a signature claiming ``claim`` accepts ``image`` under ``rule``."""
    if rule.type == "matchExact":
        return image.digest is None and image.tag is not None and claim == image
    if rule.type == "matchRepoDigestOrExact":
        return _repo_or_exact(image, claim)
    if rule.type == "matchRepository":
        return claim.repository == image.repository
    if rule.type == "exactReference":
        return claim == parse_identity(rule.reference)
    if rule.type == "exactRepository":
        return claim.repository == parse_identity(rule.repository).repository
    if rule.type == "remapIdentity":
        return _repo_or_exact(_remap(image, rule.prefix, rule.signed_prefix), claim)
    raise ValueError(f"unknown signedIdentity type {rule.type!r}")
