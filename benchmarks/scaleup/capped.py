"""The sweep's S3 with S3's per-connection cap (``--s3-conn-mbit``): ``tests/rig/cappeds3.py``.

Real S3 serves one connection at ~85-90 MB/s whatever the client's NIC can take; a host
gets more only over more connections. moto is uncapped per connection, so it cannot show
what regsidecar's parallel ranged GETs buy. Here nginx serves a distribution
filesystem-driver tree as the bucket, path style, with ``limit_rate`` on every connection
(``sendfile_max_chunk`` paces it within a few %), and ``tests/rig/s3list.py`` answers the
bucket-level requests (HeadBucket, ListObjects V1/V2) that distribution and regsidecar send::

    S3 namespace (10.213.0.3)
      nginx   0.0.0.0:9000    GET/HEAD/Range of  /scaleup/docker/registry/v2/...  (capped)
              -> 127.0.0.1:9001  s3list   /scaleup, /scaleup/ (listings, HeadBucket)
      WORK/s3/store/docker/registry/v2/...   the tree (seeded straight into it, no PUTs)
      WORK/s3/nginx/access.log               one line per request (tests/rig/cappedlog.py)

Both run inside the S3 namespace, spawned through ``Procs`` (stopped by PID with the rest);
the request log is brought up to date by ``python -m tests.rig.cappedlog sync``, run inside
the namespace too (it asks nginx's stub_status on the namespace's loopback). It has the same
interface as ``servers.S3`` (moto), and its request counts also give the ranged GETs and the
connections they came on.

>>> nginx_rate(1.0)  # 1 Mbit/s = 125000 bytes/s
125000
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.procstat import descendants, status_kib
from benchmarks.scaleup.netns import Topology
from benchmarks.scaleup.procs import Procs, Spawned, python_argv
from benchmarks.scaleup.seed import seed_store
from benchmarks.scaleup.servers import BUCKET, S3_PORT, S3Request, backend_counts, wait_ready
from tests.rig.cappedlog import CappedRequest, parse_log
from tests.rig.cappeds3 import PACE_MS, CappedS3, pace_chunk

#: The listing helper's port on the S3 namespace's loopback.
LISTER_PORT = S3_PORT + 1
#: How long a log sync waits for requests in progress to end.
SETTLE_S = 2.0
#: nginx writes at least this much at once (then sleeps as long as the rate says). At a
#: scaled-down cap the rig's 10 ms of the rate is tiny (1250 B at 1 Mbit/s; a real S3
#: connection moves ~850 KB in 10 ms): 100 writes and timers a second per connection.
#: Measured here (single, N = 2, 8 MiB at 1 Mbit/s per connection): 16.5 KB per write
#: instead of 1250 B took nginx 0.06 CPU-s instead of 0.22, the sidecars 0.99 instead of
#: 1.32, with the same all-ready time (33.45 s; the cap allows 33.55 s). The segments on
#: the wire were ~8.9 KB either way (nginx's tcp_nopush corks the small writes).
MIN_CHUNK_BYTES = 16 * 1024


def pace_ms_for(rate: int) -> int:
    """nginx's pacing interval for ``rate`` bytes/s: the rig's 10 ms, or longer so that each
    write carries at least ``MIN_CHUNK_BYTES``.

    >>> pace_ms_for(125000), pace_ms_for(85_000_000)
    (132, 10)
    """
    return max(PACE_MS, -(-MIN_CHUNK_BYTES * 1000 // rate))


def nginx_rate(conn_mbit: float) -> int:
    """``limit_rate`` in bytes per second for a cap of ``conn_mbit`` Mbit/s (10^6 bit/s)."""
    rate = round(conn_mbit * 1e6 / 8)
    if rate < 1:
        raise ValueError(f"a per-connection cap of {conn_mbit} Mbit/s is under 1 byte/s")
    return rate


def as_s3_requests(found: Sequence[CappedRequest]) -> list[S3Request]:
    """nginx's log records in the form the report counts (``servers.backend_counts``)."""
    return [
        S3Request(
            method=r.method,
            path=r.uri + (f"?{r.query}" if r.query else ""),
            status=r.status,
            range=r.range,
            connection=r.connection,
            bytes_sent=r.bytes_sent,
        )
        for r in found
    ]


