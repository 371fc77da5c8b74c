"""Capacity model of a fleet pulling one image: a central registry vs a sidecar per host on S3.

Pure (no I/O): fits the measured scale-up points (``scaleup.json``, FORMATS.md section 2) and
extrapolates them with stated real-world parameters. Symbols (bytes, seconds, bytes/s)::

    S  image size            N  hosts pulling at once        R  S3 requests per pull
    central:  T(N) = t0 + max(N·S / B_central, S / B_host)
              every byte crosses the registry's NIC, shared by all hosts; one host alone is
              bounded by its own NIC
    sidecar:  T(N) = t1 + max(S / B_host_s3, N·R_key / Q_s3)
              every host reads S3 through its own NIC: B_host_s3 = min(B_host, C · B_conn),
              C the connections a host holds (docker's parallel layers x connections per
              blob, at most the window), B_conn S3's per-connection throughput; every host's
              GETs of one blob land on that blob's S3 prefix, whose request rate is Q_s3:
              R_key = 1 HEAD + the blob's parts (ranged GETs). Transfer and requests overlap
              (a host's parts stream while others' requests are answered), hence max; their
              sum is the bound if they did not overlap at all
    peers:    T(N) = t1 + M·N / Q_s3 + S / B_host_peer + D(N)·h
              each part of a blob has its own rendezvous tree of fanout F over the hosts;
              its root reads it from S3 once, every other host from its parent while the
              parent is still receiving it: a host downloads S and uploads about S
              ((N-1)/N of it), so B_host_peer = min(B_host, B_up, P·B_conn) with P the parts
              a host has in flight (each part's tree moves at its root's one S3 connection);
              D(N) = the trees' depth (log_F N), h the delay a hop adds (a request and a
              chunk); what still reaches S3 from every host are M sequential metadata steps
              (tag link, manifest link, manifest, a blob's size HEAD), N requests on one key
              each, at Q_s3 per prefix. S3 bytes per blob: its size, once

Fits (least squares): ``B_central`` and ``t0`` on the "central" points (all-ready time), with
``B_host`` known from the run's parameters; ``B_host_s3`` on the "sidecar" points with ``t1``
taken from the "warmed" points (a pull served by the host's own warm cache is the overhead
alone: with one image size, ``t1`` and ``S / B`` cannot be told apart from sidecar points),
else the central ``t0``.

>>> fit = fit_central([Point(1, 6.2), Point(10, 30.1)], size=50e6, b_host=2e6)  # doctest: +SKIP
>>> analyse(json.load(open("scaleup.json"))).markdown  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from regsidecar.pull.parts import choose_part_bytes

GIB = 1024**3
MBIT = 1e6 / 8  # bytes/s in one Mbit/s

#: The published figure we compare with: Uber's Kraken README ("Benchmark"): a 3G image with
#: 2 layers pulled by 2,600 hosts at once (5,200 blob downloads), 300 MB/s limit per agent,
#: 5 trackers and 5 origins: p50 10 s, p99 18 s, p99.9 22 s.
KRAKEN: dict[str, Any] = {
    "source": "https://github.com/uber/kraken#benchmark",
    "hosts": 2600,
    "image_bytes": 3 * GIB,
    "layers": 2,
    "p50_s": 10.0,
    "p99_s": 18.0,
    "p999_s": 22.0,
    "agent_limit_bytes_s": 300e6,
}


@dataclass(frozen=True)
class RealWorld:
    """Stated real-world parameters of the extrapolation (sources in ``SOURCES``); the
    download settings are regsidecar's defaults (``DownloadSettings``)."""

    central_bytes_s: float = 10_000 * MBIT  # 10 Gbit/s registry NIC
    host_bytes_s: float = 5_000 * MBIT  # 5 Gbit/s host NIC
    s3_conn_bytes_s: float = 90e6  # AWS: one request per 85-90 MB/s of throughput
    parallel_downloads: int = 3  # dockerd max-concurrent-downloads default
    s3_get_per_s: float = 5500.0  # AWS: GET/HEAD per second per partitioned prefix
    connections_per_blob: int = 8  # download.connections_per_blob (1: one GET per blob)
    max_connections: int = 32  # download.max_connections (per source, per host)
    part_bytes: int = 16 * 2**20  # download.part_bytes
    max_parts_per_blob: int = 16  # download.max_parts_per_blob
    host_up_bytes_s: float = 5_000 * MBIT  # the host NIC's other direction
    fanout: int = 2  # peers.fanout
    hop_s: float = 0.05  # a hop: a request round trip in a VPC (<1 ms) and a chunk, padded
    meta_steps: int = 4  # tag link, manifest link, manifest, blob HEAD: each N on one key

    def connections(self, layers: int) -> int:
        """S3 connections one host holds: docker's parallel layer downloads, each over up
        to ``connections_per_blob``, within the window's ``max_connections``."""
        blobs = max(1, min(self.parallel_downloads, layers))
        return max(1, min(self.max_connections, blobs * self.connections_per_blob))

    def s3_host_bytes_s(self, layers: int) -> float:
        return min(self.host_bytes_s, self.connections(layers) * self.s3_conn_bytes_s)

    def host_bound(self, layers: int) -> str:
        """Which limit sets B_host_s3."""
        if self.connections(layers) * self.s3_conn_bytes_s >= self.host_bytes_s:
            return "host NIC"
        return "S3 per-connection throughput"

    def parts(self, blob_bytes: float) -> int:
        """Ranged GETs of one blob (one plain GET when a blob gets one connection)."""
        if self.connections_per_blob <= 1 or blob_bytes <= 0:
            return 1
        part = choose_part_bytes(
            int(blob_bytes), self.part_bytes, None, max_parts=self.max_parts_per_blob
        )
        return max(1, math.ceil(blob_bytes / part))

    def key_requests(self, size: float, layers: int) -> int:
        """Requests of one host on the busiest S3 prefix: a layer's data key (1 HEAD and its
        parts; layers assumed equal)."""
        return 1 + self.parts(size / max(1, layers))


