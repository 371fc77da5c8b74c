"""A small OCI distribution-spec client for the conformance tests.

Raw requests (``Client.request`` returns status, headers and the whole body, never raises on a
status), plus the few flows every test needs: push a blob (POST + PUT), push a manifest, build
image and artifact manifests from random content. URLs from ``Location`` and ``Link`` headers
are resolved against the request URL and kept byte for byte (no re-quoting).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urljoin

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
MT_EMPTY = "application/vnd.oci.empty.v1+json"
OCTET = "application/octet-stream"
#: What the conformance suite sends on every manifest GET/HEAD.
ACCEPT = f"{MT_INDEX}, {MT_MANIFEST}"


@dataclass(frozen=True)
class Creds:
    """HTTP Basic credentials (``encode()`` gives the ``Authorization`` value)."""

    login: str
    password: str

    def encode(self) -> str:
        raw = f"{self.login}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


WRITER = Creds("ci", "s3cret")
READER = Creds("reader", "r3ader")

#: Every error code of the distribution spec's error table.
SPEC_ERROR_CODES = frozenset(
    {
        "BLOB_UNKNOWN",
        "BLOB_UPLOAD_INVALID",
        "BLOB_UPLOAD_UNKNOWN",
        "DIGEST_INVALID",
        "MANIFEST_BLOB_UNKNOWN",
        "MANIFEST_INVALID",
        "MANIFEST_UNKNOWN",
        "NAME_INVALID",
        "NAME_UNKNOWN",
        "SIZE_INVALID",
        "UNAUTHORIZED",
        "DENIED",
        "UNSUPPORTED",
        "TOOMANYREQUESTS",
    }
)

_LINK_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def digest_of(data: bytes, algo: str = "sha256") -> str:
    return f"{algo}:{hashlib.new(algo, data).hexdigest()}"


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def descriptor(media_type: str, content: bytes, algo: str, **extra: Any) -> dict[str, Any]:
    """The OCI descriptor of ``content``, plus any ``extra`` fields."""
    return {
        "mediaType": media_type,
        "digest": digest_of(content, algo),
        "size": len(content),
        **extra,
    }


def unique_repo(label: str) -> str:
    """A repository name of its own for one test: ``conformance/<label>-<8 hex>``."""
    return f"conformance/{label}-{uuid.uuid4().hex[:8]}"


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> ("bearer", {"realm": "x", "service": "y"})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), {k.lower(): v for k, v in _CHALLENGE_PARAM.findall(rest)}


@dataclass
class Resp:
    """One response, read completely."""

    method: str
    url: str
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def error_codes(self) -> list[str]:
        """The ``code`` of every entry of an OCI error body (``{"errors": [...]}``)."""
        try:
            doc = self.json()
        except ValueError as e:
            raise AssertionError(f"{self} has no JSON error body: {self.body[:200]!r}") from e
        assert isinstance(doc, dict) and isinstance(doc.get("errors"), list), doc
        assert doc["errors"], "an OCI error body lists at least one error"
        for err in doc["errors"]:
            assert isinstance(err, dict) and isinstance(err.get("code"), str), err
        return [err["code"] for err in doc["errors"]]

    @property
    def location(self) -> str:
        """``Location`` resolved against the request URL (absolute); fails if absent."""
        loc = self.headers.get("Location")
        assert loc, f"{self} has no Location header"
        return urljoin(self.url, loc)

    @property
    def location_path(self) -> str:
        return URL(self.location, encoded=True).path

    def next_link(self) -> str | None:
        """The RFC 5988 ``rel="next"`` URL of a paginated answer, resolved; None if absent."""
        link = self.headers.get("Link")
        if link is None:
            return None
        m = _LINK_NEXT.search(link)
        assert m, f"Link header without a rel=next URL: {link!r}"
        return urljoin(self.url, str(m.group(1)))

    def __str__(self) -> str:
        return f"{self.method} {self.url} -> {self.status}"


class Client:
    """Requests against one registry base URL, with Basic credentials by default."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base: str,
        auth: Creds | None = WRITER,
        *,
        challenge: bool = False,
    ) -> None:
        """``challenge``: authenticate as the OCI conformance suite does (api.go ``Do``):
        send each request without credentials first; on a 401 read ``WWW-Authenticate``
        and retry with Basic, or with a token from the Bearer realm for the challenge's
        ``service`` and ``scope``; tokens are reused per repository and pull/push/delete."""
        self.session = session
        self.base = base.rstrip("/")
        self.auth = auth
        self.challenge = challenge
        self._tokens: dict[tuple[str, str], str] = {}

    def url(self, path_or_url: str) -> str:
        return path_or_url if "://" in path_or_url else self.base + path_or_url

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | io.BytesIO | AsyncIterator[bytes] | None = None,
        params: Sequence[tuple[str, str]] | None = None,
        auth: Creds | str | None = "default",
        raw_headers: Mapping[str, str] | None = None,
    ) -> Resp:
        """``params`` are appended to the URL's own query (a session URL may carry state).

        ``auth``: "default" = the client's credentials, None = anonymous, or a BasicAuth.
        ``raw_headers`` are sent as given (e.g. a hand-made ``Authorization``)."""
        url = self.url(path_or_url)
        if params:
            url += ("&" if "?" in url else "?") + urlencode(list(params))
        hdrs = CIMultiDict(headers or {})
        if raw_headers:
            hdrs.update(raw_headers)
        if isinstance(data, bytes) and len(data) > 1024 * 1024:
            data = io.BytesIO(data)  # aiohttp warns about big raw bytes bodies
        use_auth = self.auth if auth == "default" else auth
        creds = use_auth if isinstance(use_auth, Creds) else None
        # Only the client's own credentials go through the challenge flow (and its token
        # cache); credentials given for one request are sent as they are.
        if (
            self.challenge
            and auth == "default"
            and creds is not None
            and "Authorization" not in hdrs
        ):
            return await self._challenged(method, url, hdrs, data, creds)
        if creds is not None and "Authorization" not in hdrs:
            hdrs["Authorization"] = creds.encode()
        return await self._send(method, url, hdrs, data)

    async def _send(
        self,
        method: str,
        url: str,
        hdrs: CIMultiDict[str],
        data: bytes | io.BytesIO | AsyncIterator[bytes] | None,
    ) -> Resp:
        async with self.session.request(
            method,
            URL(url, encoded=True),
            headers=hdrs,
            data=data,
            allow_redirects=True,
        ) as r:
            body = await r.read()
            return Resp(
                method, str(r.url), r.status, CIMultiDictProxy(CIMultiDict(r.headers)), body
            )

    async def _challenged(
        self,
        method: str,
        url: str,
        hdrs: CIMultiDict[str],
        data: bytes | io.BytesIO | AsyncIterator[bytes] | None,
        creds: Creds,
    ) -> Resp:
        m = re.search(r"/v2/(.+?)/(?:blobs|manifests|tags|referrers)/", URL(url).path)
        kind = {"GET": "pull", "HEAD": "pull", "DELETE": "delete"}.get(method, "push")
        key = (m.group(1) if m else "", kind)
        if key not in self._tokens:
            # A streamed body cannot be sent twice: the bare first try goes without it. The
            # server refuses an unauthenticated write before it reads a byte, so that try
            # only learns the challenge.
            bare = b"" if not isinstance(data, bytes | io.BytesIO | None) else data
            r = await self._send(method, url, hdrs, bare)
            if r.status != 401:
                assert bare is data, f"{r}: a write was accepted without credentials"
                return r
            scheme, params = parse_challenge(r.headers.get("WWW-Authenticate", ""))
            self._tokens[key] = await self._authorization(url, scheme, params, creds)
            if isinstance(data, io.BytesIO):
                data.seek(0)
        return await self._send(
            method, url, CIMultiDict(hdrs, Authorization=self._tokens[key]), data
        )

    async def _authorization(
        self, url: str, scheme: str, params: dict[str, str], creds: Creds
    ) -> str:
        """The Authorization value a challenge asks for: Basic, or a token from the realm."""
        if scheme == "basic":
            return creds.encode()
        assert scheme == "bearer" and "realm" in params, f"unusable challenge {params}"
        query = {k: params[k] for k in ("service", "scope") if k in params}
        realm = urljoin(url, params["realm"]) + "?" + urlencode(query)
        headers = CIMultiDict(Authorization=creds.encode(), Accept="application/json")
        got = await self._send("GET", realm, headers, None)
        assert got.status == 200, f"{got}: {got.body[:200]!r}"
        doc = got.json()
        return "Bearer " + (doc.get("token") or doc["access_token"])

    # -- flows -----------------------------------------------------------------------------

    async def start_upload(self, repo: str, **kw: Any) -> Resp:
        r = await self.request(
            "POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"}, **kw
        )
        assert r.status == 202, f"{r}: {r.body[:300]!r}"
        return r

    async def push_blob(self, repo: str, data: bytes, algo: str = "sha256") -> str:
        """POST then PUT ?digest= with the whole body; asserts 201 and returns the digest."""
        dig = digest_of(data, algo)
        session = await self.start_upload(repo)
        r = await self.request(
            "PUT",
            session.location,
            params=[("digest", dig)],
            headers={"Content-Type": OCTET},
            data=data,
        )
        assert r.status == 201, f"{r}: {r.body[:300]!r}"
        return dig

    async def push_manifest(self, repo: str, ref: str, m: Manifest) -> Resp:
        r = await self.request(
            "PUT",
            f"/v2/{repo}/manifests/{ref}",
            headers={"Content-Type": m.media_type},
            data=m.body,
        )
        assert r.status == 201, f"{r}: {r.body[:300]!r}"
        return r

    async def push_image(self, repo: str, img: Image, ref: str | None = None) -> Resp:
        """Every blob of ``img``, then its manifest (by ``ref``, default its digest)."""
        for b in img.blobs:
            await self.push_blob(repo, b.data, b.algo)
        return await self.push_manifest(repo, ref or img.manifest.digest, img.manifest)

    async def get_manifest(self, repo: str, ref: str, method: str = "GET") -> Resp:
        return await self.request(method, f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})


