"""S3 bucket-level requests over a directory tree: the listing half of ``CappedS3``.

nginx serves the objects of a registry:2 filesystem tree as if it were a bucket but cannot
list it, and both clients of the bucket list: distribution 2.8 stats a path with
``ListObjects(prefix=PATH, max-keys=1)`` and regsidecar lists tags and keys with
ListObjectsV2. nginx proxies every bucket-level request (``/BUCKET`` and ``/BUCKET/``) here.

    python -m tests.rig.s3list --root STORE --bucket B --port P

Answers, as S3 does:

* ``HEAD /B`` and ``HEAD /B/``: 200 (HeadBucket; regsidecar's unsigned clock probe);
* ``GET /B?...``: ListObjects V1 (``prefix``, ``delimiter``, ``marker``, ``max-keys``) or,
  with ``list-type=2``, ListObjectsV2 (``continuation-token``, ``start-after``, ``KeyCount``);
  ``encoding-type=url`` percent-encodes the names in the answer. Keys are sorted by code
  point (S3's UTF-8 byte order); a common prefix counts once toward ``max-keys``;
  ``NextMarker`` is sent only with a delimiter, as S3 does;
* any other bucket subresource (``?uploads``, ``?location``...): 501 NotImplemented;
  PUT/POST/DELETE: 405 MethodNotAllowed.

A key is a file's path under the root with '/' separators; directories are not keys, and
files whose name starts with '.' (in-flight temporary files of a filesystem-driver write)
are left out. ``ETag`` is nginx's ``"<mtime hex>-<size hex>"``, the one a GET of the same
object carries, not an MD5. Each request walks the part of the tree the prefix can reach:
fine for test and benchmark trees, not for millions of files.

Standard library only, so the file also runs by path (``python s3list.py ...``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import datetime
import os
import urllib.parse
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_KEYS = 1000
#: Paths the rig itself asks (readiness); never a bucket name (S3 forbids '_').
READY_PATH = "/__rig/ready"

_LIST_PARAMS = frozenset(
    {
        "list-type",
        "prefix",
        "delimiter",
        "marker",
        "max-keys",
        "continuation-token",
        "start-after",
        "encoding-type",
        "fetch-owner",
        "x-id",
    }
)


class S3Error(Exception):
    """An S3 error answer: HTTP status, S3 code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def xml(self) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>{escape(self.message)}</Message></Error>"
        ).encode()


@dataclasses.dataclass(frozen=True)
class Obj:
    """One key of the tree, with what a listing says about it."""

    key: str
    size: int
    mtime: float

    @property
    def etag(self) -> str:
        # nginx's ETag (ngx_http_set_etag): "%xT-%xO" of mtime and size.
        return f'"{int(self.mtime):x}-{self.size:x}"'

    @property
    def last_modified(self) -> str:
        t = datetime.datetime.fromtimestamp(self.mtime, datetime.UTC)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclasses.dataclass(frozen=True)
class Query:
    """A parsed ListObjects (V1 or V2) request."""

    v2: bool
    prefix: str = ""
    delimiter: str = ""
    max_keys: int = MAX_KEYS
    #: V1 ``marker`` / V2 ``start-after``: list names strictly after this.
    after: str = ""
    #: V2 ``continuation-token`` as sent (echoed back), decoded into ``after``.
    token: str | None = None
    start_after: str = ""
    url_encoding: bool = False

    @classmethod
    def parse(cls, raw_query: str) -> Query:
        """The listing asked by a bucket-level GET query; S3Error for anything else."""
        params = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        unknown = sorted(set(params) - _LIST_PARAMS)
        if unknown:
            raise S3Error(501, "NotImplemented", f"bucket subresource {unknown} not modelled")
        try:
            max_keys = int(params.get("max-keys", MAX_KEYS))
        except ValueError:
            raise S3Error(400, "InvalidArgument", "max-keys is not an integer") from None
        if max_keys < 0:
            raise S3Error(400, "InvalidArgument", "max-keys must be >= 0")
        encoding = params.get("encoding-type")
        if encoding not in (None, "url"):
            raise S3Error(400, "InvalidArgument", f"invalid encoding-type {encoding!r}")
        v2 = params.get("list-type") == "2"
        token = params.get("continuation-token") if v2 else None
        start_after = params.get("start-after", "") if v2 else ""
        after = params.get("marker", "") if not v2 else start_after
        if token is not None:
            after = _untoken(token)
        return cls(
            v2=v2,
            prefix=params.get("prefix", ""),
            delimiter=params.get("delimiter", ""),
            max_keys=min(max_keys, MAX_KEYS),
            after=after,
            token=token,
            start_after=start_after,
            url_encoding=encoding == "url",
        )