SOURCES = {
    "S3 request rate": "https://docs.aws.amazon.com/AmazonS3/latest/userguide/"
    "optimizing-performance.html (5,500 GET/HEAD per second per partitioned prefix)",
    "S3 per-connection throughput": "https://docs.aws.amazon.com/AmazonS3/latest/userguide/"
    "optimizing-performance-guidelines.html (one request per 85-90 MB/s)",
    "Kraken": KRAKEN["source"],
}


@dataclass(frozen=True)
class PeersRow:
    """The peer model at one configuration (every number modelled)."""

    n: int
    seconds: float
    meta_s: float  # M·N / Q_s3
    transfer_s: float  # S / B_host_peer
    depth: int
    hops_s: float  # D(N)·h
    bound: str  # which limit sets B_host_peer
    parts_in_flight: int
    s3_requests_per_key: int  # N size HEADs + the blob's parts (one GET per part)
    s3_bytes_per_blob: str = "1x its size"


def peers_at(real: RealWorld, n: int, size: float, layers: int, t1_s: float) -> PeersRow:
    """The peer model (see the module docstring) with the stated parameters ``real``.

    >>> row = peers_at(RealWorld(), 2600, 3 * GIB, 2, 0.1)
    >>> row.depth, row.bound, round(row.seconds, 1)
    (11, 'host NIC', 7.7)
    """
    from regsidecar.peers.ring import depth

    parts = real.parts(size / max(1, layers))
    in_flight = max(1, min(real.parallel_downloads, layers)) * min(real.connections_per_blob, parts)
    rates = {
        "host NIC": real.host_bytes_s,
        "host uplink": real.host_up_bytes_s * (n / (n - 1) if n > 1 else math.inf),
        "S3 per-connection throughput at the part roots": in_flight * real.s3_conn_bytes_s,
    }
    bound = min(rates, key=lambda k: rates[k])
    transfer = size / rates[bound]
    meta = real.meta_steps * n / real.s3_get_per_s
    d = depth(n, real.fanout)
    return PeersRow(
        n=n,
        seconds=t1_s + meta + transfer + d * real.hop_s,
        meta_s=meta,
        transfer_s=transfer,
        depth=d,
        hops_s=d * real.hop_s,
        bound=bound,
        parts_in_flight=in_flight,
        s3_requests_per_key=n + parts,
    )


def requests_per_pull(layers: int) -> int:
    """S3 requests of one single-platform pull through a cold sidecar: the tag link, the
    revision link and the manifest, then per blob (layers + config) its repository link, a
    HEAD for the size and the GET of the data."""
    return 3 + 3 * (layers + 1)


@dataclass(frozen=True)
class Point:
    n: int
    seconds: float


@dataclass(frozen=True)
class CentralModel:
    t0_s: float
    b_central: float  # bytes/s; math.inf when the points show no growth with N
    b_host: float | None  # bytes/s; None: no per-host bound

    def time(self, n: int, size: float) -> float:
        host = size / self.b_host if self.b_host else 0.0
        return self.t0_s + max(n * size / self.b_central, host)


