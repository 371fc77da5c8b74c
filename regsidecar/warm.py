"""Pre-pull images into a running sidecar's cache, ahead of a scale-up.

Warming goes through the sidecar's own pull API, exactly like ``docker pull``: the sidecar
resolves tags, verifies every digest, fetches each blob once and records the tags it resolved
(so they still resolve from its last known state if S3 is away later). The pure part (image
names, platform choice, the progress line) is separate from the HTTP part.

>>> parse_image("localhost:5000/team/app:1.2")
('team/app', '1.2')
>>> render_progress(50 << 20, 200 << 20, 1, 4, 2.0, width=10)
'[##--------]  25%   50.0 MiB/200.0 MiB   25.0 MiB/s  ETA 6s  blobs 1/4'
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from regsidecar.config import format_size
from regsidecar.errors import OCIError
from regsidecar.oci import mediatypes
from regsidecar.oci.reference import parse_digest, parse_name, parse_tag

ACCEPT = ", ".join(sorted(mediatypes.MANIFEST_TYPES))
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def parse_image(text: str) -> tuple[str, str]:
    """``[HOST[:PORT]/]NAME[:TAG|@DIGEST]`` -> (name, tag or digest). The host part, as docker
    reads it (a first component with ``.`` or ``:``, or ``localhost``), is dropped: warming
    always goes to this host's sidecar. Raises ValueError naming what is wrong."""
    rest = text.strip()
    first, sep, after = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        rest = after
    try:
        if "@" in rest:
            name, _, digest = rest.partition("@")
            return parse_name(name), str(parse_digest(digest))
        name, colon, tag = rest.rpartition(":")
        if not colon or "/" in tag:
            name, tag = rest, "latest"
        return parse_name(name), parse_tag(tag)
    except OCIError as exc:
        raise ValueError(f"{text!r}: {exc.message}") from exc


def host_platform() -> str:
    machine = platform.machine().lower()
    return f"linux/{_ARCH.get(machine, machine)}"


def select_platforms(index: dict[str, Any], wanted: Iterable[str] | None) -> list[str]:
    """Digests of an index's image manifests for the ``os/arch[/variant]`` platforms wanted
    (None: all of them). Attestation entries (``unknown/unknown``) are skipped."""
    want = set(wanted) if wanted is not None else None
    out = []
    for m in index.get("manifests") or []:
        p = m.get("platform") or {}
        os_, arch, variant = p.get("os", ""), p.get("architecture", ""), p.get("variant", "")
        if os_ == "unknown":
            continue
        names = {f"{os_}/{arch}", f"{os_}/{arch}/{variant}" if variant else f"{os_}/{arch}"}
        if want is None or names & want:
            out.append(str(m["digest"]))
    return out


def blobs_of(manifest: dict[str, Any]) -> list[tuple[str, int]]:
    """(digest, size) of an image manifest's config and layers."""
    out = []
    config = manifest.get("config")
    if config:
        out.append((str(config["digest"]), int(config.get("size", 0))))
    for layer in manifest.get("layers") or []:
        out.append((str(layer["digest"]), int(layer.get("size", 0))))
    return out


def render_progress(
    done: int, total: int, blobs_done: int, blobs_total: int, elapsed: float, width: int = 30
) -> str:
    frac = done / total if total else 1.0
    filled = int(frac * width)
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f"ETA {int((total - done) / rate)}s" if rate > 0 and done < total else "ETA -"
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] {frac:4.0%} "
        f"{format_size(done):>10}/{format_size(total)} {format_size(rate):>10}/s  {eta}  "
        f"blobs {blobs_done}/{blobs_total}"
    )


@dataclass
class ImageResult:
    image: str
    digest: str = ""
    manifests: int = 0
    blobs: int = 0
    bytes: int = 0
    cached: int = 0  # blobs the cache already held
    error: str = ""


@dataclass
class Progress:
    """Running totals; ``on_change`` redraws."""

    total: int = 0
    done: int = 0
    blobs_total: int = 0
    blobs_done: int = 0
    started: float = field(default_factory=time.monotonic)
    on_change: Callable[[Progress], None] | None = None

    def add(self, n: int) -> None:
        self.done += n
        if self.on_change:
            self.on_change(self)


class WarmError(Exception):
    pass


class Warmer:
    """Pulls images through the sidecar at ``base_url``, ``concurrency`` blobs at a time."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        platforms: list[str] | None,
        concurrency: int = 4,
        progress: Progress | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._platforms = platforms
        self._slots = asyncio.Semaphore(concurrency)
        self.progress = progress or Progress()
        self._seen: set[str] = set()  # blobs shared by images are fetched once

    async def _manifest(self, name: str, ref: str) -> tuple[str, dict[str, Any]]:
        url = f"{self._base}/v2/{name}/manifests/{ref}"
        async with self._session.get(url, headers={"Accept": ACCEPT}) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise WarmError(f"manifest {name}:{ref}: HTTP {resp.status} {_oci_message(body)}")
            return resp.headers.get("Docker-Content-Digest", ref), json.loads(body)

    async def _blob(self, name: str, digest: str, result: ImageResult) -> None:
        async with self._slots:
            url = f"{self._base}/v2/{name}/blobs/{digest}"
            async with self._session.get(url) as resp:
                if resp.status != 200:
                    body = await resp.read()
                    raise WarmError(f"blob {digest}: HTTP {resp.status} {_oci_message(body)}")
                if resp.headers.get("X-Cache") == "hit":
                    result.cached += 1
                async for chunk in resp.content.iter_chunked(1 << 20):
                    result.bytes += len(chunk)
                    self.progress.add(len(chunk))
        self.progress.blobs_done += 1
        self.progress.add(0)

    async def warm(self, image: str) -> ImageResult:
        result = ImageResult(image)
        try:
            name, ref = parse_image(image)
            result.digest, doc = await self._manifest(name, ref)
            result.manifests = 1
            media = doc.get("mediaType", "")
            children = [doc]
            if media in mediatypes.INDEX_TYPES or "manifests" in doc:
                digests = select_platforms(doc, self._platforms)
                if not digests:
                    raise WarmError(f"no manifest for {', '.join(self._platforms or [])}")
                children = [(await self._manifest(name, d))[1] for d in digests]
                result.manifests += len(children)
            blobs = []
            for child in children:
                for digest, size in blobs_of(child):
                    if digest not in self._seen:
                        self._seen.add(digest)
                        blobs.append(digest)
                        self.progress.total += size
                        self.progress.blobs_total += 1
            result.blobs = len(blobs)
            await asyncio.gather(*(self._blob(name, d, result) for d in blobs))
        except (WarmError, ValueError) as exc:
            result.error = str(exc)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            result.error = f"sidecar at {self._base}: {type(exc).__name__}: {exc}"
        return result


def _oci_message(body: bytes) -> str:
    try:
        err = json.loads(body)["errors"][0]
        return f"{err['code']}: {err['message']}"
    except (ValueError, KeyError, IndexError, TypeError):
        return body[:200].decode("utf-8", "replace")


async def warm_all(
    base_url: str,
    images: list[str],
    *,
    platforms: list[str] | None,
    concurrency: int,
    progress: Progress,
    timeout_s: float,
) -> list[ImageResult]:
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=5)
    # trust_env stays off: the sidecar is on this host, never behind an HTTP(S)_PROXY.
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        warmer = Warmer(
            session, base_url, platforms=platforms, concurrency=concurrency, progress=progress
        )
        results = []
        for image in images:  # one image at a time, its blobs in parallel
            results.append(await warmer.warm(image))
        return results
