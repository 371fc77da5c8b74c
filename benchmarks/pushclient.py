"""The push client of the ``push`` benchmark: a docker-like layer push over aiohttp, the same
code for every server it is pointed at.

>>> layer = Layer(os.urandom(MiB)[24:], 256 * MiB, os.urandom(16))  # doctest: +SKIP
>>> async with session({}, 900) as s:  # doctest: +SKIP
...     await push_blob(s, "http://127.0.0.1:5000", "team/app", layer.stream(), layer.digest)
{'post_s': 0.01, 'patch_s': 1.2, 'put_s': 0.9, 'seconds': 2.1}

``push_blob`` is what docker does for a layer: ``POST /v2/<repo>/blobs/uploads/`` -> one
``PATCH <Location>`` with the whole body (chunked, as docker streams it) -> ``PUT
<Location>?digest=...`` with an empty body -> 201. ``Location`` is opaque (distribution keeps
its upload state in the query), so the client only appends to it.
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
from yarl import URL

from benchmarks.loadgen import MiB

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar"


class PushFailed(RuntimeError):
    """A push request that did not get the answer the distribution spec prescribes."""


# -- the layer --------------------------------------------------------------------------


class Layer:
    """``size`` bytes made of one random ``MiB`` block: chunk i is the block with (stamp, i)
    over its first 24 bytes. A new stamp is a new layer; generating a chunk is one copy."""

    def __init__(self, tail: bytes, size: int, stamp: bytes) -> None:
        self.tail = tail  # the block without its first 24 bytes
        self.size = size
        self.stamp = stamp
        h = hashlib.sha256()
        for chunk in self.chunks():
            h.update(chunk)
        self.digest = "sha256:" + h.hexdigest()

    def chunks(self) -> Iterator[bytes]:
        for i in range(-(-self.size // MiB)):
            chunk = struct.pack(">16sQ", self.stamp, i) + self.tail
            yield chunk if (i + 1) * MiB <= self.size else chunk[: self.size - i * MiB]

    async def stream(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks():
            yield chunk


def image_docs(layer: Layer) -> tuple[bytes, str, bytes]:
    """(config, config digest, manifest) of a one-layer image; the config names the layer, so
    it is new every round too."""
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        },
        sort_keys=True,
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MT_MANIFEST,
            "config": {"mediaType": MT_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": MT_LAYER, "digest": layer.digest, "size": layer.size}],
        },
        sort_keys=True,
    ).encode()
    return config, config_digest, manifest


# -- the client -------------------------------------------------------------------------


async def _expect(resp: aiohttp.ClientResponse, status: int, what: str) -> None:
    if resp.status != status:
        body = await resp.read()
        raise PushFailed(
            f"{what}: {resp.method} {resp.url} answered {resp.status} (want {status}); "
            f"headers {dict(resp.headers)}; body {body[:2000]!r}"
        )


def _location(base: str, resp: aiohttp.ClientResponse, what: str) -> str:
    loc = resp.headers.get("Location")
    if not loc:
        raise PushFailed(f"{what}: {resp.method} {resp.url} answered without a Location")
    return loc if loc.startswith(("http://", "https://")) else base + loc


async def push_blob(
    session: aiohttp.ClientSession,
    base: str,
    repo: str,
    body: AsyncIterator[bytes] | bytes,
    digest: str,
) -> dict[str, float]:
    """POST -> one PATCH with the whole body -> PUT ?digest (empty): the phases' seconds."""
    t0 = time.perf_counter()
    async with session.post(f"{base}/v2/{repo}/blobs/uploads/") as resp:
        await _expect(resp, 202, "start upload")
        loc = _location(base, resp, "start upload")
    t1 = time.perf_counter()
    headers = {"Content-Type": "application/octet-stream"}
    async with session.patch(URL(loc, encoded=True), data=body, headers=headers) as resp:
        await _expect(resp, 202, "PATCH the body")
        loc = _location(base, resp, "PATCH the body")
    t2 = time.perf_counter()
    # Location is opaque (distribution puts its _state in the query): add to it, re-encode none
    put = URL(loc + ("&" if "?" in loc else "?") + "digest=" + digest, encoded=True)
    async with session.put(put) as resp:
        await _expect(resp, 201, "PUT ?digest")
        got = resp.headers.get("Docker-Content-Digest")
        if got != digest:
            raise PushFailed(
                f"PUT ?digest: {put} answered Docker-Content-Digest {got}, want {digest}"
            )
    t3 = time.perf_counter()
    return {"post_s": t1 - t0, "patch_s": t2 - t1, "put_s": t3 - t2, "seconds": t3 - t0}


async def put_manifest(
    session: aiohttp.ClientSession, base: str, repo: str, tag: str, manifest: bytes, digest: str
) -> None:
    """PUT an OCI manifest by tag; 201 with its digest."""
    url = f"{base}/v2/{repo}/manifests/{tag}"
    async with session.put(url, data=manifest, headers={"Content-Type": MT_MANIFEST}) as resp:
        await _expect(resp, 201, "PUT manifest")
        got = resp.headers.get("Docker-Content-Digest")
        if got != digest:
            raise PushFailed(
                f"PUT manifest: {url} answered Docker-Content-Digest {got}, want {digest}"
            )


def session(headers: dict[str, str], timeout_s: float) -> aiohttp.ClientSession:
    """One client session per push; ``headers`` (e.g. Authorization) go on every request."""
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=300)
    return aiohttp.ClientSession(timeout=timeout, headers=headers)