@dataclass(frozen=True)
class SidecarModel:
    t1_s: float
    b_host_s3: float  # bytes/s each host gets from S3
    requests: float  # R_key: a host's requests on the busiest S3 prefix
    q_s3: float  # backend requests per second per prefix

    def transfer_s(self, size: float) -> float:
        return size / self.b_host_s3

    def requests_s(self, n: int) -> float:
        return n * self.requests / self.q_s3

    def time(self, n: int, size: float) -> float:
        return self.t1_s + max(self.transfer_s(size), self.requests_s(n))


@dataclass(frozen=True)
class Fit:
    """A fitted model, the points it was fitted to and ``measured - modelled`` per point."""

    model: CentralModel | SidecarModel
    size: float
    points: tuple[Point, ...]
    residuals: tuple[float, ...]
    notes: tuple[str, ...] = ()

    @property
    def rms_s(self) -> float:
        return math.sqrt(sum(r * r for r in self.residuals) / len(self.residuals))


def _lsq_box(y: Sequence[float], b: Sequence[float], lo: float, hi: float) -> tuple[float, ...]:
    """min sum (y - t - b x)^2 over t >= 0, lo <= x <= hi: (sse, t, x). Convex in (t, x): the
    optimum is the stationary point if feasible, else on an edge of the box, where the 1-D
    optimum clipped to the edge is that edge's optimum."""
    n, pairs = len(y), list(zip(y, b, strict=True))
    bb = sum(bi * bi for bi in b)

    def best_t(x: float) -> float:
        return max(0.0, sum(yi - bi * x for yi, bi in pairs) / n)

    x0 = min(max(lo if bb == 0 else sum(bi * yi for yi, bi in pairs) / bb, lo), hi)
    cands = [(best_t(lo), lo), (0.0, x0)] + ([(best_t(hi), hi)] if math.isfinite(hi) else [])
    mb, my = sum(b) / n, sum(y) / n
    var = sum((bi - mb) ** 2 for bi in b)
    if var > 0:
        x = sum((bi - mb) * (yi - my) for yi, bi in pairs) / var
        if my - x * mb >= 0 and lo <= x <= hi:
            cands.append((my - x * mb, x))
    return min((sum((yi - t - bi * x) ** 2 for yi, bi in pairs), t, x) for t, x in cands)


def _fit_max(y: Sequence[float], u: Sequence[float], c: float) -> tuple[float, float]:
    """Least squares of y_i = t + max(u_i x, c) over t >= 0, x >= 0: (t, x). Term i switches
    from c to u_i x at x = c / u_i; between two such breakpoints the model is linear in
    (t, x), so each interval is a box-constrained linear least squares."""
    edges = [0.0, *sorted({c / ui for ui in u if c > 0}), math.inf]
    best = min(
        _lsq_box(
            [yi - (0.0 if ui * lo >= c else c) for yi, ui in zip(y, u, strict=True)],
            [ui if ui * lo >= c else 0.0 for ui in u],
            lo,
            hi,
        )
        for lo, hi in itertools.pairwise(edges)
    )
    return best[1], best[2]


def fit_central(points: Sequence[Point], size: float, b_host: float | None) -> Fit:
    """Fit ``t0`` and ``B_central`` of ``T = t0 + max(N·S/B_central, S/B_host)``."""
    if not points:
        raise ValueError("no central points to fit")
    host = size / b_host if b_host else 0.0
    t0, x = _fit_max([p.seconds for p in points], [p.n * size for p in points], host)
    model = CentralModel(t0, 1 / x if x > 0 else math.inf, b_host)
    notes = ("fewer than 3 points: the fit passes through them",) if len(points) < 3 else ()
    return _fit(model, size, points, notes)


def fit_sidecar(
    points: Sequence[Point], size: float, t1_s: float, requests: float, q_s3: float
) -> Fit:
    """Fit ``B_host_s3`` of ``T = t1 + max(S/B_host_s3, N·R_key/Q_s3)`` with ``t1``, R_key
    and Q given (in the rig the request term is far below the transfer term)."""
    if not points:
        raise ValueError("no sidecar points to fit")
    # t1 fixed: S / B is the mean of what is left of each point
    x = max(0.0, statistics.fmean(p.seconds - t1_s for p in points))
    x /= size
    model = SidecarModel(t1_s, 1 / x if x > 0 else math.inf, requests, q_s3)
    return _fit(model, size, points, ())


