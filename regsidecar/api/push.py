"""Handlers of the push side of the distribution API: uploads, manifest PUT, deletes,
referrers and promotion. Each is auth -> parse -> service -> respond; the writing itself is in
:mod:`regsidecar.push` and the staging of upload bytes in :mod:`regsidecar.uploads`.

Status codes and headers follow the OCI distribution spec 1.1: ``202`` with ``Location``,
``Range: 0-<last byte>`` and ``Docker-Upload-UUID`` while an upload is open, ``201`` with
``Location`` and ``Docker-Content-Digest`` once a blob or manifest is stored, ``416`` for a
chunk that does not start where the upload ends.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from multidict import CIMultiDict

from regsidecar.api.auth import require
from regsidecar.api.keys import AUTH, METRICS, REGISTRY
from regsidecar.auth.policy import Identity
from regsidecar.errors import (
    BlobUploadInvalid,
    Denied,
    DigestInvalid,
    ManifestInvalid,
    RangeInvalid,
    SizeInvalid,
)
from regsidecar.oci import mediatypes
from regsidecar.oci.ranges import parse_chunk_range
from regsidecar.oci.reference import Digest, parse_digest, parse_name
from regsidecar.oci.routes import Route
from regsidecar.push import PromotionInvalid, Pusher, parse_promotion
from regsidecar.uploads import Session, Uploads

log = logging.getLogger(__name__)

PUSHER = web.AppKey("pusher", Pusher)
UPLOADS = web.AppKey("uploads", Uploads)
READ_CHUNK = 1024 * 1024


def _upload_headers(name: str, session: Session) -> dict[str, str]:
    # distribution answers "0-0" for an empty upload too; clients only read the end.
    end = session.size - 1 if session.size > 0 else 0
    return {
        "Location": f"/v2/{name}/blobs/uploads/{session.id}",
        "Range": f"0-{end}",
        "Docker-Upload-UUID": session.id,
    }


def _created_blob(request: web.Request, name: str, digest: Digest) -> web.Response:
    request.app[METRICS].pushed.labels("blob").inc()
    return web.Response(
        status=201,
        headers={"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": str(digest)},
    )


def _digest_param(request: web.Request) -> Digest:
    values = request.query.getall("digest", [])
    if len(values) != 1:
        raise DigestInvalid("exactly one digest query parameter is required")
    return parse_digest(values[0])


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that goes away ends it early."""
    try:
        async for chunk in request.content.iter_chunked(READ_CHUNK):
            yield chunk
    except (ConnectionError, web.HTTPException):
        raise
    except Exception as exc:  # aiohttp's payload errors have no common public base
        raise BlobUploadInvalid("the request body was cut short", detail=str(exc)[:200]) from exc


def _has_body(request: web.Request) -> bool:
    return bool(request.content_length) or request.headers.get("Transfer-Encoding", "") != ""


async def _append_chunk(request: web.Request, uploads: Uploads, session: Session) -> None:
    """Append a PATCH/PUT body; with Content-Range it must start where the upload ends."""
    header = request.headers.get("Content-Range")
    if header is not None:
        rng = parse_chunk_range(header)
        if rng.start != session.size:
            raise RangeInvalid(
                None,
                f"chunk starts at {rng.start}; the upload holds {session.size} bytes",
            )
        if request.content_length is not None and request.content_length != rng.length:
            raise RangeInvalid(None, "Content-Range and Content-Length disagree")
    before = session.size
    try:
        await uploads.append(session, _body(request))
    finally:
        request.app[METRICS].push_bytes.inc(session.size - before)
    if request.content_length is not None and session.size - before != request.content_length:
        raise BlobUploadInvalid("the request body was shorter than its Content-Length")


async def upload(request: web.Request, route: Route) -> web.StreamResponse:
    """Every method on /v2/<name>/blobs/uploads/[<id>]."""
    name = route.name
    identity = await require(request, name, "push")
    pusher, uploads = request.app[PUSHER], request.app[UPLOADS]
    method = request.method
    if not route.upload:
        if method != "POST":
            raise web.HTTPMethodNotAllowed(method, ["POST"])
        return await _start(request, name, pusher, uploads, identity)
    session = uploads.get(name, route.upload)
    if method in ("GET", "HEAD"):
        return web.Response(status=204, headers=_upload_headers(name, session))
    if method == "DELETE":
        async with session.lock:
            await uploads.discard(session)
        return web.Response(status=204)
    if method == "PATCH":
        async with session.lock:
            uploads.get(name, route.upload)  # cancelled while we waited for the lock?
            await _append_chunk(request, uploads, session)
            return web.Response(status=202, headers=_upload_headers(name, session))
    if method == "PUT":
        digest = _digest_param(request)
        async with session.lock:
            uploads.get(name, route.upload)
            if _has_body(request):
                await _append_chunk(request, uploads, session)
            try:
                path, size = await uploads.finish(session, digest)
            except DigestInvalid:
                # The session is spent: a client retries with a new one.
                await uploads.discard(session)
                raise
            await pusher.commit_blob(name, digest, path, size)
            await request.app[REGISTRY].adopt(digest, path, size)
            await uploads.discard(session)
        return _created_blob(request, name, digest)
    raise web.HTTPMethodNotAllowed(method, ["GET", "HEAD", "PATCH", "PUT", "DELETE"])