@dataclasses.dataclass
class Page:
    """One page of a listing: objects, rolled-up prefixes, and where it stopped."""

    contents: list[Obj] = dataclasses.field(default_factory=list)
    prefixes: list[str] = dataclasses.field(default_factory=list)
    truncated: bool = False
    #: The last name (key or common prefix) on the page: where the next page starts after.
    last: str = ""


def _token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise S3Error(400, "InvalidArgument", "the continuation token is not valid") from None


def walk(root: Path, prefix: str) -> list[Obj]:
    """Every key under ``root`` starting with ``prefix``, sorted; only the directories the
    prefix can reach are visited."""
    # No key of a directory tree starts with '/' or passes through '..'; and either would
    # take the walk outside the root.
    if prefix.startswith("/") or ".." in prefix.split("/"):
        return []
    base = prefix[: prefix.rfind("/") + 1]
    start = root / base if base else root
    found: list[Obj] = []
    for dirpath, dirnames, filenames in os.walk(start):
        rel = Path(dirpath).relative_to(root).as_posix()
        here = "" if rel == "." else rel + "/"
        # Keep a subdirectory only if some key below it can start with the prefix.
        dirnames[:] = [
            d
            for d in dirnames
            if (here + d + "/").startswith(prefix) or prefix.startswith(here + d + "/")
        ]
        for name in filenames:
            key = here + name
            if name.startswith(".") or not key.startswith(prefix):
                continue
            try:
                st = os.stat(os.path.join(dirpath, name))
            except OSError:
                continue  # removed while we walked: S3 would not list it either
            found.append(Obj(key, st.st_size, st.st_mtime))
    found.sort(key=lambda o: o.key)
    return found


def paginate(objs: list[Obj], q: Query) -> Page:
    """Cut one page out of sorted ``objs`` (all starting with ``q.prefix``), S3's way."""
    page = Page()
    for count, (obj, common) in enumerate(_entries(objs, q)):
        if count == q.max_keys:
            page.truncated = True
            break
        if common is None:
            page.contents.append(obj)
            page.last = obj.key
        else:
            page.prefixes.append(common)
            page.last = common
    return page


def _entries(objs: list[Obj], q: Query) -> Iterator[tuple[Obj, str | None]]:
    """(object, None) or (first object under it, common prefix) in listing order, after
    ``q.after``; each common prefix once."""
    previous: str | None = None
    for obj in objs:
        if obj.key <= q.after:
            continue
        common = _common_prefix(obj.key, q.prefix, q.delimiter)
        if common is not None:
            # A page that ended on this prefix listed it already; a marker inside it (a key
            # below it) does not, and the keys after the marker still roll up into it.
            if common == previous or common == q.after:
                continue
            previous = common
        yield obj, common


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    return None if at < 0 else key[: at + len(delimiter)]