def _fit(
    model: CentralModel | SidecarModel, size: float, pts: Sequence[Point], notes: tuple[str, ...]
) -> Fit:
    res = tuple(p.seconds - model.time(p.n, size) for p in pts)
    return Fit(model, size, tuple(pts), res, notes)


@dataclass(frozen=True)
class Row:
    """One extrapolated configuration: both architectures, every number modelled."""

    n: int
    size: float
    layers: int
    central_s: float
    central_bound: str
    sidecar_s: float
    sidecar_transfer_s: float
    sidecar_requests_s: float
    sidecar_bound: str = ""
    connections: int = 0  # per host
    parts: int = 0  # ranged GETs per layer
    key_requests: int = 0  # R_key

    @property
    def sidecar_sum_s(self) -> float:
        """The bound if transfer and requests did not overlap at all."""
        return self.sidecar_s + min(self.sidecar_transfer_s, self.sidecar_requests_s)


@dataclass
class Analysis:
    """What :func:`analyse` returns: the fits, the extrapolation and its Markdown."""

    central: Fit | None
    sidecar: Fit | None
    warmed: Fit | None
    t0_s: float
    t1_s: float
    t1_source: str
    layers: int
    requests: float
    requests_source: str
    real: RealWorld
    eff_central: float
    eff_host: float
    rows: list[Row] = field(default_factory=list)
    kraken: Row | None = None
    peer_rows: list[PeersRow] = field(default_factory=list)
    peer_kraken: PeersRow | None = None
    peer_points: list[Point] = field(default_factory=list)  # measured in the rig
    skipped: list[str] = field(default_factory=list)
    markdown: str = ""

    def at(self, n: int, size: float, layers: int | None = None) -> Row:
        """Both models at ``n`` hosts, real-world parameters, this analysis' fitted values;
        R is the measured one for the run's layer count, else computed."""
        layers = self.layers if layers is None else layers
        r = self.requests if layers == self.layers else float(requests_per_pull(layers))
        return extrapolate(
            n, size, layers, r, self.real, self.t0_s, self.t1_s, self.eff_central, self.eff_host
        )


# -- from scaleup.json to the fits, the extrapolation and its Markdown -----------------------


def points(scaleup: Mapping[str, Any], scenario: str) -> tuple[list[Point], list[str]]:
    """(N, all-ready seconds) of every run of ``scenario``; runs with failures are skipped
    (their all-ready time is undefined) and named in the second list."""
    out: list[Point] = []
    skipped: list[str] = []
    for run in scaleup.get("runs", []):
        if run.get("scenario") != scenario:
            continue
        summary = (run.get("pull") or {}).get("summary") or {}
        ready = summary.get("all_ready_s")
        if ready is None:
            skipped.append(f"{scenario} N={run.get('n')}: {summary.get('failed', '?')} failed")
            continue
        out.append(Point(int(run["n"]), float(ready)))
    return sorted(out, key=lambda p: p.n), skipped


def measured_requests(scaleup: Mapping[str, Any]) -> float | None:
    """S3 requests per pull seen by the backend in the sidecar runs (mean over runs)."""
    per: list[float] = []
    for run in scaleup.get("runs", []):
        backend = run.get("backend") or {}
        n = int(run.get("n") or 0)
        if run.get("scenario") != "sidecar" or n <= 0:
            continue
        total = backend.get("s3_requests")
        if total is None and backend.get("s3_get") is not None:
            total = backend["s3_get"] + (backend.get("s3_head") or 0)
        if total:
            per.append(total / n)
    return statistics.fmean(per) if per else None


def _eff(fitted: float | None, nominal: float | None) -> float:
    """Share of a run's bandwidth cap the fit reached, capped at 1 (never credit more)."""
    if not fitted or not nominal or not math.isfinite(fitted):
        return 1.0
    return min(1.0, fitted / nominal)


