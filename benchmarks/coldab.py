"""A/B of the cold path on moto, for measuring one change at a time.

``python -m benchmarks.coldab --rounds 6 [ENV=VALUE ...]``: one 256 MiB blob in moto; each
round GETs it directly (presigned URL) and through a freshly started sidecar (with the given
``REGSIDECAR_*`` settings), with ``os.sync()`` and a pause before each GET so the previous
round's dirty pages are not flushed under the next. Prints the medians, their ratio, the
sidecar's CPU seconds per GET, and every round. Run it on the trees to compare (a checkout of
the commit before a change, and after): the ``cold`` benchmark of ``benchmarks.micro`` is the
reported figure, this is the bench-side tool behind the step-by-step table in README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from benchmarks.coldstream import timed_get
from regsidecar.storage import layout
from tests.conftest import s3_args
from tests.rig.moto import MotoServer
from tests.s3tree import BucketWriter
from tests.sidecar import Sidecar

MiB = 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.coldab", description=__doc__)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("env", nargs="*", metavar="ENV=VALUE", help="sidecar environment")
    args = p.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    direct: list[float] = []
    via: list[float] = []
    cpus: list[float] = []
    with MotoServer() as moto:
        moto.create_bucket("coldab")
        digest = BucketWriter(moto.client(), "coldab").blob(
            "bench/cold", os.urandom(args.size_mib * MiB)
        )
        url = moto.client().generate_presigned_url(
            "get_object",
            Params={"Bucket": "coldab", "Key": layout.blob_data(digest)},
            ExpiresIn=3600,
        )
        for _ in range(args.rounds):
            os.sync()
            time.sleep(0.5)
            r, _, _, _ = timed_get(url, digest, 120, [])
            direct.append(r["seconds"])
            os.sync()
            time.sleep(0.5)
            with Sidecar(s3_args(moto.endpoint_url, "coldab"), env=env) as sc:
                sidecar_url = f"{sc.url}/v2/bench/cold/blobs/{digest}"
                r, cpu, _, _ = timed_get(sidecar_url, digest, 120, [sc.pid])
            if not (r["status"] == 200 and r["sha256_ok"]):
                print(f"bad response: {r}", file=sys.stderr)
                return 1
            via.append(r["seconds"])
            cpus.append(cpu[sc.pid])
    d, v = statistics.median(direct), statistics.median(via)
    print(
        f"direct {d:.3f} s, through a fresh sidecar {v:.3f} s, ratio {v / d:.3f}, sidecar CPU "
        f"{statistics.median(cpus):.2f} s; sidecar rounds {[round(x, 2) for x in via]}, direct "
        f"rounds {[round(x, 2) for x in direct]}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
