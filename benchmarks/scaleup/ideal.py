"""What the bandwidth caps alone allow: the all-ready time a run could not beat, whatever
the CPUs, and how close a run came to it (the report's "caps allow" and "ratio").

Payload only (no TCP/IP headers, no request round trips, no TCP slow start): a lower bound.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any


def ideal_s(run: Mapping[str, Any], params: Mapping[str, Any]) -> float | None:
    """The all-ready time the bandwidth caps alone allow (payload only, no TCP/IP headers):
    a sidecar host's download at the host cap; central, N hosts' bytes through the central
    cap or one host's through its own cap, whichever is slower. With a per-connection S3
    cap (``s3_conn_mbit``) also no faster than the layers, ``concurrency`` at a time, each
    over its connections at that cap (``conn_bound_s``): one per blob for central
    (distribution reads a blob as one stream) and single, ``connections_per_blob`` for
    sidecar. Peers (with their faults): as sidecar; each host also uploads about what it
    downloads ((N-1)/N of it), at an upload cap equal to the download cap. None for warmed
    (loopback)."""
    s = run["pull"]["summary"]
    scenario = run["scenario"]
    if scenario in ("peers", "peers-kill", "peers-liar"):
        scenario = "peers"
    if not s["clients"] or scenario not in ("sidecar", "single", "central", "peers"):
        return None
    per_host = float(s["bytes"]) / int(s["clients"])
    ideal = per_host * 8 / (float(params["host_mbit"]) * 1e6)
    if scenario == "central":
        ideal = max(ideal, float(s["bytes"]) * 8 / (float(params["central_mbit"]) * 1e6))
    conn_mbit = params.get("s3_conn_mbit")
    if conn_mbit:
        if scenario == "central":
            streams = 1
        else:
            download = params.get("sidecar_download", {}).get(run["scenario"], {})
            streams = int(download.get("connections_per_blob", 1 if scenario == "single" else 8))
        ideal = max(ideal, conn_bound_s(params, streams))
    return ideal


def conn_bound_s(params: Mapping[str, Any], streams_per_blob: int) -> float:
    """How long one host's layers take when each blob moves at ``streams_per_blob`` times the
    per-connection cap and the puller fetches ``concurrency`` blobs at a time, in order.

    >>> conn_bound_s({"image_bytes": 4_000_000, "layers": 4, "concurrency": 3,
    ...               "s3_conn_mbit": 1.0}, 1)  # two rounds of 1 MB at 1 Mbit/s
    16.0
    """
    total, layers = int(params["image_bytes"]), int(params["layers"])
    base, rest = divmod(total, layers)
    sizes = [base + (1 if i < rest else 0) for i in range(layers)]
    rate = float(params["s3_conn_mbit"]) * 1e6 / 8 * streams_per_blob
    slots = [0.0] * max(1, min(int(params.get("concurrency", 3)), layers))
    for size in sizes:
        start = heapq.heappop(slots)
        heapq.heappush(slots, start + size / rate)
    return max(slots)


def vs_ideal(run: Mapping[str, Any], params: Mapping[str, Any]) -> float | None:
    """all-ready / ideal (1.0 = exactly as fast as the caps allow)."""
    ideal, got = ideal_s(run, params), run["pull"]["summary"]["all_ready_s"]
    return None if ideal is None or got is None or ideal <= 0 else float(got) / ideal