def extrapolate(
    n: int,
    size: float,
    layers: int,
    requests: float,
    real: RealWorld,
    t0_s: float = 0.0,
    t1_s: float = 0.0,
    eff_central: float = 1.0,
    eff_host: float = 1.0,
) -> Row:
    """Both models at ``n`` hosts with the real-world bandwidths (times the efficiencies)."""
    central = CentralModel(t0_s, real.central_bytes_s * eff_central, real.host_bytes_s * eff_host)
    key = real.key_requests(size, layers)
    sidecar = SidecarModel(t1_s, real.s3_host_bytes_s(layers) * eff_host, key, real.s3_get_per_s)
    assert central.b_host is not None
    nic = n * size / central.b_central >= size / central.b_host
    transfer, reqs = sidecar.transfer_s(size), sidecar.requests_s(n)
    return Row(
        n=n,
        size=size,
        layers=layers,
        central_s=central.time(n, size),
        central_bound="registry NIC" if nic else "host NIC",
        sidecar_s=sidecar.time(n, size),
        sidecar_transfer_s=transfer,
        sidecar_requests_s=reqs,
        sidecar_bound=real.host_bound(layers) if transfer >= reqs else "S3 requests per prefix",
        connections=real.connections(layers),
        parts=real.parts(size / max(1, layers)),
        key_requests=key,
    )


def analyse(
    scaleup: Mapping[str, Any],
    real: RealWorld | None = None,
    hosts: Sequence[int] = (100, 1000, 2600),
    image_bytes: float = GIB,
) -> Analysis:
    """Fit the models to a parsed ``scaleup.json`` and extrapolate (pure)."""
    real = real or RealWorld()
    params = scaleup.get("params") or {}
    size = float(params.get("image_bytes") or 0)
    layers = int(params.get("layers") or 5)
    host_bw = params["host_mbit"] * MBIT if params.get("host_mbit") else None
    central_bw = params["central_mbit"] * MBIT if params.get("central_mbit") else None
    skipped: list[str] = []

    def fit_of(scenario: str) -> list[Point]:
        pts, skip = points(scaleup, scenario)
        skipped.extend(skip)
        return pts if size > 0 else []

    c_pts, s_pts, w_pts = fit_of("central"), fit_of("sidecar"), fit_of("warmed")
    central = fit_central(c_pts, size, host_bw) if c_pts else None
    warmed = None
    if w_pts:
        mean = statistics.fmean(p.seconds for p in w_pts)
        warmed = _fit(CentralModel(mean, math.inf, None), size, w_pts, ())
        runs = f"{len(w_pts)} warmed run" + ("s" if len(w_pts) != 1 else "")
        t1, t1_source = mean, f"mean all-ready time of {runs} (measured)"
    elif central is not None:
        assert isinstance(central.model, CentralModel)
        t1, t1_source = central.model.t0_s, "the central fit's t0 (no warmed runs)"
    else:
        t1, t1_source = 0.0, "0 (no warmed or central runs)"
    r_meas = measured_requests(scaleup)
    requests = r_meas if r_meas is not None else float(requests_per_pull(layers))
    r_source = (
        "measured: S3 requests / pulls in the sidecar runs"
        if r_meas is not None
        else f"stated: computed for {layers} layers (3 + 3 x (layers + 1))"
    )
    q_bench = float(params.get("s3_req_s") or real.s3_get_per_s)
    sidecar = fit_sidecar(s_pts, size, t1, requests, q_bench) if s_pts else None

    eff_c = 1.0
    t0 = t1
    if central is not None:
        assert isinstance(central.model, CentralModel)
        eff_c = _eff(central.model.b_central, central_bw)
        t0 = central.model.t0_s
    eff_h = 1.0
    if sidecar is not None:
        assert isinstance(sidecar.model, SidecarModel)
        eff_h = _eff(sidecar.model.b_host_s3, host_bw)
    a = Analysis(
        central, sidecar, warmed, t0, t1, t1_source, layers, requests, r_source, real,
        eff_c, eff_h, skipped=skipped,
    )  # fmt: skip
    a.rows = [a.at(n, image_bytes) for n in hosts]
    a.kraken = a.at(int(KRAKEN["hosts"]), KRAKEN["image_bytes"], int(KRAKEN["layers"]))
    a.peer_rows = [peers_at(real, n, image_bytes, layers, a.t1_s) for n in hosts]
    a.peer_kraken = peers_at(
        real, int(KRAKEN["hosts"]), KRAKEN["image_bytes"], int(KRAKEN["layers"]), a.t1_s
    )
    a.peer_points, skip = points(scaleup, "peers")
    a.skipped.extend(skip)
    a.markdown = render(a, params)
    return a


# -- Markdown -------------------------------------------------------------------------------


def _s(v: float) -> str:
    if not math.isfinite(v):
        return "∞"
    text = f"{v:,.1f} s" if v < 100 else f"{v:,.0f} s"
    return text + (f" ({v / 60:,.0f} min)" if v >= 600 else "")


def _mbit(v: float | None) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return "∞ (no growth with N)"
    mbit = v / MBIT
    return f"{mbit / 1000:,.2f} Gbit/s" if mbit >= 1000 else f"{mbit:,.1f} Mbit/s"