def render(bucket: str, q: Query, page: Page) -> bytes:
    """The ListBucketResult XML of ``page``."""

    def name(s: str) -> str:
        return escape(urllib.parse.quote(s, safe="/") if q.url_encoding else s)

    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{NS}">']
    out.append(f"<Name>{escape(bucket)}</Name><Prefix>{name(q.prefix)}</Prefix>")
    if q.v2:
        if q.token is not None:
            out.append(f"<ContinuationToken>{escape(q.token)}</ContinuationToken>")
        if q.start_after:
            out.append(f"<StartAfter>{name(q.start_after)}</StartAfter>")
        out.append(f"<KeyCount>{len(page.contents) + len(page.prefixes)}</KeyCount>")
    else:
        out.append(f"<Marker>{name(q.after)}</Marker>")
    out.append(f"<MaxKeys>{q.max_keys}</MaxKeys>")
    if q.delimiter:
        out.append(f"<Delimiter>{name(q.delimiter)}</Delimiter>")
    if q.url_encoding:
        out.append("<EncodingType>url</EncodingType>")
    out.append(f"<IsTruncated>{'true' if page.truncated else 'false'}</IsTruncated>")
    if page.truncated and q.v2:
        out.append(f"<NextContinuationToken>{_token(page.last)}</NextContinuationToken>")
    elif page.truncated and q.delimiter:
        out.append(f"<NextMarker>{name(page.last)}</NextMarker>")
    for o in page.contents:
        out.append(
            f"<Contents><Key>{name(o.key)}</Key><LastModified>{o.last_modified}</LastModified>"
            f"<ETag>{escape(o.etag)}</ETag><Size>{o.size}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
    for p in page.prefixes:
        out.append(f"<CommonPrefixes><Prefix>{name(p)}</Prefix></CommonPrefixes>")
    out.append("</ListBucketResult>")
    return "".join(out).encode()


class Handler(BaseHTTPRequestHandler):
    """Bucket-level S3 requests for one bucket over one directory (see the module doc)."""

    root: Path
    bucket: str

    def _bucket_level(self) -> tuple[bool, str]:
        path, _, query = self.path.partition("?")
        return path in (f"/{self.bucket}", f"/{self.bucket}/"), query

    def do_HEAD(self) -> None:
        ours, _ = self._bucket_level()
        if ours or self.path == READY_PATH:
            self._send(200, b"")
        else:
            self._send_error(S3Error(404, "NoSuchBucket", "no such bucket"))

    def do_GET(self) -> None:
        ours, raw_query = self._bucket_level()
        if self.path == READY_PATH:
            self._send(200, b"ready\n", content_type="text/plain")
            return
        if not ours:
            self._send_error(S3Error(404, "NoSuchBucket", "no such bucket"))
            return
        try:
            q = Query.parse(raw_query)
            page = paginate(walk(self.root, q.prefix), q) if q.max_keys else Page()
        except S3Error as exc:
            self._send_error(exc)
            return
        self._send(200, render(self.bucket, q, page))

    def _not_allowed(self) -> None:
        self._send_error(S3Error(405, "MethodNotAllowed", "this stand-in is read-only"))

    do_PUT = do_POST = do_DELETE = _not_allowed

    def _send_error(self, exc: S3Error) -> None:
        self._send(exc.status, exc.xml())

    def _send(self, status: int, body: bytes, *, content_type: str = "application/xml") -> None:
        """One whole answer; a HEAD gets the headers (with the body's length) only."""
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amz-bucket-region", "us-east-1")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # nginx's access log already records every request; keep this log for errors.
        pass


def serve(root: Path, bucket: str, host: str, port: int) -> None:
    """Answer bucket-level requests until terminated."""
    handler = type("BoundHandler", (Handler,), {"root": root.resolve(), "bucket": bucket})
    with ThreadingHTTPServer((host, port), handler) as server:
        server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--root", type=Path, required=True, help="the tree to list")
    parser.add_argument("--bucket", required=True, help="the bucket name it answers for")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    serve(args.root, args.bucket, args.host, args.port)


if __name__ == "__main__":
    main()