class CappedS3Server:
    """nginx + s3list in the S3 namespace on ``0.0.0.0:9000``, each connection capped at
    ``conn_mbit``; the tree under ``workdir/store`` is the bucket."""

    #: The CPU role of its processes in the report (nginx's master and worker, s3list).
    role = "nginx"

    def __init__(self, topo: Topology, procs: Procs, workdir: Path, conn_mbit: float) -> None:
        self.topo = topo
        self.procs = procs
        self.conn_mbit = conn_mbit
        self.store = workdir / "store"
        self.store.mkdir(parents=True)
        self.rig = CappedS3(
            self.store,
            bucket=BUCKET,
            rate=str(nginx_rate(conn_mbit)),
            workdir=workdir / "nginx",
            host="0.0.0.0",
            port=S3_PORT,
            lister_port=LISTER_PORT,
            pace_ms=pace_ms_for(nginx_rate(conn_mbit)),
        )
        self.url_inside = self.rig.url  # http://127.0.0.1:9000, for jobs in the S3 namespace
        self.endpoint = f"http://{topo.plan.s3}:{S3_PORT}"  # for everyone else
        self.nginx: Spawned | None = None
        self.lister: Spawned | None = None

    def start(self, deadline_s: float = 60.0) -> None:
        # The tree's root must exist before nginx serves it; seed() fills it.
        (self.store / "docker" / "registry" / "v2").mkdir(parents=True, exist_ok=True)
        self.rig.prepare()
        ns = self.topo.s3
        self.lister = self.procs.spawn("s3list", ns, self.rig.lister_argv(), name="s3list")
        self.nginx = self.procs.spawn("nginx", ns, self.rig.nginx_argv(), name="nginx")
        wait_ready(
            self.procs,
            [(self.nginx, self.url_inside + self.rig.ready_path)],
            deadline_s,
            "nginx (capped S3) and s3list",
        )

    def seed(self, image: str, image_bytes: int, layers: int, deadline_s: float) -> dict[str, Any]:
        """Write the image straight into the tree (the stand-in takes no PUTs); the seed's
        JSON. ``deadline_s`` is unused: no network, nothing to wait for."""
        return seed_store(self.store, image, image_bytes, layers)

    # -- request log ----------------------------------------------------------------------

    def _sync(self, deadline_s: float = 15.0) -> None:
        """Every request that has ended is in the access log (bounded; run in the S3
        namespace, where nginx's status page is)."""
        argv = python_argv(
            "tests.rig.cappedlog", "sync", self.url_inside, "--settle", str(SETTLE_S)
        )
        (r,) = self.procs.run_all(
            "probe", [(self.topo.s3, argv)], parallel=1, deadline_s=deadline_s
        )
        if r.returncode != 0:
            raise RuntimeError(f"nginx's status page did not answer: {r.stderr}")

    def _size(self) -> int:
        try:
            return self.rig.access_log.stat().st_size
        except FileNotFoundError:
            return 0

    def mark(self) -> int:
        """Byte offset in nginx's access log after every request answered so far."""
        self._sync()
        return self._size()

    def since(self, offset: int) -> list[S3Request]:
        """The requests logged since ``offset`` (a ``mark()``), once the log is complete."""
        self._sync()
        try:
            with open(self.rig.access_log, "rb") as f:
                f.seek(offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        return as_s3_requests(parse_log(chunk, BUCKET))

    def counts(self, requests: Sequence[S3Request]) -> dict[str, int]:
        return backend_counts(requests, detailed=True)

    # -- for the report -------------------------------------------------------------------

    def pids(self) -> list[int]:
        """nginx's master, its worker, and s3list (what the CPU sampler charges to it)."""
        out: list[int] = []
        for sp in (self.nginx, self.lister):
            if sp is not None and sp.alive():
                out += [sp.pid, *descendants(sp.pid)]
        return out

    def rss_kib(self) -> int | None:
        sizes = [status_kib(pid, "VmRSS") for pid in self.pids()]
        known = [s for s in sizes if s is not None]
        return sum(known) if known else None

    def log_files(self) -> list[Path]:
        spawned = [sp.out_path for sp in (self.nginx, self.lister) if sp is not None]
        return [*spawned, self.rig.access_log]

    def describe(self) -> dict[str, Any]:
        """What ``params.s3`` records about this stand-in."""
        return describe_capped(self.conn_mbit)


def describe_capped(conn_mbit: float) -> dict[str, Any]:
    """The capped stand-in's parameters, as ``scaleup.json`` records them.

    >>> describe_capped(1.0)["limit_rate_bytes"]
    125000
    """
    rate = nginx_rate(conn_mbit)
    pace_ms = pace_ms_for(rate)
    return {
        "server": "nginx",
        "conn_mbit": conn_mbit,
        "limit_rate_bytes": rate,
        "pace_ms": pace_ms,
        "sendfile_max_chunk_bytes": pace_chunk(rate, pace_ms),
    }