# -- content builders ------------------------------------------------------------------------


@dataclass
class Blob:
    data: bytes
    media_type: str
    algo: str = "sha256"

    @property
    def digest(self) -> str:
        return digest_of(self.data, self.algo)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return descriptor(self.media_type, self.data, self.algo, **extra)


@dataclass
class Manifest:
    doc: dict[str, Any]
    algo: str = "sha256"
    body: bytes = b""

    def __post_init__(self) -> None:
        if not self.body:
            self.body = canonical_json(self.doc)

    @property
    def media_type(self) -> str:
        return str(self.doc.get("mediaType", MT_MANIFEST))

    @property
    def digest(self) -> str:
        return digest_of(self.body, self.algo)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return descriptor(self.media_type, self.body, self.algo, **extra)


@dataclass
class Image:
    manifest: Manifest
    blobs: list[Blob] = field(default_factory=list)


EMPTY_JSON = Blob(b"{}", MT_EMPTY)


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def image(
    *,
    layers: int = 2,
    layer_size: int = 512,
    algo: str = "sha256",
    artifact_type: str | None = None,
    config: Blob | None = None,
    layer_media_type: str = MT_LAYER,
    subject: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Image:
    """An image manifest over fresh random blobs (config is a small random JSON document)."""
    if config is None:
        cfg = {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "nonce": uuid.uuid4().hex,
        }
        config = Blob(canonical_json(cfg), MT_CONFIG, algo)
    blobs = [config] + [
        Blob(random_bytes(layer_size), layer_media_type, algo) for _ in range(layers)
    ]
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": config.descriptor(),
        "layers": [b.descriptor() for b in blobs[1:]],
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    if subject is not None:
        doc["subject"] = dict(subject)
    if annotations:
        doc["annotations"] = dict(annotations)
    if extra:
        doc.update(extra)
    return Image(Manifest(doc, algo), blobs)


def artifact(
    artifact_type: str,
    *,
    subject: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    layer_media_type: str = OCTET,
) -> Image:
    """An OCI 1.1 artifact: empty-JSON config, one random layer, ``artifactType`` set."""
    layer = Blob(random_bytes(64), layer_media_type)
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "artifactType": artifact_type,
        "config": EMPTY_JSON.descriptor(),
        "layers": [layer.descriptor()],
    }
    if subject is not None:
        doc["subject"] = dict(subject)
    if annotations:
        doc["annotations"] = dict(annotations)
    return Image(Manifest(doc), [EMPTY_JSON, layer])


def index(
    children: Sequence[Manifest],
    *,
    platforms: Sequence[Mapping[str, str] | None] | None = None,
    artifact_type: str | None = None,
    subject: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    algo: str = "sha256",
) -> Manifest:
    entries = []
    for i, child in enumerate(children):
        plat = platforms[i] if platforms else None
        entries.append(child.descriptor(**({"platform": dict(plat)} if plat else {})))
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": entries}
    if artifact_type:
        doc["artifactType"] = artifact_type
    if subject is not None:
        doc["subject"] = dict(subject)
    if annotations:
        doc["annotations"] = dict(annotations)
    return Manifest(doc, algo)


def data_field(b: Blob) -> str:
    return base64.b64encode(b.data).decode()
