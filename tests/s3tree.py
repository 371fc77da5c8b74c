"""Write registry:2 objects straight into a bucket (what a distribution push leaves behind)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from regsidecar.oci import mediatypes
from regsidecar.storage import layout


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BucketWriter:
    """Puts blobs, manifests and links into ``bucket`` under an optional root prefix."""

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=layout.with_prefix(self.prefix, key), Body=data
        )

    def blob(self, repo: str, data: bytes) -> str:
        d = digest_of(data)
        self.put(layout.blob_data(d), data)
        self.put(layout.layer_link(repo, d), d.encode())
        return d

    def image(self, repo: str, tag: str, layers: list[bytes]) -> tuple[str, list[str]]:
        """An OCI image manifest over ``layers`` (plus a config), tagged; returns digests."""
        layer_digests = [self.blob(repo, data) for data in layers]
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": layer_digests},
            }
        ).encode()
        config_digest = self.blob(repo, config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mediatypes.OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": d,
                        "size": len(b),
                    }
                    for d, b in zip(layer_digests, layers, strict=True)
                ],
            }
        ).encode()
        m = digest_of(manifest)
        self.put(layout.blob_data(m), manifest)
        self.put(layout.revision_link(repo, m), m.encode())
        self.put(layout.tag_current_link(repo, tag), m.encode())
        return m, layer_digests
