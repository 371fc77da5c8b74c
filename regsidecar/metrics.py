"""Every Prometheus collector, prefixed ``regsidecar_``, in one registry per application.

Labels stay bounded: never a digest, a tag or a repository name.

>>> metrics = Metrics()
>>> metrics.render().startswith(b"# HELP")
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST

# No `_created` series beside every counter: they double the exposition for no reader here.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Seconds; from a cached manifest (~1 ms) to a multi-GiB layer over a slow link.
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Time to the upstream's response headers.
_UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The collectors of one running sidecar."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._request_children: dict[tuple[str, str, int, str], tuple[Any, Any, Any, Any]] = {}
        self._upstream_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._bytes_children: dict[str, Any] = {}
        self.clock_offset = Gauge(
            "regsidecar_clock_offset_seconds",
            "S3's clock minus the local clock, as estimated from S3 responses",
            registry=self.registry,
        )
        self.clock_jumps = Gauge(
            "regsidecar_clock_jumps",
            "Steps of the local wall clock seen while running (suspend/resume, date --set)",
            registry=self.registry,
        )

        self.upstream_retries = Counter(
            "regsidecar_upstream_retries",
            "Upstream calls retried after a transient error (5xx, SlowDown, timeout, reset)",
            registry=self.registry,
        )
        self.blob_resumes = Counter(
            "regsidecar_blob_resumes",
            "Interrupted blob downloads (parts) continued with a Range request",
            registry=self.registry,
        )
        self.download_requests = Counter(
            "regsidecar_download_requests",
            "GETs of blob data by source and kind: whole (one GET of the blob) or range (a "
            "part, or a resumption)",
            ["source", "kind"],
            registry=self.registry,
        )
        self.upstream_blob_bytes = Counter(
            "regsidecar_upstream_blob_bytes",
            "Blob bytes received from each source",
            ["source"],
            registry=self.registry,
        )
        self.download_corrupt = Counter(
            "regsidecar_download_corrupt",
            "Blob downloads whose bytes did not match their digest (nothing was published)",
            registry=self.registry,
        )
        self.tls_probes = Counter(
            "regsidecar_tls_probes",
            "TLS handshakes on the plain-HTTP port (docker and skopeo try HTTPS first); answered "
            "400 and kept out of regsidecar_http_requests_total and the access log",
            registry=self.registry,
        )
        self.connections_closed = Counter(
            "regsidecar_connections_closed",
            "Connections the server closed itself, by reason: header_timeout (no complete "
            "request head in limits.header_timeout_s), evicted (made room at "
            "limits.max_connections for a new one), refused (the bound, every slot busy)",
            ["reason"],
            registry=self.registry,
        )
        # Peer fetch (the sources of blob bytes are in upstream_blob_bytes{source="peer"}).
        self.peer_errors = Counter(
            "regsidecar_peer_errors",
            "Peer requests for a part given up on (down, busy, stalled, cut, refused)",
            registry=self.registry,
        )
        self.peer_quarantines = Counter(
            "regsidecar_peer_quarantines",
            "Peers quarantined for serving bytes that failed verification",
            registry=self.registry,
        )
        self.peer_uploads = Counter(
            "regsidecar_peer_uploads",
            "Blob requests from other sidecars on the peer listener, by outcome: served, "
            "busy (every upload slot taken: 429), refused (token), missing",
            ["outcome"],
            registry=self.registry,
        )
        self.peer_upload_bytes = Counter(
            "regsidecar_peer_upload_bytes",
            "Blob bytes sent to other sidecars",
            registry=self.registry,
        )
        self.peer_members = Gauge(
            "regsidecar_peer_members",
            "Peers in the current membership (this host included when listed)",
            registry=self.registry,
        )
        self.stale_serves = Counter(
            "regsidecar_stale_serves",
            "Answers given from last known state because every upstream failed",
            ["kind"],  # tag | link | tags (a tag list) | catalog | policy (a verdict)
            registry=self.registry,
        )
        self.policy_verdicts = Counter(
            "regsidecar_policy_verdicts",
            "Signature policy verdicts on manifests served, by outcome: accepted, refused, "
            "no-rule (no rule for the repository), signature-artifact (a signature itself); "
            "signed-by verdicts reused from the cache (a tag TTL) are not counted again",
            ["outcome"],
            registry=self.registry,
        )
        self.cache_corrupt = Counter(
            "regsidecar_cache_corrupt",
            "Cached files that failed verification and were removed",
            registry=self.registry,
        )

        self.pass_through = Counter(
            "regsidecar_pass_through_serves",
            "Blobs streamed to a client without caching (cache disk full or failing)",
            registry=self.registry,
        )
        self.cache_write_errors = Counter(
            "regsidecar_cache_write_errors",
            "Downloads abandoned because the cache disk failed (full, I/O error)",
            registry=self.registry,
        )

        # Writes (pushes through this sidecar and promotions).
        self.push_bytes = Counter(
            "regsidecar_push_bytes",
            "Blob bytes received by uploads and staged on local disk",
            registry=self.registry,
        )
        self.pushed = Counter(
            "regsidecar_pushed",
            "Objects written to the store by pushes, by kind: blob (incl. mounts), manifest",
            ["kind"],
            registry=self.registry,
        )
        self.tag_moves = Counter(
            "regsidecar_tag_moves",
            "Tags written or removed, by how: push, promote, delete",
            ["via"],
            registry=self.registry,
        )

        # Client requests, by route kind (a bounded set: base, manifest, blob, tags, ...).
        self.http_requests = Counter(
            "regsidecar_http_requests",
            "Client requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_seconds = Histogram(
            "regsidecar_http_request_duration_seconds",
            "Time from request to the last byte of the response, by route",
            ["route"],
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.cache_requests = Counter(
            "regsidecar_cache_requests",
            "Manifest and blob answers by where the bytes came from: hit (local cache), "
            "miss (fetched from upstream), store (a directory store's own file)",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.cache_bytes_served = Counter(
            "regsidecar_cache_served_bytes",
            "Response body bytes of manifests and blobs, by where they came from",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.upstream_requests = Counter(
            "regsidecar_upstream_requests",
            "Requests to upstream sources (primary S3 store, fallback registries) by outcome: "
            "ok, not_found, error",
            ["source", "method", "outcome"],
            registry=self.registry,
        )
        self.upstream_seconds = Histogram(
            "regsidecar_upstream_request_duration_seconds",
            "Time to an upstream's response headers (or its error)",
            ["source", "method"],
            buckets=_UPSTREAM_BUCKETS,
            registry=self.registry,
        )

    def observe_request(
        self,
        route: str,
        method: str,
        status: int,
        seconds: float,
        cache: str,
        body_bytes: int,
    ) -> None:
        """One answered client request (called from the access logger, after the last byte).

        The labelled children are looked up once per label combination and kept: resolving
        four ``labels()`` per request cost ~15 % of manifest throughput."""
        if method not in _METHODS:
            method = "other"  # clients choose the method: keep the label bounded
        key = (route, method, status, cache)
        children = self._request_children.get(key)
        if children is None:
            counted = bool(cache) and route in ("manifest", "blob") and status < 400
            children = (
                self.http_requests.labels(route, method, str(status)),
                self.http_seconds.labels(route),
                self.cache_requests.labels(route, cache) if counted else None,
                self.cache_bytes_served.labels(route, cache) if counted else None,
            )
            self._request_children[key] = children
        requests, duration, hits, served = children
        requests.inc()
        duration.observe(seconds)
        if hits is not None and served is not None:
            hits.inc()
            served.inc(body_bytes)

    def observe_upstream(self, source: str, method: str, outcome: str, seconds: float) -> None:
        key = (source, method, outcome)
        children = self._upstream_children.get(key)
        if children is None:
            children = (
                self.upstream_requests.labels(source, method, outcome),
                self.upstream_seconds.labels(source, method),
            )
            self._upstream_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_download_request(self, source: str, *, ranged: bool) -> None:
        self.download_requests.labels(source, "range" if ranged else "whole").inc()

    def upstream_bytes(self, source: str, n: int) -> None:
        child = self._bytes_children.get(source)
        if child is None:
            child = self._bytes_children[source] = self.upstream_blob_bytes.labels(source)
        child.inc(n)

    def watch_windows(self, windows: Callable[[], dict[str, WindowFigures]]) -> None:
        """Read each source's download window at scrape time (sources are configured, so
        the label is bounded)."""
        self.registry.register(_WindowCollector(windows))

    def watch_cache(self, stats: Callable[[], CacheFigures]) -> None:
        """Read the cache's size, limits and evictions at scrape time."""
        self.registry.register(_CacheCollector(stats))

    def watch_clock(self, offset: Callable[[], float], jumps: Callable[[], float]) -> None:
        """Read the clock estimate at scrape time."""
        self.clock_offset.set_function(offset)
        self.clock_jumps.set_function(jumps)

    def watch_breakers(self, states: Callable[[], dict[str, str]]) -> None:
        """Expose each source's circuit state at scrape time (sources are configured, so the
        label is bounded)."""
        self.registry.register(_BreakerCollector(states))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class CacheFigures(NamedTuple):
    entries: int
    bytes: int
    max_bytes: int
    free_disk_bytes: int
    evictions: int


