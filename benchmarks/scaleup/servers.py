"""The servers of the simulation, each started inside its namespace.

* ``S3``: ``moto_server`` in the S3 namespace on ``0.0.0.0:9000``, seeded from inside that
  namespace (``benchmarks.scaleup.seed``); its request log is read back for the S3 request
  counts of a phase (``parse_moto_log``), the S3 namespace's link counters give the bytes it
  sent. With ``--s3-conn-mbit`` ``capped.CappedS3Server`` stands in for it (same interface).
* ``start_registry``: distribution 2.8.2 (``docker-registry``) in the registry namespace on
  ``0.0.0.0:5000`` over the same bucket: the s3 driver settings of ``tests/rig/registry.py``
  (path style, plain http, v4 auth, redirects off, run without ``AWS_CA_BUNDLE``) plus the
  in-memory blob descriptor cache the stock ``registry:2`` image configures.
* ``start_sidecars``: one ``regsidecar serve`` per host namespace on ``127.0.0.1:5000``,
  started a few at a time, each probed for ``/readyz`` from inside its own namespace.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.procstat import status_kib
from benchmarks.scaleup.netns import Topology
from benchmarks.scaleup.procs import Procs, Spawned, python_argv, venv_binary
from tests.rig.registry import Distribution

S3_PORT = 9000
REGISTRY_PORT = 5000
SIDECAR_LISTEN = "127.0.0.1:5000"
SIDECAR_URL = f"http://{SIDECAR_LISTEN}"
BUCKET = "scaleup"
#: The rig's dummy credentials (moto checks no signature).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "rigtestaccesskey",
    "AWS_SECRET_ACCESS_KEY": "rigtestsecretkey",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
AWS_UNSET = ("AWS_PROFILE", "AWS_CA_BUNDLE")

# werkzeug: 10.213.0.10 - - [22/Nov/2026 03:00:00] "GET /bucket/key HTTP/1.1" 200 -
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE = re.compile(r'\] "(?P<method>[A-Z]+) (?P<path>.*) HTTP/\d(?:\.\d)?" (?P<status>\d{3}) ')
_SYNC = "/moto-api/?rsb-sync="


def probe_argv(url: str, deadline_s: float, ok: str = "200", once: bool = False) -> list[str]:
    args = [url, "--deadline", str(deadline_s), "--ok", ok]
    return python_argv("benchmarks.scaleup.probe", *args, *(["--once"] if once else []))


def wait_ready(
    procs: Procs, items: Sequence[tuple[Spawned, str]], deadline_s: float, what: str
) -> None:
    """Probe each ``(process, url)`` from inside the process's namespace until it answers
    200 (all probes at once, each bounded by ``deadline_s``); RuntimeError naming the first
    that did not, with its log tail."""
    results = procs.run_all(
        "probe",
        [(sp.ns, probe_argv(url, deadline_s)) for sp, url in items],
        parallel=max(1, len(items)),
        deadline_s=deadline_s + 15,
    )
    for (sp, url), r in zip(items, results, strict=True):
        if r.returncode != 0:
            state = "running" if sp.alive() else f"exited {sp.proc.returncode}"
            raise RuntimeError(
                f"{what} in {sp.ns} not ready at {url} ({state}): {r.stderr.strip()}\n"
                f"--- its log ---\n{sp.errors()}"
            )


@dataclass(frozen=True)
class S3Request:
    method: str
    #: The request path, with its query string if it had one.
    path: str
    status: int
    #: The Range header, when the server logs it (the capped stand-in does, moto does not).
    range: str | None = None
    #: The server's connection serial number, when it logs one (the capped stand-in).
    connection: int | None = None
    #: Body bytes sent, when the server logs them (the capped stand-in).
    bytes_sent: int | None = None


def blob_bytes(requests: Sequence[S3Request], sizes: Mapping[str, int]) -> dict[str, Any] | None:
    """S3 bytes of each blob's data (GET bodies, from the server's own log) against its size:
    ``{"per_blob": {digest: ratio}, "max_ratio", "mean_ratio"}``; None when the log has no
    byte counts (moto's). ``sizes``: digest (``sha256:...``) -> bytes.

    >>> reqs = [S3Request("GET", "/b/docker/registry/v2/blobs/sha256/ab/abcd/data", 206,
    ...                   bytes_sent=n) for n in (60, 60)]
    >>> blob_bytes(reqs, {"sha256:abcd": 100})["max_ratio"]
    1.2
    """
    if any(r.bytes_sent is None for r in requests):
        return None
    sent = dict.fromkeys(sizes, 0)
    for r in requests:
        path = r.path.split("?", 1)[0]
        if r.method != "GET" or not path.endswith("/data") or "/blobs/" not in path:
            continue
        digest = "sha256:" + path.rsplit("/", 2)[-2]
        if digest in sent:
            sent[digest] += int(r.bytes_sent or 0)
    ratios = {d: round(sent[d] / size, 3) for d, size in sizes.items() if size > 0}
    if not ratios:
        return None
    return {
        "per_blob": ratios,
        "max_ratio": max(ratios.values()),
        "mean_ratio": round(sum(ratios.values()) / len(ratios), 3),
    }


def parse_moto_log(text: str) -> list[S3Request]:
    """The S3 requests in a slice of moto's log (``/moto-api`` probes left out)."""
    out = []
    for raw in text.splitlines():
        m = _LINE.search(_ANSI.sub("", raw))
        if m and not m["path"].startswith("/moto-api"):
            out.append(S3Request(m["method"], m["path"], int(m["status"])))
    return out


def backend_counts(requests: Sequence[S3Request], *, detailed: bool = False) -> dict[str, int]:
    """GETs (all, and of blob data), HEADs and all requests of a phase; ``detailed`` (the
    log has ranges and connections): also the GETs with a Range header and the number of
    connections the requests came on."""
    gets = [r for r in requests if r.method == "GET"]
    counts = {
        "s3_get": len(gets),
        "s3_blob_get": sum(1 for r in gets if r.path.split("?", 1)[0].endswith("/data")),
        "s3_head": sum(1 for r in requests if r.method == "HEAD"),
        "s3_requests": len(requests),
    }
    if detailed:
        counts["s3_range_get"] = sum(1 for r in gets if r.range is not None)
        counts["s3_connections"] = len({r.connection for r in requests})
    return counts


class S3:
    """moto in the S3 namespace; ``mark()``/``since()`` count what it served in a phase.

    The sweep's S3 stand-ins (this one and ``capped.CappedS3Server``) share ``endpoint``,
    ``role``, ``start``, ``seed``, ``mark``, ``since``, ``counts``, ``pids``, ``rss_kib``,
    ``log_files`` and ``describe``."""

    #: The CPU role of its processes in the report.
    role = "moto"

    def __init__(self, topo: Topology, procs: Procs) -> None:
        self.topo = topo
        self.procs = procs
        self.url_inside = f"http://127.0.0.1:{S3_PORT}"  # for jobs in the S3 namespace
        self.endpoint = f"http://{topo.plan.s3}:{S3_PORT}"  # for everyone else
        self.proc: Spawned | None = None

    def start(self, deadline_s: float = 60.0) -> None:
        self.proc = self.procs.spawn(
            "moto",
            self.topo.s3,
            [venv_binary("moto_server"), "-H", "0.0.0.0", "-p", str(S3_PORT)],
            env={"PYTHONUNBUFFERED": "1"},
            unset=AWS_UNSET,
            name="moto",
        )
        wait_ready(self.procs, [(self.proc, self.url_inside + "/moto-api/")], deadline_s, "moto")

    def seed(self, image: str, image_bytes: int, layers: int, deadline_s: float) -> dict[str, Any]:
        """Write the image into the bucket from inside the S3 namespace; the seed's JSON."""
        argv = python_argv(
            "benchmarks.scaleup.seed",
            "--endpoint",
            self.url_inside,
            "--bucket",
            BUCKET,
            "--image",
            image,
            "--bytes",
            str(image_bytes),
            "--layers",
            str(layers),
        )
        (r,) = self.procs.run_all(
            "seed", [(self.topo.s3, argv)], parallel=1, deadline_s=deadline_s, env=AWS_ENV
        )
        if r.returncode != 0:
            raise RuntimeError(f"seeding the bucket failed ({r.returncode}): {r.stderr}")
        seeded: dict[str, Any] = json.loads(r.stdout)
        return seeded

    def mark(self, deadline_s: float = 15.0) -> int:
        """Byte offset in moto's log after every request answered so far.

        werkzeug logs a request before answering it, so once a unique marker request (sent
        from inside the S3 namespace) is answered and its line is in the file, every earlier
        answered request is in the file too."""
        assert self.proc is not None
        marker = f"{_SYNC}{uuid.uuid4().hex}"
        (r,) = self.procs.run_all(
            "probe",
            [(self.topo.s3, probe_argv(self.url_inside + marker, 5.0, once=True))],
            parallel=1,
            deadline_s=deadline_s,
        )
        if r.returncode != 0:
            raise RuntimeError(f"moto did not answer the sync probe: {r.stderr}")
        end = time.monotonic() + deadline_s
        needle = marker.encode()
        while time.monotonic() < end:
            data = self.proc.out_path.read_bytes()
            at = data.find(needle)
            if at >= 0:
                nl = data.find(b"\n", at)
                if nl >= 0:
                    return nl + 1
            time.sleep(0.05)
        raise RuntimeError("moto's log never showed the sync marker")

    def since(self, offset: int) -> list[S3Request]:
        """The requests logged between ``offset`` (a ``mark()``) and a fresh mark."""
        end = self.mark()
        assert self.proc is not None
        with open(self.proc.out_path, "rb") as f:
            f.seek(offset)
            chunk = f.read(end - offset)
        return parse_moto_log(chunk.decode("utf-8", "replace"))

    def counts(self, requests: Sequence[S3Request]) -> dict[str, int]:
        return backend_counts(requests)

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None and self.proc.alive() else []

    def rss_kib(self) -> int | None:
        return status_kib(self.proc.pid, "VmRSS") if self.proc is not None else None

    def log_files(self) -> list[Path]:
        return [self.proc.out_path] if self.proc is not None else []

    def describe(self) -> dict[str, Any]:
        return {"server": "moto", "conn_mbit": None}


def registry_config(s3_endpoint: str, workdir: Path) -> dict[str, Any]:
    """distribution's config: the rig's s3 driver settings, listening on the bridge."""
    dist = Distribution(
        s3_endpoint=s3_endpoint,
        bucket=BUCKET,
        port=REGISTRY_PORT,
        log_level="info",
        workdir=workdir,
        extra_config={
            "http": {"addr": f"0.0.0.0:{REGISTRY_PORT}"},
            # as the stock registry:2 image's /etc/docker/registry/config.yml
            "storage": {"cache": {"blobdescriptor": "inmemory"}},
        },
    )
    return dist.config


def start_registry(
    topo: Topology, procs: Procs, s3_endpoint: str, workdir: Path, deadline_s: float = 30.0
) -> Spawned:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yml"
    # JSON is valid YAML.
    config.write_text(json.dumps(registry_config(s3_endpoint, workdir), indent=2))
    binary = shutil.which("docker-registry")
    if binary is None:
        raise RuntimeError("docker-registry is not installed (tests/rig/install-deps.sh)")
    sp = procs.spawn(
        "registry", topo.registry, [binary, "serve", str(config)], unset=AWS_UNSET, name="registry"
    )
    wait_ready(procs, [(sp, f"http://127.0.0.1:{REGISTRY_PORT}/v2/")], deadline_s, "registry")
    return sp


def sidecar_argv(s3_endpoint: str, data_dir: Path) -> list[str]:
    return python_argv(
        "regsidecar",
        "serve",
        "--listen",
        SIDECAR_LISTEN,
        "--data-dir",
        str(data_dir),
        "--storage",
        f"s3://{BUCKET}",
        "--s3-endpoint-url",
        s3_endpoint,
        "--s3-path-style",
        "--s3-region",
        "us-east-1",
    )


def start_sidecars(
    topo: Topology,
    procs: Procs,
    hosts: Sequence[int],
    s3_endpoint: str,
    data_root: Path,
    *,
    parallel: int,
    env: Mapping[str, str] | None = None,
    env_for: Callable[[int], Mapping[str, str]] | None = None,
    deadline_s: float = 90.0,
) -> list[Spawned]:
    """One sidecar per host (``env`` and ``env_for(i)`` added to its environment:
    ``REGSIDECAR_...`` settings), ``parallel`` starting at a time, each ready (``/readyz``
    200, i.e. it reached the bucket) before the next batch starts."""
    started: list[Spawned] = []
    for at in range(0, len(hosts), parallel):
        batch = []
        for i in hosts[at : at + parallel]:
            data_dir = data_root / f"h{i}"
            data_dir.mkdir(parents=True, exist_ok=True)
            sp = procs.spawn(
                "sidecars",
                topo.hosts[i],
                sidecar_argv(s3_endpoint, data_dir),
                env={
                    **AWS_ENV,
                    "PYTHONUNBUFFERED": "1",
                    **(env or {}),
                    **(env_for(i) if env_for else {}),
                },
                unset=AWS_UNSET,
                name=f"sidecar-h{i}",
            )
            batch.append(sp)
        started += batch
        wait_ready(procs, [(sp, SIDECAR_URL + "/readyz") for sp in batch], deadline_s, "sidecar")
    return started


def warm(
    topo: Topology, procs: Procs, hosts: Sequence[int], image: str, timeout_s: float
) -> list[dict[str, Any]]:
    """``regsidecar warm IMAGE`` through every host's sidecar, all hosts at once; the
    summaries (RuntimeError if any host failed)."""
    argv = python_argv(
        "regsidecar",
        "warm",
        image,
        "--registry",
        SIDECAR_URL,
        "--json",
        "--quiet",
        "--timeout",
        str(timeout_s),
    )
    results = procs.run_all(
        "warm",
        [(topo.hosts[i], argv) for i in hosts],
        parallel=max(1, len(hosts)),
        deadline_s=timeout_s + 30,
        env=AWS_ENV,
    )
    out = []
    for i, r in zip(hosts, results, strict=True):
        if r.returncode != 0:
            raise RuntimeError(f"warm on h{i} failed ({r.returncode}): {r.stdout} {r.stderr}")
        out.append(json.loads(r.stdout))
    return out
