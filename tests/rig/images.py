"""Build OCI image layouts in pure Python (no daemon), deterministically.

Layers are gzip'd tars holding one file of seeded pseudo-random (so
incompressible) bytes each; they are streamed to disk (tar -> sha256 of the
uncompressed stream -> gzip -> sha256 of the blob -> file), so a 64 MiB or
larger layer never sits in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"
#: Fixed timestamps so that a seed always gives the same digests.
FIXED_MTIME = 946684800  # 2000-01-01T00:00:00Z
FIXED_CREATED = "2000-01-01T00:00:00Z"
MiB = 1024 * 1024
_CHUNK = 1 * MiB

Platform = tuple[str, str] | tuple[str, str, str]  # (os, arch) or (os, arch, variant)


@dataclass(frozen=True)
class Blob:
    """A content-addressed blob: digest ("sha256:..."), size in bytes, media type."""

    digest: str
    size: int
    media_type: str

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class Layer(Blob):
    """A gzip'd tar layer; ``diff_id`` is the sha256 of the uncompressed tar."""

    diff_id: str = ""
    uncompressed_size: int = 0
    file_size: int = 0


@dataclass(frozen=True)
class PlatformImage:
    """One platform's image: its manifest, config and layers."""

    os: str
    architecture: str
    variant: str | None
    manifest: Blob
    config: Blob
    layers: tuple[Layer, ...]

    @property
    def manifest_digest(self) -> str:
        return self.manifest.digest

    @property
    def platform(self) -> str:
        p = f"{self.os}/{self.architecture}"
        return f"{p}/{self.variant}" if self.variant else p


@dataclass(frozen=True)
class OCIImage:
    """What ``build_oci_layout`` wrote: the tagged top object and everything below it."""

    layout_dir: Path
    tag: str
    top: Blob  # the index (multi-platform / force_index) or the single manifest
    platforms: tuple[PlatformImage, ...]
    index: Blob | None = None

    @property
    def digest(self) -> str:
        """Digest of the tagged top object (index or manifest)."""
        return self.top.digest

    @property
    def media_type(self) -> str:
        return self.top.media_type

    @property
    def is_index(self) -> bool:
        return self.index is not None

    @property
    def oci_ref(self) -> str:
        """``oci:DIR:TAG`` for skopeo."""
        return f"oci:{self.layout_dir}:{self.tag}"

    def for_platform(
        self, os: str = "linux", architecture: str = "amd64", variant: str | None = None
    ) -> PlatformImage:
        for p in self.platforms:
            if (
                p.os == os
                and p.architecture == architecture
                and (variant is None or p.variant == variant)
            ):
                return p
        raise KeyError(f"{os}/{architecture} not in {[p.platform for p in self.platforms]}")

    def manifest_digest(self, os: str = "linux", architecture: str = "amd64") -> str:
        return self.for_platform(os, architecture).manifest.digest

    @property
    def manifest_digests(self) -> dict[str, str]:
        """platform string ("linux/arm64/v8") -> manifest digest."""
        return {p.platform: p.manifest.digest for p in self.platforms}

    @property
    def blobs(self) -> list[Blob]:
        """Every blob below (and including) the top object, deduplicated, in a stable order."""
        seen: dict[str, Blob] = {}
        if self.index is not None:
            seen[self.index.digest] = self.index
        for p in self.platforms:
            for b in (p.manifest, p.config, *p.layers):
                seen.setdefault(b.digest, b)
        return list(seen.values())

    def blob_path(self, digest: str) -> Path:
        return self.layout_dir / "blobs" / "sha256" / digest.split(":", 1)[1]

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()


# ---------------------------------------------------------------------------
class _HashingWriter:
    """Write-through file-like object that hashes and counts what passes through."""

    def __init__(self, sink: BinaryIO | _HashingWriter | gzip.GzipFile) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.sha.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        pass


