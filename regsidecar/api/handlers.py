"""Thin handlers: parse -> service -> respond. No storage logic lives here."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from contextlib import AbstractContextManager

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

from regsidecar.api import push
from regsidecar.api.auth import require
from regsidecar.api.keys import REGISTRY, ROUTE, SENDFILE_BYTES
from regsidecar.errors import OCIError, PaginationInvalid, StorageError, Unsupported
from regsidecar.oci import mediatypes
from regsidecar.oci.ranges import ByteRange, parse_range
from regsidecar.oci.reference import Digest
from regsidecar.oci.routes import Route, parse_path
from regsidecar.pull.download import GrowingRead
from regsidecar.service import LocalBlob, manifest_outcome

log = logging.getLogger(__name__)

MAX_PAGE = 10000
_ASCII_COUNT = re.compile(r"[0-9]{1,9}")


class PinnedFileResponse(web.FileResponse):
    """aiohttp's FileResponse (sendfile, Range, conditional requests) that holds a pin on the
    cached blob while it is being sent, so eviction cannot choose it mid-response."""

    def __init__(
        self,
        path: str,
        pinned: Callable[[], AbstractContextManager[None]],
        *,
        headers: dict[str, str],
        byte_range: ByteRange | None = None,
    ) -> None:
        super().__init__(path, headers=headers)
        self._pinned = pinned
        self._range = byte_range

    async def prepare(self, request: BaseRequest) -> AbstractStreamWriter | None:
        if self._range is not None:
            # aiohttp parses Range again, more strictly than the spec's grammar that
            # parse_range accepted ("BYTES = 0 - 3" is one range to both RFC 9110 and the
            # cold path): hand it the range already resolved, in its canonical form.
            canonical = CIMultiDict(request.headers)
            canonical["Range"] = f"bytes={self._range.start}-{self._range.end}"
            request = request.clone(headers=canonical)
        with self._pinned():
            return await super().prepare(request)


async def dispatch(request: web.Request) -> web.StreamResponse:
    """Every /v2 path: parse it into a route, then hand it to the route's handler, which
    authorizes the request before it reads anything."""
    request[ROUTE] = "invalid"
    route = parse_path(request.path)
    request[ROUTE] = route.kind
    method = request.method
    if route.kind == "upload":
        return await push.upload(request, route)
    if route.kind == "manifest" and method == "PUT":
        return await push.put_manifest(request, route)
    if route.kind == "manifest" and method == "DELETE":
        return await push.delete_manifest(request, route)
    if route.kind == "blob" and method == "DELETE":
        return await push.delete_blob(request, route)
    if method not in ("GET", "HEAD"):
        raise Unsupported(f"method {method} is not supported on this endpoint")
    if route.kind == "base":
        await require(request, None, "pull")
        return web.json_response({})
    if route.kind == "referrers":
        return await push.referrers(request, route)
    if route.kind == "catalog":
        return await catalog(request)
    await require(request, route.name, "pull")
    if route.kind == "manifest":
        return await get_manifest(request, route)
    if route.kind == "blob":
        assert route.digest is not None
        return await get_blob(request, route.name, route.digest)
    return await list_tags(request, route.name)


def _etag_matches(request: web.Request, digest: Digest) -> bool:
    value = str(digest)
    return any(
        v.strip() in (value, f'"{value}"', f'W/"{value}"')
        for header in request.headers.getall("If-None-Match", [])
        for v in header.split(",")
    )


async def get_manifest(request: web.Request, route: Route) -> web.StreamResponse:
    assert route.reference is not None
    accepts = mediatypes.accepted(request.headers.getall("Accept", []))
    m = await request.app[REGISTRY].manifest(route.name, route.reference, accepts)
    headers = {
        "Docker-Content-Digest": str(m.digest),
        "ETag": f'"{m.digest}"',
        "Content-Type": m.media_type,
        "X-Cache": manifest_outcome.get(),
    }
    if _etag_matches(request, m.digest):
        return web.Response(status=304, headers=headers)
    # aiohttp sends Content-Length and no body for HEAD.
    return web.Response(body=m.payload, headers=headers)


async def get_blob(request: web.Request, name: str, digest: Digest) -> web.StreamResponse:
    blob = await request.app[REGISTRY].blob(name, digest, download=request.method == "GET")
    headers = {
        "Docker-Content-Digest": str(digest),
        "Content-Type": "application/octet-stream",
        "Cache-Control": "max-age=31536000",
        "Accept-Ranges": "bytes",
    }
    if _etag_matches(request, digest):
        return web.Response(status=304, headers=headers)
    # Validated here so a bad Range gets the OCI error body, whichever path serves the bytes.
    rng = parse_range(request.headers.get("Range"), blob.size)
    if isinstance(blob, LocalBlob):
        headers["X-Cache"] = "hit" if blob.source == "cache" else "store"
        return PinnedFileResponse(blob.path, blob.pinned, headers=headers, byte_range=rng)

    headers["X-Cache"] = "miss"
    start, end = (rng.start, rng.end) if rng else (0, blob.size - 1)
    resp = web.StreamResponse(status=206 if rng else 200, headers=headers)
    resp.content_length = end - start + 1
    if rng:
        resp.headers["Content-Range"] = rng.content_range(blob.size)
    if request.method == "HEAD" or blob.size == 0:
        await resp.prepare(request)
        await resp.write_eof()
        return resp
    chunks = blob.open(start, end)  # opens the file now, before any await
    try:
        await resp.prepare(request)
        if isinstance(chunks, GrowingRead) and request.transport is not None:

            def sent(n: int) -> None:
                request[SENDFILE_BYTES] = request.get(SENDFILE_BYTES, 0) + n

            # sendfile from the growing cache file
            await chunks.send_to(request.transport, sent=sent)
        else:
            async for chunk in chunks:
                await resp.write(chunk)
    except (OCIError, StorageError) as exc:
        # Headers are out: the only honest signal left is to cut the connection short of
        # Content-Length, so the client discards what it got.
        log.warning("blob stream aborted", extra={"digest": str(digest), "error": str(exc)})
        if request.transport is not None:
            request.transport.abort()
        return resp
    except ConnectionError:
        # The client went away; the download goes on for the cache and other readers.
        log.debug("client disconnected", extra={"digest": str(digest)})
        return resp
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    await resp.write_eof()
    return resp


def paginate(
    items: list[str], n_raw: str | None, last: str, next_path: str
) -> tuple[list[str], dict[str, str]]:
    """The spec's ``n``/``last`` pagination of a sorted list, and the ``Link`` header to the
    next page when there is one."""
    if last:
        items = [t for t in items if t > last]
    headers = {}
    if n_raw is not None:
        # ASCII digits only: str.isdigit() also takes U+00B2 (superscript two, which int()
        # refuses: a 500) and int() also reads U+FF11 (fullwidth one); the spec's n is neither.
        if _ASCII_COUNT.fullmatch(n_raw) is None:
            raise PaginationInvalid(detail={"n": n_raw[:20]})
        n = min(int(n_raw), MAX_PAGE)
        if len(items) > n:
            items = items[:n]
            if n > 0:
                headers["Link"] = f'<{next_path}?n={n}&last={items[-1]}>; rel="next"'
    return items, headers


async def list_tags(request: web.Request, name: str) -> web.StreamResponse:
    tags = await request.app[REGISTRY].tags(name)
    tags, headers = paginate(
        tags, request.query.get("n"), request.query.get("last", ""), f"/v2/{name}/tags/list"
    )
    return web.json_response({"name": name, "tags": tags}, headers=headers)


async def catalog(request: web.Request) -> web.StreamResponse:
    """``/v2/_catalog``: every repository of the store. With auth on it asks for credentials
    or a token, as ``/v2/`` does: a client that only pulls a name it knows never lists."""
    await require(request, None, "pull")
    names = await request.app[REGISTRY].repositories()
    names, headers = paginate(
        names, request.query.get("n"), request.query.get("last", ""), "/v2/_catalog"
    )
    return web.json_response({"repositories": names}, headers=headers)