def _size(v: float) -> str:
    return f"{v / GIB:g} GiB" if v >= GIB else f"{v / 2**20:g} MiB"


def render(a: Analysis, params: Mapping[str, Any]) -> str:
    """The model section of RESULTS.md: equations, fitted parameters, residuals, the
    extrapolation and the Kraken comparison; every number says what kind it is."""

    def cap(fitted: float, key: str, eff: float) -> str:
        if not params.get(key) or not math.isfinite(fitted):
            return ""
        return f" ({100 * eff:.0f}% of the {params[key]:g} Mbit/s cap)"

    out = [
        "```",
        "central:  T(N) = t0 + max(N·S / B_central, S / B_host)",
        "sidecar:  T(N) = t1 + max(S / B_host_s3, N·R_key / Q_s3)",
        "          B_host_s3 = min(B_host, C·B_conn)   C = min(window, layers in flight x "
        "connections per blob)",
        "          R_key = 1 HEAD + parts of one layer (its GETs, all on its S3 prefix)",
        "```",
        "",
        "S image bytes, N hosts pulling at once, T the time until every host has the image. "
        "Transfer and requests overlap (hosts stream parts while S3 answers others' "
        "requests), hence max; their sum is shown too, as the bound if they did not overlap.",
        "Kinds: **measured** (this rig or a cited publication), **stated** (an input of the "
        "model or of the run), **modelled** (fitted to measured points, or computed by the "
        "model).",
        "",
        "| parameter | value | kind |",
        "|---|--:|---|",
    ]
    if params.get("image_bytes"):
        out += [
            f"| S (benchmark image) | {_size(float(params['image_bytes']))}, "
            f"{params.get('layers', '?')} layers | stated (run parameter) |",
            f"| B_host (per-host cap of the run) | {_mbit(_get_bw(params, 'host_mbit'))} "
            "| stated (run parameter) |",
            f"| B_central cap of the run | {_mbit(_get_bw(params, 'central_mbit'))} "
            "| stated (run parameter) |",
        ]
    if a.central is not None:
        m = a.central.model
        assert isinstance(m, CentralModel)
        eff = cap(m.b_central, "central_mbit", a.eff_central)
        out += [
            f"| t0 | {_s(m.t0_s)} | modelled: least squares on {_pts(a.central, 'central')} |",
            f"| B_central (effective) | {_mbit(m.b_central)}{eff} | modelled: same fit |",
            f"| rms residual, central | {_s(a.central.rms_s)} | modelled |",
        ]
    out.append(f"| t1 | {_s(a.t1_s)} | {a.t1_source} |")
    if a.sidecar is not None:
        m2 = a.sidecar.model
        assert isinstance(m2, SidecarModel)
        eff = cap(m2.b_host_s3, "host_mbit", a.eff_host)
        out += [
            f"| B_host_s3 (effective) | {_mbit(m2.b_host_s3)}{eff} | modelled: least squares "
            f"on {_pts(a.sidecar, 'sidecar')}, t1 fixed |",
            f"| Q_s3 used in the fit | {m2.q_s3:,.0f} req/s | stated |",
            f"| rms residual, sidecar | {_s(a.sidecar.rms_s)} | modelled |",
        ]
    out += [f"| R (S3 requests per pull) | {a.requests:,.1f} | {a.requests_source} |", ""]
    fits = [("central", a.central), ("sidecar", a.sidecar), ("warmed (t1)", a.warmed)]
    if any(f is not None for _, f in fits):
        out += [
            "| scenario | N | all-ready, measured | modelled | residual (measured - modelled) |",
            "|---|--:|--:|--:|--:|",
        ]
        for name, f in fits:
            if f is None:
                continue
            for p, res in zip(f.points, f.residuals, strict=True):
                out.append(
                    f"| {name} | {p.n} | {_s(p.seconds)} | {_s(p.seconds - res)} | {res:+.2f} s |"
                )
        out.append("")
    for note in a.skipped:
        out.append(f"Not fitted (no all-ready time): {note}.")
    if not (a.central or a.sidecar):
        out += ["No scale-up points to fit.", ""]
    r = a.real
    out += [
        "",
        "**Extrapolation (every number modelled).** Stated parameters: central registry NIC "
        f"{_mbit(r.central_bytes_s)}, host NIC {_mbit(r.host_bytes_s)}, S3 "
        f"{r.s3_conn_bytes_s / 1e6:g} MB/s per connection (B_conn), docker's "
        f"{r.parallel_downloads} parallel layer downloads, regsidecar's download defaults "
        f"({r.connections_per_blob} connections per blob, window {r.max_connections}, parts "
        f"of {r.part_bytes / 2**20:g} MiB, at most {r.max_parts_per_blob} per blob), "
        f"Q_s3 = {r.s3_get_per_s:,.0f} GET/s per prefix (each layer's data key is one "
        "prefix: every host reads the same key); "
        + (
            f"t0 = {_s(a.t0_s)}, t1 = {_s(a.t1_s)} and the bandwidth efficiencies "
            f"({100 * a.eff_central:.0f}% central, {100 * a.eff_host:.0f}% host) from the fits "
            "above"
            if a.central or a.sidecar
            else "t0 = t1 = 0 and nominal bandwidths (nothing to fit)"
        )
        + ". Layers are assumed equal in size.",
        "",
        "| hosts | image | central: all ready | central bound by | sidecar: all ready "
        "| sidecar: S / B_host_s3, N·R_key / Q_s3 | sidecar bound by | sum (no overlap) "
        "| central / sidecar |",
        "|--:|---|--:|---|--:|---|---|--:|--:|",
    ]
    out += [_row_md(row) for row in a.rows]
    out += [
        "",
        "R_key counts one host's requests on one layer's data key, where all hosts meet: its "
        "size HEAD and its parts (the other requests of a pull, tag and repository links, go "
        "to other prefixes). S3 splits a prefix that stays busy (answering 503 SlowDown "
        "meanwhile, which shrinks the sidecars' windows and is retried), so one prefix per key "
        "is the pessimistic case.",
    ]
    if a.kraken is not None:
        k = a.kraken
        one = a.real.__class__(**{**a.real.__dict__, "connections_per_blob": 1})
        single = extrapolate(
            k.n, k.size, k.layers, a.requests, one, a.t0_s, a.t1_s, a.eff_central, a.eff_host
        )
        out += [
            "",
            f"**Compared with Kraken** (Uber's P2P registry; {KRAKEN['source']}): a 3G image "
            "(taken as 3 GiB) with 2 layers pulled by 2,600 hosts at once, 300 MB/s limit per "
            "agent, 5 trackers and 5 origins. The model gives the time until the last host is "
            "ready (no spread), so compare it with Kraken's p99 / p99.9.",
            "",
            "| system | hosts | image | p50 | p99 | p99.9 | all hosts ready | kind |",
            "|---|--:|---|--:|--:|--:|--:|---|",
            f"| Kraken | 2,600 | 3G, 2 layers | {_s(KRAKEN['p50_s'])} | {_s(KRAKEN['p99_s'])} "
            f"| {_s(KRAKEN['p999_s'])} | - | measured (published by Uber) |",
            f"| regsidecar on S3, ranged parts | 2,600 | {_size(k.size)}, 2 layers | - | - | - "
            f"| {_s(k.sidecar_s)} | modelled: bound by {k.sidecar_bound} "
            f"({_s(k.sidecar_transfer_s)} transfer at {_mbit(k.size / k.sidecar_transfer_s)} "
            f"over {k.connections} connections; {_s(k.sidecar_requests_s)} of S3 requests: "
            f"{k.key_requests} per host on each layer's key, {k.parts} parts of "
            f"{_size(k.size / k.layers / k.parts)}); {_s(k.sidecar_sum_s)} if nothing "
            "overlapped |",
            f"| regsidecar on S3, one connection per blob | 2,600 | {_size(k.size)}, 2 layers "
            f"| - | - | - | {_s(single.sidecar_s)} | modelled: bound by {single.sidecar_bound} "
            f"({single.connections} connections) |",
            f"| central registry | 2,600 | {_size(k.size)}, 2 layers | - | - | - "
            f"| {_s(k.central_s)} | modelled |",
            "",
            f"Which limit binds: with ranged parts a host holds {k.connections} S3 connections "
            f"(2 layers x {a.real.connections_per_blob}), worth "
            f"{_mbit(k.connections * a.real.s3_conn_bytes_s)}, more than its "
            f"{_mbit(a.real.host_bytes_s)} NIC, so the NIC sets the transfer term; the S3 "
            f"request rate of one prefix ({a.real.s3_get_per_s:,.0f} GET/s shared by 2,600 "
            f"hosts x {k.key_requests} requests) sets "
            f"{'the all-ready time' if k.sidecar_bound.startswith('S3 requests') else 'less'}"
            ". That term grows with N: S3 alone cannot keep a fleet of any size flat; fetching "
            "each part from S3 about once per fleet (peers) removes the N.",
        ]
    out += _peers_md(a)
    return "\n".join(out) + "\n"


