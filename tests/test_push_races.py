"""Concurrent writes: a protection rule and the write it allows are one step, so two pushes
racing for a new immutable tag cannot both win, through one sidecar or through two."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from pathlib import Path

import aiohttp
import pytest

from regsidecar.config import load_settings
from regsidecar.errors import Denied
from regsidecar.oci.reference import Digest, Reference
from regsidecar.push import Pusher
from regsidecar.storage.filesystem import FilesystemDriver
from tests.conftest import s3_args
from tests.oci_client import Client, image
from tests.rig.htpasswd import PushAuth
from tests.sidecar import Sidecar


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


@pytest.mark.rig
@pytest.mark.parametrize("store", ["directory", "s3"])
async def test_two_sidecars_racing_for_a_new_immutable_tag_one_wins(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two sidecar processes on one store (a directory, or one bucket) both push a different
    image to the new immutable tag ``v1`` at the same moment, five rounds (v1..v5). Each
    process checks the rule and then writes, so only the store can order them: the tag's
    current link is created with If-None-Match: * (S3) or a hard link (directory), and the
    loser is refused 403 DENIED. Before, both got 201 in 4 of 5 rounds and the tag moved."""
    cfg = PushAuth(protect=[{"tags": "v*", "rule": "immutable"}]).write(tmp_path / "auth")
    if store == "directory":
        args = ["--storage", str(tmp_path / "store")]
    else:
        moto = request.getfixturevalue("moto")
        bucket = request.getfixturevalue("bucket")
        args = s3_args(moto.endpoint_url, bucket)
    with contextlib.ExitStack() as stack:
        sidecars = [
            stack.enter_context(
                Sidecar([*args, "--config", str(cfg)], data_dir=tmp_path / f"sc{i}")
            )
            for i in range(2)
        ]
        async with aiohttp.ClientSession() as session:
            clients = [Client(session, sc.url) for sc in sidecars]
            for rnd in range(1, 6):
                images = [image(layers=1, layer_size=64) for _ in clients]
                for c, img in zip(clients, images, strict=True):
                    for b in img.blobs:
                        await c.push_blob("app", b.data)
                tag = f"v{rnd}"
                answers = await asyncio.gather(
                    *(
                        c.request(
                            "PUT",
                            f"/v2/app/manifests/{tag}",
                            headers={"Content-Type": img.manifest.media_type},
                            data=img.manifest.body,
                        )
                        for c, img in zip(clients, images, strict=True)
                    )
                )
                statuses = sorted(a.status for a in answers)
                assert statuses == [201, 403], (tag, [(a.status, a.body[:200]) for a in answers])
                winner = images[[a.status for a in answers].index(201)].manifest.digest
                loser = next(a for a in answers if a.status == 403)
                assert json.loads(loser.body)["errors"][0]["code"] == "DENIED"
                # Both sidecars (the loser's included) resolve the tag to the winner.
                for c in clients:
                    got = await c.get_manifest("app", tag)
                    assert got.headers["Docker-Content-Digest"] == winner
