"""Parse a ``/v2/...`` request path into a typed distribution route, then act.

>>> parse_path("/v2/library/alpine/manifests/3.20").kind
'manifest'

Names may contain ``/``, so the path is split from the right on the route's fixed suffix, as
distribution's router does; the name is then validated by the grammar.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from regsidecar.errors import Unsupported
from regsidecar.oci.reference import Digest, Reference, parse_digest, parse_name, parse_reference

_UPLOAD_RE = re.compile(r"(.+)/blobs/uploads(?:/([^/]*))?")
RouteKind = Literal["base", "manifest", "blob", "tags", "upload", "referrers", "catalog"]


@dataclass(frozen=True, slots=True)
class Route:
    """A parsed, validated distribution API path."""

    kind: RouteKind
    name: str = ""
    reference: Reference | None = None
    digest: Digest | None = None
    upload: str = ""  # an upload session's id ("" for POST .../blobs/uploads/)


def parse_path(path: str) -> Route:
    """Map a decoded request path to a :class:`Route`; raise an OCI error for anything else."""
    if "\x00" in path:
        raise Unsupported("invalid request path", status=404)
    if path in ("/v2", "/v2/"):
        return Route("base")
    if not path.startswith("/v2/"):
        raise Unsupported("unknown endpoint", status=404)
    rest = path[4:]
    if rest == "_catalog":
        return Route("catalog")
    if rest.endswith("/tags/list"):
        return Route("tags", parse_name(rest[: -len("/tags/list")]))
    upload = _UPLOAD_RE.fullmatch(rest)
    if upload is not None:
        return Route("upload", parse_name(upload.group(1)), upload=upload.group(2) or "")
    for marker, kind in (
        ("/manifests/", "manifest"),
        ("/blobs/", "blob"),
        ("/referrers/", "referrers"),
    ):
        name, sep, tail = rest.rpartition(marker)
        if not sep or not tail or "/" in tail:
            continue
        if kind == "manifest":
            return Route("manifest", parse_name(name), reference=parse_reference(tail))
        return Route(kind, parse_name(name), digest=parse_digest(tail))  # type: ignore[arg-type]
    raise Unsupported("unknown endpoint", status=404)
