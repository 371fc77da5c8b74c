"""Write the benchmark image into the bucket, run *inside* the S3 namespace::

    ip netns exec rsb123-s3 python -m benchmarks.scaleup.seed \\
        --endpoint http://127.0.0.1:9000 --bucket bench --image bench/app:v1 --bytes 52428800 \\
        --layers 5

or, for the capped S3 stand-in (nginx serving a filesystem-driver tree as the bucket, which
takes no PUTs), straight into that tree (``--store DIR``, no network; ``seed_store``).

Layers are pseudo-random (incompressible, seeded: the same flags give the same digests), as
a registry:2 push would leave them (``tests/s3tree.py`` ``BucketWriter``: blob data, the
``_layers`` links, the manifest's revision link, the tag's current link) plus the tag's
index link. The keys are ``regsidecar.storage.layout``'s, so the tree under ``--store`` is
what distribution's filesystem driver would hold. Prints one JSON object: the manifest
digest, the layer digests and sizes, the total bytes of the image.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

#: The rig's dummy credentials (moto checks no signature).
ACCESS_KEY = "rigtestaccesskey"
SECRET_KEY = "rigtestsecretkey"
REGION = "us-east-1"


def layer_sizes(total: int, layers: int) -> list[int]:
    """``total`` bytes split into ``layers`` near-equal sizes (the first ones get the rest)."""
    if layers < 1 or total < layers:
        raise ValueError(f"cannot split {total} bytes into {layers} layers")
    base, rest = divmod(total, layers)
    return [base + (1 if i < rest else 0) for i in range(layers)]


def make_layers(total: int, layers: int, seed: int = 6) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(n) for n in layer_sizes(total, layers)]


def s3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}),
    )


class StoreClient:
    """The one S3 call ``BucketWriter`` makes, ``put_object``, written into a filesystem-driver
    tree instead (the bucket name is ignored: the tree is the bucket)."""

    def __init__(self, root: Path) -> None:
        from regsidecar.storage.filesystem import FilesystemDriver

        self.driver = FilesystemDriver(str(root))

    # boto3's keyword names
    def put_object(self, *, Bucket: str, Key: str, Body: bytes) -> None:
        self.driver.put(Key, Body)


def write_image(client: Any, bucket: str, image: str, total: int, layers: int) -> dict[str, Any]:
    """The benchmark image, written with ``client.put_object``; the seed's JSON."""
    from regsidecar.storage import layout
    from tests.s3tree import BucketWriter

    repo, _, tag = image.rpartition(":")
    data = make_layers(total, layers)
    writer = BucketWriter(client, bucket)
    manifest, digests = writer.image(repo, tag, data)
    # A push also records the tag's history (distribution's tag index); BucketWriter leaves
    # it out, and nothing on the pull path reads it.
    writer.put(layout.tag_index_link(repo, tag, manifest), manifest.encode())
    return {
        "manifest": manifest,
        "layers": [{"digest": d, "size": len(b)} for d, b in zip(digests, data, strict=True)],
        "image_bytes": sum(len(b) for b in data),
    }


def seed_store(root: Path, image: str, total: int, layers: int) -> dict[str, Any]:
    """The benchmark image written straight into the filesystem-driver tree ``root``."""
    return write_image(StoreClient(root), "store", image, total, layers)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaleup.seed")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--endpoint", help="an S3 endpoint (the bucket is created)")
    where.add_argument("--store", type=Path, help="a filesystem-driver tree to write into")
    p.add_argument("--bucket", default="scaleup")
    p.add_argument("--image", required=True, metavar="REPO:TAG")
    p.add_argument("--bytes", type=int, required=True, dest="total")
    p.add_argument("--layers", type=int, required=True)
    args = p.parse_args(argv)

    if args.store is not None:
        seeded = seed_store(args.store, args.image, args.total, args.layers)
    else:
        client = s3_client(args.endpoint)
        client.create_bucket(Bucket=args.bucket)
        seeded = write_image(client, args.bucket, args.image, args.total, args.layers)
    json.dump(seeded, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