class _RandomReader(io.RawIOBase):
    """A readable stream of ``size`` seeded pseudo-random bytes."""

    def __init__(self, seed: str, size: int) -> None:
        self._rng = random.Random(seed)  # str seeds hash with sha512: stable across runs
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._left
        n = min(n, self._left)
        self._left -= n
        return self._rng.randbytes(n) if n else b""


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _blobs_dir(layout: Path) -> Path:
    d = layout / "blobs" / "sha256"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write_blob(layout: Path, data: bytes, media_type: str) -> Blob:
    hexd = hashlib.sha256(data).hexdigest()
    path = _blobs_dir(layout) / hexd
    if not path.exists():
        tmp = path.with_name(f".tmp-{hexd}-{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return Blob(f"sha256:{hexd}", len(data), media_type)


def write_layer(
    layout: Path,
    seed: str,
    file_size: int,
    *,
    name: str = "rig/data.bin",
    compresslevel: int = 0,
) -> Layer:
    """Stream one gzip'd tar layer holding ``name`` with ``file_size`` seeded random bytes.

    ``compresslevel`` 0 (stored deflate blocks) is the default: the payload is
    random, so real compression only costs time (~1 s per 64 MiB at level 1).
    """
    bdir = _blobs_dir(layout)
    tmp = bdir / f".tmp-layer-{os.getpid()}-{random.Random(seed).getrandbits(64):x}"
    with open(tmp, "wb") as raw:
        blob_w = _HashingWriter(raw)
        with gzip.GzipFile(
            filename="",
            mode="wb",
            fileobj=blob_w,
            compresslevel=compresslevel,
            mtime=0,
        ) as gz:
            tar_w = _HashingWriter(gz)
            with tarfile.open(
                mode="w|",
                fileobj=tar_w,  # type: ignore[call-overload]
                format=tarfile.PAX_FORMAT,
                bufsize=_CHUNK,
                copybufsize=_CHUNK,
            ) as tar:
                parts = name.strip("/").split("/")
                for i in range(1, len(parts)):
                    d = tarfile.TarInfo("/".join(parts[:i]) + "/")
                    d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, FIXED_MTIME
                    tar.addfile(d)
                ti = tarfile.TarInfo("/".join(parts))
                ti.size, ti.mode, ti.mtime = file_size, 0o644, FIXED_MTIME
                ti.uname = ti.gname = "root"
                tar.addfile(ti, _RandomReader(seed, file_size))
    hexd = blob_w.sha.hexdigest()
    final = bdir / hexd
    if final.exists():
        tmp.unlink()
    else:
        os.replace(tmp, final)
    return Layer(
        digest=f"sha256:{hexd}",
        size=blob_w.size,
        media_type=MT_OCI_LAYER_GZIP,
        diff_id=f"sha256:{tar_w.sha.hexdigest()}",
        uncompressed_size=tar_w.size,
        file_size=file_size,
    )


def _platform_parts(p: Sequence[str]) -> tuple[str, str, str | None]:
    if len(p) not in (2, 3):
        raise ValueError(f"platform must be (os, arch) or (os, arch, variant): {p!r}")
    return p[0], p[1], (p[2] if len(p) == 3 else None)


def build_oci_layout(
    layout_dir: str | Path,
    tag: str = "latest",
    platforms: Sequence[Platform] = (("linux", "amd64"),),
    layer_sizes: Sequence[int] = (MiB,),
    seed: int | str = 0,
    *,
    cmd: Sequence[str] = ("/bin/true",),
    labels: dict[str, str] | None = None,
    share_layers: bool = False,
    force_index: bool = False,
    compresslevel: int = 0,
) -> OCIImage:
    """Write (or add a tag to) an OCI image layout at ``layout_dir``.

    One manifest per platform; with more than one platform (or ``force_index``)
    an OCI image index is the tagged entry, else the manifest is. Each layer i
    of each platform holds one file of ``layer_sizes[i]`` random bytes whose
    content depends on (seed, platform, i) -- or on (seed, i) only with
    ``share_layers``. Same arguments -> same digests. Calling it again on the
    same dir with another tag adds that tag (same tag: replaced).
    """
    layout = Path(layout_dir)
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    if not platforms:
        raise ValueError("need at least one platform")

    built: list[PlatformImage] = []
    for plat in platforms:
        os_, arch, variant = _platform_parts(plat)
        pname = "/".join(x for x in (os_, arch, variant) if x)
        layers = []
        for i, size in enumerate(layer_sizes):
            lseed = f"rig-layer/{seed}/{i}" if share_layers else f"rig-layer/{seed}/{pname}/{i}"
            layers.append(
                write_layer(
                    layout, lseed, size, name=f"rig/layer{i}.bin", compresslevel=compresslevel
                )
            )
        config: dict[str, Any] = {
            "created": FIXED_CREATED,
            "architecture": arch,
            "os": os_,
        }
        if variant:
            config["variant"] = variant
        config["config"] = {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": list(cmd),
            "Labels": {"org.regsidecar.rig.seed": str(seed), **(labels or {})},
        }
        config["rootfs"] = {"type": "layers", "diff_ids": [lay.diff_id for lay in layers]}
        config["history"] = [
            {"created": FIXED_CREATED, "created_by": f"rig layer {i} ({lay.file_size} bytes)"}
            for i, lay in enumerate(layers)
        ]
        cfg_blob = _write_blob(layout, _json_bytes(config), MT_OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MT_OCI_MANIFEST,
            "config": cfg_blob.descriptor(),
            "layers": [lay.descriptor() for lay in layers],
        }
        m_blob = _write_blob(layout, _json_bytes(manifest), MT_OCI_MANIFEST)
        built.append(PlatformImage(os_, arch, variant, m_blob, cfg_blob, tuple(layers)))

    index_blob: Blob | None = None
    if len(built) > 1 or force_index:
        entries = []
        for p in built:
            pdesc: dict[str, str] = {"architecture": p.architecture, "os": p.os}
            if p.variant:
                pdesc["variant"] = p.variant
            entries.append({**p.manifest.descriptor(), "platform": pdesc})
        index = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries}
        index_blob = _write_blob(layout, _json_bytes(index), MT_OCI_INDEX)
    top = index_blob or built[0].manifest

    _tag_in_layout(layout, tag, top)
    return OCIImage(layout, tag, top, tuple(built), index_blob)


def _tag_in_layout(layout: Path, tag: str, top: Blob) -> None:
    path = layout / "index.json"
    entries: list[dict[str, Any]] = []
    if path.exists():
        entries = [
            e
            for e in json.loads(path.read_text()).get("manifests", [])
            if e.get("annotations", {}).get(REF_NAME_ANNOTATION) != tag
        ]
    entries.append({**top.descriptor(), "annotations": {REF_NAME_ANNOTATION: tag}})
    doc = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": entries}
    tmp = path.with_name(".index.json.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, path)
