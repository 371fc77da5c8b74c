"""Where distribution (registry:2) keeps each object: one pure function per object kind.

Keys are relative to the driver's root (distribution's ``rootdirectory``), without a leading
slash. The tree, as distribution's ``registry/storage/paths.go`` lays it out::

    docker/registry/v2/
      blobs/<alg>/<hex[0:2]>/<hex>/data                         bytes of every blob and manifest
      repositories/<name>/
        _layers/<alg>/<hex>/link                                 blob is part of this repository
        _manifests/revisions/<alg>/<hex>/link                    manifest belongs to this repository
        _manifests/tags/<tag>/current/link                       tag -> manifest digest
        _manifests/tags/<tag>/index/<alg>/<hex>/link             tag history
        _uploads/<uuid>/...                                      in-progress pushes
        _referrers/<alg>/<hex>/<alg>/<hex>/descriptor.json       regsidecar: a manifest whose
                                                                 subject is the first digest
        _audit/<time>-<id>.json                                  regsidecar: tag moves

distribution skips directories starting with ``_`` when it walks repositories, and no
repository name can start with one, so the two regsidecar additions are invisible to it.

A link file holds ``<alg>:<hex>``. Every argument here has already passed the grammar in
:mod:`regsidecar.oci.reference`, so no key can leave its repository's subtree.

>>> blob_data("sha256:abcd")
'docker/registry/v2/blobs/sha256/ab/abcd/data'
"""

from __future__ import annotations

from regsidecar.oci.reference import Digest

ROOT = "docker/registry/v2"


def _split(digest: Digest | str) -> tuple[str, str]:
    if isinstance(digest, Digest):
        return digest.algorithm, digest.hex
    algorithm, _, hex_ = digest.partition(":")
    return algorithm, hex_


def with_prefix(prefix: str, key: str) -> str:
    """Join a root prefix (``rootdirectory``) and a layout key."""
    prefix = prefix.strip("/")
    return f"{prefix}/{key}" if prefix else key


def blob_data(digest: Digest | str) -> str:
    alg, hex_ = _split(digest)
    return f"{ROOT}/blobs/{alg}/{hex_[:2]}/{hex_}/data"


def repository(name: str) -> str:
    return f"{ROOT}/repositories/{name}"


def layer_link(name: str, digest: Digest | str) -> str:
    alg, hex_ = _split(digest)
    return f"{repository(name)}/_layers/{alg}/{hex_}/link"


def revision_link(name: str, digest: Digest | str) -> str:
    alg, hex_ = _split(digest)
    return f"{repository(name)}/_manifests/revisions/{alg}/{hex_}/link"


def tags_dir(name: str) -> str:
    return f"{repository(name)}/_manifests/tags"


def tag_current_link(name: str, tag: str) -> str:
    return f"{tags_dir(name)}/{tag}/current/link"


def tag_index_link(name: str, tag: str, digest: Digest | str) -> str:
    alg, hex_ = _split(digest)
    return f"{tags_dir(name)}/{tag}/index/{alg}/{hex_}/link"


def repositories_dir() -> str:
    return f"{ROOT}/repositories"


def tag_dir(name: str, tag: str) -> str:
    return f"{tags_dir(name)}/{tag}"


def layers_dir(name: str) -> str:
    return f"{repository(name)}/_layers"


def revisions_dir(name: str) -> str:
    return f"{repository(name)}/_manifests/revisions"


def referrers_dir(name: str, subject: Digest | str) -> str:
    alg, hex_ = _split(subject)
    return f"{repository(name)}/_referrers/{alg}/{hex_}"


def referrer_entry(name: str, subject: Digest | str, digest: Digest | str) -> str:
    alg, hex_ = _split(digest)
    return f"{referrers_dir(name, subject)}/{alg}/{hex_}/descriptor.json"


def audit_record(name: str, stamp: str) -> str:
    """``stamp`` sorts by time (``20261122T043000.123456Z-<id>``)."""
    return f"{repository(name)}/_audit/{stamp}.json"