def _peers_md(a: Analysis) -> list[str]:
    """The peer model's section: its stated parameters, the extrapolation, Kraken's case."""
    r, k = a.real, a.peer_kraken
    out = [
        "",
        "**With peers (every number modelled; stated parameters as above, and):** host "
        f"uplink {_mbit(r.host_up_bytes_s)}, tree fanout F = {r.fanout} (peers.fanout), "
        f"h = {r.hop_s * 1000:g} ms a hop (stated: a request round trip inside a VPC is "
        "under 1 ms and a 256 KiB chunk at 5 Gbit/s 0.4 ms; padded), M = "
        f"{r.meta_steps} metadata steps that every host still asks S3 (tag link, manifest "
        "link, manifest, a blob's size HEAD), t1 as above.",
        "",
        "| hosts | image | peers: all ready | M·N / Q_s3 | S / B_host_peer | D(N)·h "
        "| B_host_peer bound by | S3 requests on a layer's key | S3 bytes of a blob |",
        "|--:|---|--:|--:|--:|--:|---|--:|---|",
    ]
    layers = a.layers
    sizes = [row.size for row in a.rows]
    for row, size in zip(a.peer_rows, sizes, strict=True):
        out.append(_peer_row_md(row, size, layers))
    if a.peer_points:
        pts = ", ".join(f"N={p.n}: {_s(p.seconds)}" for p in a.peer_points)
        out += ["", f"Measured in the rig (peers scenario, all-ready): {pts}."]
    if k is not None:
        out += [
            "",
            "**Kraken's case with peers** (3 GiB in 2 layers, 2,600 hosts):",
            "",
            "| system | all hosts ready | bound by | kind |",
            "|---|--:|---|---|",
            f"| Kraken | p99 {_s(KRAKEN['p99_s'])}, p99.9 {_s(KRAKEN['p999_s'])} | - "
            "| measured (published by Uber) |",
            f"| regsidecar with peers | {_s(k.seconds)} | {k.bound} ({_s(k.transfer_s)} "
            f"for the 3 GiB at {_mbit(KRAKEN['image_bytes'] / k.transfer_s)}, "
            f"{k.parts_in_flight} parts in flight); then S3 requests per prefix "
            f"({_s(k.meta_s)}: {r.meta_steps} steps x 2,600 requests on one key each at "
            f"{r.s3_get_per_s:,.0f}/s); tree depth {k.depth} x {r.hop_s * 1000:g} ms "
            f"({_s(k.hops_s)}); S3: {k.s3_requests_per_key:,} requests and one copy of the "
            "bytes per layer | modelled |",
            "",
            "The binding limit is each host's NIC: every host downloads the image once and "
            "uploads about one copy to its children across the part trees. What still grows "
            "with N is the metadata every host reads from S3 itself (tags never come from "
            "peers): 4 steps of 2,600 requests on one key each; S3 splits a hot prefix, so "
            "one prefix per key is the pessimistic case.",
        ]
    return out


