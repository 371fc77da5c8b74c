"""Every Prometheus collector, prefixed ``regsidecar_``, in one registry per application.

Labels stay bounded: never a digest, a tag or a repository name.

>>> metrics = Metrics()
>>> metrics.render().startswith(b"# HELP")
True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The collectors of one running sidecar."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            "Interrupted blob downloads continued with a Range request",
            registry=self.registry,
        )
        self.stale_serves = Counter(
            "regsidecar_stale_serves",
            "Answers given from last known state because every upstream failed",
            ["kind"],  # tag | link
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
