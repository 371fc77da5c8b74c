"""Manifest media types: detect them from stored JSON, and negotiate with ``Accept``.

The store keeps manifest bytes only; like distribution we read the type from the JSON
(``mediaType``, or inferred from its shape) and answer with it as ``Content-Type``.

Accept handling follows distribution's manifest handler:

* an OCI manifest is served only to a client that accepts OCI manifests, an OCI index only to
  one that accepts OCI indexes, otherwise ``MANIFEST_UNKNOWN``;
* a Docker manifest list asked for by *tag* by a client that does not accept manifest lists is
  replaced by its linux/amd64 entry (a schema 2 manifest, which the client must accept);
* schema 2 manifests are served as they are (schema 1 rewriting is not done: it is gone from
  distribution 3 and from every supported client).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from regsidecar.errors import ManifestInvalid, ManifestUnknown

DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_SCHEMA2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

INDEX_TYPES = frozenset({DOCKER_LIST, OCI_INDEX})
MANIFEST_TYPES = frozenset({DOCKER_SCHEMA2, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX})
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # distribution's maxManifestBodySize

DEFAULT_OS = "linux"
DEFAULT_ARCH = "amd64"


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    """What the API needs to know about stored manifest bytes."""

    media_type: str
    # (digest, os, architecture) of each entry of an index; empty for image manifests
    entries: tuple[tuple[str, str, str], ...] = ()


def json_object(payload: bytes, what: str) -> dict[str, Any]:
    """``payload`` parsed as a JSON object, else MANIFEST_INVALID naming ``what``."""
    try:
        doc: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ManifestInvalid(f"{what} is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise ManifestInvalid(f"{what} is not a JSON object")
    return doc


def detect(payload: bytes) -> ManifestInfo:
    """Read the media type (and index entries) from manifest JSON."""
    doc = json_object(payload, "stored manifest")
    media_type = doc.get("mediaType")
    if not isinstance(media_type, str) or not media_type:
        media_type = _infer(doc)
    entries: tuple[tuple[str, str, str], ...] = ()
    manifests = doc.get("manifests")
    if media_type in INDEX_TYPES and isinstance(manifests, list):
        entries = tuple(_entry(m) for m in manifests if isinstance(m, dict))
    return ManifestInfo(media_type, entries)


def _infer(doc: dict[str, Any]) -> str:
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1_SIGNED if "signatures" in doc else DOCKER_SCHEMA1
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc or "layers" in doc:
        return OCI_MANIFEST
    raise ManifestInvalid("cannot tell the manifest's media type")


def _entry(m: dict[str, Any]) -> tuple[str, str, str]:
    platform = m.get("platform") if isinstance(m.get("platform"), dict) else {}
    assert isinstance(platform, dict)
    return (
        str(m.get("digest", "")),
        str(platform.get("os", "")),
        str(platform.get("architecture", "")),
    )


def accepted(accept_headers: Iterable[str]) -> frozenset[str]:
    """The set of media types named in every ``Accept`` header (q-values ignored)."""
    found: set[str] = set()
    for header in accept_headers:
        for part in header.split(","):
            media_type = part.split(";", 1)[0].strip().lower()
            if media_type:
                found.add(media_type)
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class Negotiation:
    """Outcome of Accept handling: serve as is, or serve this platform manifest instead."""

    substitute: str | None = None


def negotiate(info: ManifestInfo, accepts: frozenset[str], *, by_tag: bool) -> Negotiation:
    """Decide what a client with ``accepts`` gets for a manifest of ``info``'s type."""
    mt = info.media_type
    if mt == OCI_MANIFEST and OCI_MANIFEST not in accepts:
        raise ManifestUnknown(
            "OCI manifest found, but accept header does not support OCI manifests"
        )
    if mt == OCI_INDEX and OCI_INDEX not in accepts:
        raise ManifestUnknown("OCI index found, but accept header does not support OCI indexes")
    if by_tag and mt == DOCKER_LIST and DOCKER_LIST not in accepts:
        for digest, os_, arch in info.entries:
            if os_ == DEFAULT_OS and arch == DEFAULT_ARCH:
                return Negotiation(substitute=digest)
        raise ManifestUnknown(
            "manifest list has no linux/amd64 entry for a client without list support"
        )
    return Negotiation()


def check_substitute(info: ManifestInfo, accepts: frozenset[str]) -> None:
    """A list's linux/amd64 entry is only served to a client that takes schema 2."""
    if info.media_type == DOCKER_SCHEMA2 and DOCKER_SCHEMA2 not in accepts:
        raise ManifestInvalid("Schema 2 manifest not supported by client")