async def _start(
    request: web.Request, name: str, pusher: Pusher, uploads: Uploads, identity: Identity
) -> web.StreamResponse:
    mount = request.query.get("mount")
    source = request.query.get("from")
    owner = identity.name or ""
    if mount is not None and source is not None:
        digest = parse_digest(mount)
        source = parse_name(source)
        auth = request.app[AUTH]
        allowed = auth is None or auth.allows(identity, source, "pull")
        if allowed and await pusher.mount(name, digest, source):
            return _created_blob(request, name, digest)
        # Nothing to mount (or not readable by this client): an ordinary upload instead.
    elif mount is not None:
        # No "from" (automatic content discovery): only for a caller who may pull every
        # repository anyway. A token scoped to one repository would otherwise get any blob
        # of any repository by its digest; it gets an ordinary upload instead (202).
        digest = parse_digest(mount)
        auth = request.app[AUTH]
        if (auth is None or auth.may_pull_everything(identity)) and await pusher.mount(
            name, digest, None
        ):
            return _created_blob(request, name, digest)
    elif "digest" in request.query:
        digest = _digest_param(request)
        session = await uploads.start(name, owner)
        try:
            async with session.lock:
                await _append_chunk(request, uploads, session)
                path, size = await uploads.finish(session, digest)
                await pusher.commit_blob(name, digest, path, size)
                await request.app[REGISTRY].adopt(digest, path, size)
        finally:
            await uploads.discard(session)
        return _created_blob(request, name, digest)
    session = await uploads.start(name, owner)
    return web.Response(status=202, headers=_upload_headers(name, session))


async def put_manifest(request: web.Request, route: Route) -> web.StreamResponse:
    assert route.reference is not None
    name = route.name
    await require(request, name, "push")
    limit = mediatypes.MAX_MANIFEST_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise SizeInvalid(f"manifests are limited to {limit} bytes", status=413)
    buf = bytearray()
    async for chunk in _body(request):
        buf += chunk
        if len(buf) > limit:
            raise SizeInvalid(f"manifests are limited to {limit} bytes", status=413)
    payload = bytes(buf)
    if len(payload) > limit:
        raise SizeInvalid(f"manifests are limited to {limit} bytes", status=413)
    if not payload:
        raise ManifestInvalid("empty manifest")
    extra = request.query.getall("tag", [])
    digest, pushed, tags = await request.app[PUSHER].put_manifest(
        name, route.reference, payload, request.headers.get("Content-Type"), extra
    )
    metrics = request.app[METRICS]
    metrics.pushed.labels("manifest").inc()
    metrics.tag_moves.labels("push").inc(len(tags))
    headers = CIMultiDict(
        {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": str(digest)}
    )
    if pushed.subject is not None:
        headers["OCI-Subject"] = str(pushed.subject.digest)
    for tag in dict.fromkeys(extra):
        headers.add("OCI-Tag", tag)
    return web.Response(status=201, headers=headers)


async def delete_manifest(request: web.Request, route: Route) -> web.StreamResponse:
    assert route.reference is not None
    await require(request, route.name, "delete")
    await request.app[PUSHER].delete_manifest(route.name, route.reference)
    if route.reference.tag is not None:
        request.app[METRICS].tag_moves.labels("delete").inc()
    return web.Response(status=202)


async def delete_blob(request: web.Request, route: Route) -> web.StreamResponse:
    assert route.digest is not None
    await require(request, route.name, "delete")
    await request.app[PUSHER].delete_blob(route.name, route.digest)
    return web.Response(status=202)


async def referrers(request: web.Request, route: Route) -> web.StreamResponse:
    assert route.digest is not None
    await require(request, route.name, "pull")
    artifact_type = request.query.get("artifactType")
    found = await request.app[PUSHER].referrers(route.name, route.digest, artifact_type)
    index = {"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": found}
    headers = {"Content-Type": mediatypes.OCI_INDEX}
    if artifact_type is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    return web.Response(body=json.dumps(index).encode(), headers=headers)


async def promote(request: web.Request) -> web.StreamResponse:
    """``POST /-/promote`` ``{"source": "team/app@sha256:...", "tags": ["qa", "other/app:qa"]}``:
    the API twin of ``regsidecar promote``; needs push rights on every target repository."""
    # Who is asking comes first (auth -> parse): read-only and anonymous callers, and
    # callers who may push nowhere (a reader, a pull-only token), are turned away before the
    # body is read.
    identity = await require(request, None, "push")
    auth = request.app.get(AUTH)
    if auth is not None and not auth.may_write_somewhere(identity):
        raise Denied(f"{identity.name or 'anonymous'} may not push: promotion moves tags")
    try:
        doc = await request.json()
    except ValueError as exc:
        raise PromotionInvalid("the body must be JSON") from exc
    if not isinstance(doc, dict):
        raise PromotionInvalid("the body must be a JSON object")
    source, targets = parse_promotion(doc.get("source"), doc.get("tags"))
    name, digest = source
    await require(request, name, "pull")
    for repo in dict.fromkeys(r for r, _ in targets):
        await require(request, repo, "push")
    # Each target tag's policy must accept the image (signatures from the source).
    await request.app[REGISTRY].require_promotable(name, digest, targets)
    moves = await request.app[PUSHER].promote(
        name, digest, targets, by=identity.name or "anonymous"
    )
    request.app[METRICS].tag_moves.labels("promote").inc(len(moves))
    return web.json_response({"moved": [m.as_json() for m in moves]})
