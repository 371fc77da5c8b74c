"""Check a pushed manifest before anything is written: shape, media type, what it references.

>>> m = parse_pushed(payload, "application/vnd.oci.image.manifest.v1+json")  # doctest: +SKIP
>>> [str(d) for d in m.blobs]  # config and layers: must be in the repository already
['sha256:...', 'sha256:...']

Like distribution's manifest handlers, a manifest is refused (``MANIFEST_INVALID``) if it is
not a JSON object of a known schema 2 / OCI type, if its ``mediaType`` and the request's
``Content-Type`` disagree, or if a descriptor is malformed; the caller then checks that every
blob (:attr:`PushedManifest.blobs`) and child manifest (:attr:`PushedManifest.manifests`) is in
the repository (``MANIFEST_BLOB_UNKNOWN``). A ``subject`` need not exist (OCI 1.1: a referrer
may be pushed before its subject).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from regsidecar.errors import DigestInvalid, ManifestInvalid
from regsidecar.oci import mediatypes
from regsidecar.oci.reference import Digest, parse_digest

# Layers a client fetches from elsewhere (their ``urls``): distribution does not ask for them.
_FOREIGN = (
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.",
)
_ACCEPTED = mediatypes.MANIFEST_TYPES


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None
    urls: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.artifact_type:
            doc["artifactType"] = self.artifact_type
        if self.annotations:
            doc["annotations"] = self.annotations
        return doc


@dataclass(frozen=True, slots=True)
class PushedManifest:
    """A validated manifest and the objects it needs."""

    media_type: str
    blobs: tuple[Digest, ...] = ()  # config + layers, to be linked in the repository
    manifests: tuple[Digest, ...] = ()  # children of an index, to be in the repository
    subject: Descriptor | None = None
    # The referrers API's artifactType: the manifest's own, else (image manifests) the
    # config's media type.
    artifact_type: str | None = None
    annotations: dict[str, str] | None = field(default=None)


def content_type(header: str | None) -> str:
    """The media type of a Content-Type header, without parameters, lower-cased."""
    return (header or "").split(";", 1)[0].strip().lower()


def parse_pushed(payload: bytes, header_type: str | None) -> PushedManifest:
    """Validate ``payload`` as pushed with Content-Type ``header_type``."""
    doc = mediatypes.json_object(payload, "manifest")
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestInvalid("mediaType must be a string")
    sent = content_type(header_type)
    if sent in ("", "application/json", "application/octet-stream"):
        sent = ""
    if declared and sent and declared != sent:
        raise ManifestInvalid(
            "the manifest's mediaType does not match the request's Content-Type",
            detail={"mediaType": declared[:200], "contentType": sent[:200]},
        )
    media_type = declared or sent
    if doc.get("schemaVersion") == 1 or media_type in (
        mediatypes.DOCKER_SCHEMA1,
        mediatypes.DOCKER_SCHEMA1_SIGNED,
    ):
        raise ManifestInvalid("schema 1 manifests are not accepted; push schema 2 or OCI")
    if not media_type:
        media_type = mediatypes.OCI_INDEX if "manifests" in doc else mediatypes.OCI_MANIFEST
    if media_type not in _ACCEPTED:
        raise ManifestInvalid("unsupported manifest media type", detail={"mediaType": media_type})
    if doc.get("schemaVersion") != 2:
        raise ManifestInvalid("schemaVersion must be 2")
    artifact_type = _optional_str(doc, "artifactType")
    annotations = _annotations(doc.get("annotations"), "annotations")
    subject = _descriptor(doc["subject"], "subject") if "subject" in doc else None
    if media_type in mediatypes.INDEX_TYPES:
        children = doc.get("manifests")
        if not isinstance(children, list):
            raise ManifestInvalid("an index needs a manifests list")
        descs = [_descriptor(c, f"manifests[{i}]") for i, c in enumerate(children)]
        return PushedManifest(
            media_type,
            manifests=tuple(d.digest for d in descs),
            subject=subject,
            artifact_type=artifact_type,
            annotations=annotations,
        )
    if "config" not in doc:
        raise ManifestInvalid("an image manifest needs a config descriptor")
    config = _descriptor(doc["config"], "config")
    layers = doc.get("layers", [])
    if not isinstance(layers, list):
        raise ManifestInvalid("layers must be a list")
    if media_type == mediatypes.DOCKER_SCHEMA2 and not layers:
        raise ManifestInvalid("a schema 2 image needs at least one layer")
    descs = [_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers)]
    blobs = [config.digest]
    for d in descs:
        if d.urls and d.media_type.startswith(_FOREIGN):
            continue
        blobs.append(d.digest)
    return PushedManifest(
        media_type,
        blobs=tuple(dict.fromkeys(blobs)),
        subject=subject,
        artifact_type=artifact_type or config.media_type,
        annotations=annotations,
    )


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ManifestInvalid(f"{key} must be a string")
    return value or None


def _annotations(value: Any, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestInvalid(f"{where} must map strings to strings")
    return dict(value)


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise ManifestInvalid(f"{where} is not a descriptor object")
    media_type = value.get("mediaType")
    digest = value.get("digest")
    size = value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestInvalid(f"{where}.mediaType is missing")
    if not isinstance(digest, str):
        raise ManifestInvalid(f"{where}.digest is missing")
    # bool is an int in Python; a JSON true is not a size.
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestInvalid(f"{where}.size must be a non-negative integer")
    try:
        parsed = parse_digest(digest)
    except DigestInvalid as exc:
        raise ManifestInvalid(
            f"{where}.digest is invalid", detail={"digest": digest[:200]}
        ) from exc
    urls = value.get("urls") or ()
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
        raise ManifestInvalid(f"{where}.urls must be a list of strings")
    return Descriptor(
        media_type,
        parsed,
        size,
        artifact_type=_optional_str(value, "artifactType"),
        annotations=_annotations(value.get("annotations"), f"{where}.annotations"),
        urls=tuple(urls),
    )
