"""Real images in a registry:2 bucket, written straight into it (distribution's layout): gzip
tar layers with configs whose diff_ids match (docker and containerd unpack them), OCI indexes,
and signatures as cosign and containers/image write them (a ``sha256-<hex>.sig`` companion
manifest of simple-signing layers)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from regsidecar.oci import mediatypes
from regsidecar.signing.payload import PAYLOAD_MEDIA_TYPE, SIGNATURE_ANNOTATION
from regsidecar.storage import layout
from tests.s3tree import BucketWriter, digest_of

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def gzip_layer(text: str) -> tuple[bytes, str]:
    """(gzip tar with one file, the tar's digest: its diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), digest_of(tar_bytes)


@dataclass
class Store:
    writer: BucketWriter
    sizes: dict[str, int] = field(default_factory=dict)  # manifest digest -> its length

    def manifest(self, repo: str, body: bytes, tag: str | None = None) -> str:
        d = digest_of(body)
        self.sizes[d] = len(body)
        self.writer.put(layout.blob_data(d), body)
        self.writer.put(layout.revision_link(repo, d), d.encode())
        if tag is not None:
            self.writer.put(layout.tag_index_link(repo, tag, d), d.encode())
            self.writer.put(layout.tag_current_link(repo, tag), d.encode())
        return d

    def image(self, repo: str, tag: str | None, text: str, arch: str = "amd64") -> str:
        layer, diff_id = gzip_layer(text)
        layer_digest = self.writer.blob(repo, layer)
        config = json.dumps(
            {
                "architecture": arch,
                "os": "linux",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            }
        ).encode()
        config_digest = self.writer.blob(repo, config)
        doc = {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
        }
        return self.manifest(repo, json.dumps(doc).encode(), tag)

    def index(self, repo: str, tag: str, children: list[tuple[str, str]]) -> str:
        """An OCI index of ``children`` ((digest, architecture), manifests written here)."""
        doc = {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mediatypes.OCI_MANIFEST,
                    "digest": d,
                    "size": self.sizes[d],
                    "platform": {"os": "linux", "architecture": arch},
                }
                for d, arch in children
            ],
        }
        return self.manifest(repo, json.dumps(doc).encode(), tag)

    def sign(
        self,
        repo: str,
        digest: str,
        key: ec.EllipticCurvePrivateKey,
        reference: str,
        *,
        claims: str | None = None,
    ) -> None:
        """A signature of ``digest`` as containers/image writes one (claiming ``claims``,
        default ``digest``), in the companion manifest ``sha256-<hex>.sig``; a second
        signature of the same digest is a second layer."""
        payload = json.dumps(
            {
                "critical": {
                    "identity": {"docker-reference": reference},
                    "image": {"docker-manifest-digest": claims or digest},
                    "type": "cosign container image signature",
                },
                "optional": {"creator": "regsidecar test (sigstore stand-in)"},
            }
        ).encode()
        sig = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
        payload_digest = self.writer.blob(repo, payload)
        config = b"{}"
        config_digest = self.writer.blob(repo, config)
        doc = {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {
                    "mediaType": PAYLOAD_MEDIA_TYPE,
                    "digest": payload_digest,
                    "size": len(payload),
                    "annotations": {SIGNATURE_ANNOTATION: sig},
                }
            ],
        }
        self.manifest(repo, json.dumps(doc).encode(), f"sha256-{digest.split(':')[1]}.sig")
