"""A tiny multi-platform sample image, written into a registry:2 tree for ``regsidecar demo``.

``regsidecar/hello:latest`` is an OCI index with linux/amd64 and linux/arm64 images; each holds
one static executable of a few hundred bytes (assembled below) that prints a greeting. Output is
deterministic: the same bytes, so the same digests, on every machine.

>>> write_sample(FilesystemDriver("/tmp/registry"))  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import struct
import tarfile
from dataclasses import dataclass

from regsidecar.oci import mediatypes
from regsidecar.storage import layout
from regsidecar.storage.filesystem import FilesystemDriver

REPOSITORY = "regsidecar/hello"
TAG = "latest"
GREETING = b"Hello from regsidecar: this image came through your local pull-through cache.\n"
_BASE = 0x400000
_HEADERS = 64 + 56


def elf64(machine: int, code: bytes) -> bytes:
    """A static ELF64 executable with one PT_LOAD segment holding ``code`` (then data)."""
    size = _HEADERS + len(code)
    ehdr = (
        b"\x7fELF\x02\x01\x01\x00"
        + b"\x00" * 8
        + struct.pack(
            "<HHIQQQIHHHHHH", 2, machine, 1, _BASE + _HEADERS, 64, 0, 0, 64, 56, 1, 0, 0, 0
        )
    )
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, _BASE, _BASE, size, size, 0x1000)
    return ehdr + phdr + code


def _x86_64(msg: bytes) -> bytes:
    code = (
        b"\xb8\x01\x00\x00\x00"  # mov eax, 1 (write)
        + b"\xbf\x01\x00\x00\x00"  # mov edi, 1 (stdout)
        + b"\x48\x8d\x35"
        + struct.pack("<i", 16)  # lea rsi, [rip+16] -> msg
        + b"\xba"
        + struct.pack("<I", len(msg))  # mov edx, len
        + b"\x0f\x05"  # syscall
        + b"\xb8\x3c\x00\x00\x00"  # mov eax, 60 (exit)
        + b"\x31\xff"  # xor edi, edi
        + b"\x0f\x05"  # syscall
    )
    return elf64(62, code + msg)


def _aarch64(msg: bytes) -> bytes:
    words = [
        0xD2800020,  # mov x0, #1
        0x100000E1,  # adr x1, msg (28 bytes ahead)
        0xD2800002 | (len(msg) << 5),  # mov x2, #len
        0xD2800808,  # mov x8, #64 (write)
        0xD4000001,  # svc #0
        0xD2800000,  # mov x0, #0
        0xD2800BA8,  # mov x8, #93 (exit)
        0xD4000001,  # svc #0
    ]
    return elf64(183, struct.pack("<8I", *words) + msg)


PROGRAMS = {"amd64": _x86_64(GREETING), "arm64": _aarch64(GREETING)}


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
            **extra,
        }


def _layer(program: bytes) -> tuple[Blob, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("hello")
        info.size, info.mode, info.mtime = len(program), 0o755, 0
        tar.addfile(info, io.BytesIO(program))
    tar_bytes = raw.getvalue()
    gz = gzip.compress(tar_bytes, compresslevel=9, mtime=0)
    diff_id = "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
    return Blob("application/vnd.oci.image.layer.v1.tar+gzip", gz), diff_id


def _json(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Sample:
    index: Blob
    manifests: dict[str, Blob]
    blobs: list[Blob]


def build_sample() -> Sample:
    manifests: dict[str, Blob] = {}
    blobs: list[Blob] = []
    for arch, program in PROGRAMS.items():
        layer, diff_id = _layer(program)
        config = Blob(
            "application/vnd.oci.image.config.v1+json",
            _json(
                {
                    "architecture": arch,
                    "os": "linux",
                    "created": "2026-01-01T00:00:00Z",
                    "config": {"Cmd": ["/hello"]},
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                    "history": [
                        {"created": "2026-01-01T00:00:00Z", "created_by": "regsidecar demo"}
                    ],
                }
            ),
        )
        manifest = Blob(
            mediatypes.OCI_MANIFEST,
            _json(
                {
                    "schemaVersion": 2,
                    "mediaType": mediatypes.OCI_MANIFEST,
                    "config": config.descriptor(),
                    "layers": [layer.descriptor()],
                }
            ),
        )
        manifests[arch] = manifest
        blobs += [layer, config]
    index = Blob(
        mediatypes.OCI_INDEX,
        _json(
            {
                "schemaVersion": 2,
                "mediaType": mediatypes.OCI_INDEX,
                "manifests": [
                    m.descriptor(platform={"architecture": arch, "os": "linux"})
                    for arch, m in manifests.items()
                ],
            }
        ),
    )
    return Sample(index, manifests, blobs)


def write_sample(driver: FilesystemDriver, name: str = REPOSITORY, tag: str = TAG) -> str:
    """Write the sample into the tree as a registry:2 push would; returns the index digest."""
    sample = build_sample()

    def link(blob: Blob) -> bytes:
        return blob.digest.encode()

    for blob in sample.blobs:
        driver.put(layout.blob_data(blob.digest), blob.data)
        driver.put(layout.layer_link(name, blob.digest), link(blob))
    for manifest in [*sample.manifests.values(), sample.index]:
        driver.put(layout.blob_data(manifest.digest), manifest.data)
        driver.put(layout.revision_link(name, manifest.digest), link(manifest))
    driver.put(layout.tag_index_link(name, tag, sample.index.digest), link(sample.index))
    driver.put(layout.tag_current_link(name, tag), link(sample.index))
    return sample.index.digest
