"""Concurrent writes through one sidecar: a protection rule and the write it allows are one
step, so two pushes racing for a new immutable tag cannot both win."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

from regsidecar.config import load_settings
from regsidecar.errors import Denied
from regsidecar.oci.reference import Digest, Reference
from regsidecar.push import Pusher
from regsidecar.storage.filesystem import FilesystemDriver


def manifest(config: Digest, note: str) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": str(config),
            "size": 2,
        },
        "layers": [],
        "annotations": {"note": note},
    }
    return json.dumps(doc).encode()


async def test_racing_pushes_to_a_new_immutable_tag_one_wins(tmp_path: Path) -> None:
    settings = load_settings(
        env={}, overrides={"storage": str(tmp_path), "push.protect": "v*=immutable"}
    )
    driver = FilesystemDriver(str(tmp_path))
    pusher = Pusher(driver, settings)
    config = Digest("sha256", hashlib.sha256(b"{}").hexdigest())
    await pusher.writer.put_blob_bytes(config, b"{}")
    await pusher.writer.link_blob("app", config)
    bodies = [manifest(config, str(i)) for i in range(8)]
    results = await asyncio.gather(
        *(pusher.put_manifest("app", Reference(tag="v1"), b, None) for b in bodies),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, Denied) for r in results if isinstance(r, BaseException))
    assert await pusher.writer.current("app", "v1") == winners[0][0]
