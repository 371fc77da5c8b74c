"""Checks shared by the tests that pull through a sidecar: digests of streamed bodies, the
cache left behind, images seeded into a bucket, blob data requests seen by a FaultProxy."""

from __future__ import annotations

import hashlib
import itertools
import re
import time
from pathlib import Path

import aiohttp

from regsidecar.storage import layout
from tests.conftest import s3_args
from tests.rig.faultproxy import FaultProxy, ProxyRequest
from tests.rig.images import OCIImage
from tests.s3tree import BucketWriter
from tests.sidecar import Sidecar

MiB = 1024 * 1024


def proxied_sidecar(
    proxy: FaultProxy, bucket: str, data_dir: Path, env: dict[str, str] | None = None
) -> Sidecar:
    """A sidecar whose S3 endpoint is the proxy (any free disk will do for its cache)."""
    return Sidecar(
        s3_args(proxy.url, bucket),
        data_dir=data_dir,
        env={"REGSIDECAR_CACHE_MIN_FREE_BYTES": "0", **(env or {})},
    )


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def assert_cache_verified(sc: Sidecar, deadline_s: float = 10.0) -> list[Path]:
    """Every cached file hashes to its name; ``cache/tmp`` is empty (after a bounded wait for
    downloads that are being published). Returns the cached files."""
    end = time.monotonic() + deadline_s
    while sc.temp_files() and time.monotonic() < end:
        time.sleep(0.05)
    assert sc.temp_files() == [], "temp files left in cache/tmp"
    files = sc.cache_files()
    root = sc.data_dir / "cache" / "blobs"
    misplaced = [str(f) for f in files if f.parent != root / "sha256"]
    assert misplaced == [], "files outside cache/blobs/sha256"
    bad = {f.name: _sha256_file(f) for f in files if _sha256_file(f) != f.name}
    assert bad == {}, "cache files that do not hash to their name (name: actual sha256)"
    return files


async def get_digest(
    session: aiohttp.ClientSession, url: str
) -> tuple[int, str, int, dict[str, str]]:
    """(status, sha256 of the body, body length, headers), streamed."""
    async with session.get(url) as resp:
        h = hashlib.sha256()
        n = 0
        async for chunk in resp.content.iter_chunked(1 * MiB):
            h.update(chunk)
            n += len(chunk)
        return resp.status, "sha256:" + h.hexdigest(), n, dict(resp.headers)


def seed_layout(writer: BucketWriter, repo: str, tag: str, image: OCIImage) -> None:
    """Put a single-platform OCI layout's image into the bucket as a registry:2 push would."""
    (plat,) = image.platforms
    for blob in (plat.config, *plat.layers):
        writer.put(layout.blob_data(blob.digest), image.read_blob(blob.digest))
        writer.put(layout.layer_link(repo, blob.digest), blob.digest.encode())
    m = plat.manifest.digest
    writer.put(layout.blob_data(m), image.read_blob(m))
    writer.put(layout.revision_link(repo, m), m.encode())
    writer.put(layout.tag_current_link(repo, tag), m.encode())


_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


def span_of(request: ProxyRequest, size: int) -> tuple[int, int]:
    """The byte span [start, end) a blob data GET asked for (a plain GET: the whole blob)."""
    if request.range is None:
        return 0, size
    m = _RANGE.fullmatch(request.range)
    assert m is not None, f"not a single byte range: {request.range}"
    return int(m.group(1)), int(m.group(2)) + 1 if m.group(2) else size


def assert_no_span_asked_twice(gets: list[ProxyRequest], size: int) -> None:
    """No two GETs of a blob's data asked for overlapping bytes, the plain first GET aside
    (its response is dropped where ranged parts take over): every part is fetched once."""
    ranged = sorted(span_of(g, size) for g in gets if g.range is not None)
    for (_, e1), (s2, _) in itertools.pairwise(ranged):
        assert e1 <= s2, f"bytes {s2}..{e1} asked for twice: {ranged}"
    assert sum(1 for g in gets if g.range is None) <= 1, "more than one whole-blob GET"