class WindowFigures(NamedTuple):
    limit: int
    in_flight: int
    throttles: int
    best_per_conn_bytes_s: float


class _WindowCollector(Collector):
    def __init__(self, windows: Callable[[], dict[str, WindowFigures]]) -> None:
        self._windows = windows

    def collect(self) -> Iterator[Metric]:
        limit = GaugeMetricFamily(
            "regsidecar_download_window",
            "Connections this host's downloads may hold to a source now (adaptive)",
            labels=["source"],
        )
        open_ = GaugeMetricFamily(
            "regsidecar_download_connections",
            "Blob download connections open to a source",
            labels=["source"],
        )
        best = GaugeMetricFamily(
            "regsidecar_download_connection_rate_bytes",
            "The best rate one connection to a source has been seen to get (bytes/s)",
            labels=["source"],
        )
        throttles = CounterMetricFamily(
            "regsidecar_download_throttles",
            "Throttles and broken connections the download window backed off on",
            labels=["source"],
        )
        for source, f in self._windows().items():
            limit.add_metric([source], float(f.limit))
            open_.add_metric([source], float(f.in_flight))
            best.add_metric([source], f.best_per_conn_bytes_s)
            throttles.add_metric([source], float(f.throttles))
        yield from (limit, open_, best, throttles)


class _CacheCollector(Collector):
    def __init__(self, stats: Callable[[], CacheFigures]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        f = self._stats()
        for name, doc, value in (
            ("regsidecar_cache_entries", "Blobs and manifests in the local cache", f.entries),
            ("regsidecar_cache_size_bytes", "Bytes in the local cache", f.bytes),
            ("regsidecar_cache_max_bytes", "The cache's size bound (cache.max_bytes)", f.max_bytes),
            (
                "regsidecar_cache_disk_free_bytes",
                "Free bytes on the cache's disk",
                f.free_disk_bytes,
            ),
        ):
            yield GaugeMetricFamily(name, doc, value=float(value))
        yield CounterMetricFamily(
            "regsidecar_cache_evictions",
            "Cache entries removed to stay under the size and free-disk bounds",
            value=float(f.evictions),
        )


class _BreakerCollector(Collector):
    def __init__(self, states: Callable[[], dict[str, str]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "regsidecar_circuit_open",
            "1 while a source's circuit breaker is open or half-open",
            labels=["source"],
        )
        for source, state in self._states().items():
            family.add_metric([source], 0.0 if state == "closed" else 1.0)
        yield family
