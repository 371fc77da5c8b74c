"""Write the benchmark image into the bucket, run *inside* the S3 namespace::

    ip netns exec rsb123-s3 python -m benchmarks.scaleup.seed \\
        --endpoint http://127.0.0.1:9000 --bucket bench --image bench/app:v1 --bytes 52428800 \\
        --layers 5

Layers are pseudo-random (incompressible, seeded: the same flags give the same digests), as
a registry:2 push would leave them (``tests/s3tree.py`` ``BucketWriter``). Prints one JSON
object: the manifest digest, the layer digests and sizes, the total bytes of the image.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaleup.seed")
    p.add_argument("--endpoint", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--image", required=True, metavar="REPO:TAG")
    p.add_argument("--bytes", type=int, required=True, dest="total")
    p.add_argument("--layers", type=int, required=True)
    args = p.parse_args(argv)

    from tests.s3tree import BucketWriter

    repo, _, tag = args.image.rpartition(":")
    client = s3_client(args.endpoint)
    client.create_bucket(Bucket=args.bucket)
    layers = make_layers(args.total, args.layers)
    manifest, digests = BucketWriter(client, args.bucket).image(repo, tag, layers)
    json.dump(
        {
            "manifest": manifest,
            "layers": [{"digest": d, "size": len(b)} for d, b in zip(digests, layers, strict=True)],
            "image_bytes": sum(len(b) for b in layers),
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