def _peer_row_md(row: PeersRow, size: float, layers: int) -> str:
    return (
        f"| {row.n:,} | {_size(size)}, {layers} layers | {_s(row.seconds)} | {_s(row.meta_s)} "
        f"| {_s(row.transfer_s)} | {_s(row.hops_s)} (D = {row.depth}) | {row.bound} "
        f"| {row.s3_requests_per_key:,} | {row.s3_bytes_per_blob} |"
    )


def _pts(fit: Fit, scenario: str) -> str:
    n = len(fit.points)
    return f"{n} measured {scenario} point" + ("s" if n != 1 else "")


def _get_bw(params: Mapping[str, Any], key: str) -> float | None:
    return params[key] * MBIT if params.get(key) else None


def _row_md(row: Row) -> str:
    ratio = row.central_s / row.sidecar_s if row.sidecar_s else math.inf
    return (
        f"| {row.n:,} | {_size(row.size)}, {row.layers} layers | {_s(row.central_s)} "
        f"| {row.central_bound} | {_s(row.sidecar_s)} "
        f"| {_s(row.sidecar_transfer_s)}, {_s(row.sidecar_requests_s)} | {row.sidecar_bound} "
        f"| {_s(row.sidecar_sum_s)} | {ratio:,.1f}x |"
    )
