"""Every Prometheus collector, prefixed ``regsidecar_``, in one registry per application.

Labels stay bounded: never a digest, a tag or a repository name.

>>> metrics = Metrics()
>>> metrics.render().startswith(b"# HELP")
True
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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

    def watch_clock(self, offset: Callable[[], float], jumps: Callable[[], float]) -> None:
        """Read the clock estimate at scrape time."""
        self.clock_offset.set_function(offset)
        self.clock_jumps.set_function(jumps)

    def render(self) -> bytes:
        return generate_latest(self.registry)
