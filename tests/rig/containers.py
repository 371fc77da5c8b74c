"""Tiny docker images built in Python and loaded into a rig dockerd (``docker load``, offline).

Each image holds one static executable of a few dozen bytes (no libc, no shell) and a filler
file that makes its layer unique and gives it a size:

* ``sleep`` blocks for ever (``pause()`` on x86-64, ``ppoll(NULL, 0, NULL, NULL)`` on arm64),
  so a container of it stays running (it ignores SIGTERM as PID 1: stop it with ``rm -f``);
* ``exit`` exits 0 at once, so a container of it stops.

The config's ``created`` is the caller's: docker's ``until`` filters read it. The image ID is
the sha256 of the config, so it is known before the load.

>>> img = TinyImage("prune/app:1", "exit", created=time.time() - 86400, seed="a")  # doctest: +SKIP
>>> load(dockerd, [img], tmp_path)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import random
import struct
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from regsidecar.demo import elf64

from .dockerd import Dockerd

Program = Literal["sleep", "exit"]

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def docker_arch() -> str:
    """This machine's architecture as docker names it (amd64, arm64)."""
    machine = platform.machine().lower()
    if machine not in _ARCH:
        raise RuntimeError(f"no tiny test programs for {machine}")
    return _ARCH[machine]


def program(kind: Program, arch: str | None = None) -> bytes:
    """The static executable ``kind`` for ``arch`` (default: this machine's)."""
    arch = arch or docker_arch()
    if arch == "amd64":
        if kind == "sleep":
            # loop: mov eax, 34 (pause); syscall; jmp loop
            return elf64(62, b"\xb8\x22\x00\x00\x00\x0f\x05\xeb\xf7")
        # mov eax, 60 (exit); xor edi, edi; syscall
        return elf64(62, b"\xb8\x3c\x00\x00\x00\x31\xff\x0f\x05")
    if kind == "sleep":
        words = [
            0xD2800000,  # loop: mov x0, #0
            0xD2800001,  # mov x1, #0
            0xD2800002,  # mov x2, #0
            0xD2800003,  # mov x3, #0
            0xD2800928,  # mov x8, #73 (ppoll)
            0xD4000001,  # svc #0
            0x17FFFFFA,  # b loop
        ]
    else:
        words = [0xD2800000, 0xD2800BA8, 0xD4000001]  # mov x0, #0; mov x8, #93 (exit); svc #0
    return elf64(183, struct.pack(f"<{len(words)}I", *words))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@dataclass(frozen=True)
class TinyImage:
    """One single-layer image: ``tag`` (``repo:tag``, or None for an untagged load),
    the program it runs, its ``created`` time (unix seconds), ``filler`` bytes of seeded
    pseudo-random data (``seed`` makes two images differ)."""

    tag: str | None
    program: Program
    created: float
    seed: str
    filler: int = 64 * 1024

    def layer(self) -> bytes:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            exe = program(self.program)
            files = [
                ("run", exe, 0o755),
                ("filler", random.Random(self.seed).randbytes(self.filler), 0o644),
            ]
            for name, data, mode in files:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, int(self.created)
                tar.addfile(info, io.BytesIO(data))
        return raw.getvalue()

    def config(self, layer: bytes) -> bytes:
        diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
        doc = {
            "architecture": docker_arch(),
            "os": "linux",
            "created": _iso(self.created),
            "config": {"Cmd": ["/run"], "Labels": {"rig.seed": self.seed}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": _iso(self.created), "created_by": "tests/rig/containers"}],
        }
        return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()

    @property
    def id(self) -> str:
        """The image ID docker will give it: ``sha256:`` + sha256 of the config."""
        return "sha256:" + hashlib.sha256(self.config(self.layer())).hexdigest()


def docker_archive(images: Sequence[TinyImage], path: Path) -> None:
    """Write ``images`` as one ``docker save`` tar (manifest.json + configs + layers)."""
    manifest = []
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for img in images:
            layer = img.layer()
            config = img.config(layer)
            config_name = hashlib.sha256(config).hexdigest() + ".json"
            layer_name = hashlib.sha256(layer).hexdigest() + "/layer.tar"
            add(config_name, config)
            add(layer_name, layer)
            manifest.append(
                {
                    "Config": config_name,
                    "RepoTags": [img.tag] if img.tag else None,
                    "Layers": [layer_name],
                }
            )
        add("manifest.json", json.dumps(manifest).encode())


def load(dockerd: Dockerd, images: Sequence[TinyImage], workdir: Path) -> list[str]:
    """``docker load`` each image in order (a later one takes an earlier one's tag, leaving
    that one dangling, as a rebuild does); return their image IDs."""
    for n, img in enumerate(images):
        path = workdir / f"image-{n}-{img.seed}.tar"
        docker_archive([img], path)
        dockerd.docker("load", "-i", str(path))
        path.unlink()
    return [img.id for img in images]


__all__ = ["TinyImage", "docker_arch", "docker_archive", "load", "program"]
