"""Repository names, tags and digests, validated by the distribution spec's grammar.

>>> parse_digest("sha256:" + "a" * 64).hex[:4]
'aaaa'

The grammar is strict on purpose: every component that reaches a storage key has been matched
here, so ``..``, ``%2e%2e`` (decoded before it gets here), absolute paths and NUL cannot escape
the repository's key space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from regsidecar.errors import DigestInvalid, NameInvalid, TagInvalid

# distribution/reference: path-component = alpha-numeric (separator alpha-numeric)*
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST_RE = re.compile(r"([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")
MAX_NAME_LENGTH = 255

# Registered algorithms and the exact shape of their encoded part.
_ALGORITHMS = {
    "sha256": re.compile(r"[a-f0-9]{64}"),
    "sha512": re.compile(r"[a-f0-9]{128}"),
}


@dataclass(frozen=True, slots=True)
class Digest:
    """A validated content digest such as ``sha256:<64 hex>``."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


def parse_name(name: str) -> str:
    """Return ``name`` if it is a valid repository name, else raise :class:`NameInvalid`."""
    if not name or len(name) > MAX_NAME_LENGTH or NAME_RE.fullmatch(name) is None:
        raise NameInvalid(detail={"name": _printable(name)})
    return name


def parse_tag(tag: str) -> str:
    if TAG_RE.fullmatch(tag) is None:
        raise TagInvalid(detail={"tag": _printable(tag)})
    return tag


def parse_digest(value: str) -> Digest:
    """Parse ``algorithm:encoded``; unknown algorithms are rejected (distribution does too)."""
    m = DIGEST_RE.fullmatch(value)
    if m is None:
        raise DigestInvalid("invalid digest format", detail={"digest": _printable(value)})
    algorithm, encoded = m.group(1), m.group(2)
    shape = _ALGORITHMS.get(algorithm)
    if shape is None:
        raise DigestInvalid("unsupported digest algorithm", detail={"digest": _printable(value)})
    if shape.fullmatch(encoded) is None:
        raise DigestInvalid("invalid digest length or characters", detail={"digest": value[:200]})
    return Digest(algorithm, encoded)


def is_digest_like(reference: str) -> bool:
    """A manifest reference containing ':' is a digest (tags cannot contain ':')."""
    return ":" in reference


@dataclass(frozen=True, slots=True)
class Reference:
    """A manifest reference: exactly one of ``tag`` or ``digest``."""

    tag: str | None = None
    digest: Digest | None = None

    def __str__(self) -> str:
        return self.tag if self.tag is not None else str(self.digest)


def parse_reference(reference: str) -> Reference:
    if is_digest_like(reference):
        return Reference(digest=parse_digest(reference))
    return Reference(tag=parse_tag(reference))


def _printable(value: str) -> str:
    """Echo client input back in errors safely: bounded, with control characters escaped."""
    return value[:200].encode("unicode_escape").decode("ascii")
