"""The docker-like pull clients, importable from ``benchmarks`` (they live in regsidecar.bench).

>>> from benchmarks.puller import PullParams, run_pull
>>> params = PullParams("app:v1", ("http://127.0.0.1:5000",), clients=4)
>>> result = asyncio.run(run_pull(params))  # doctest: +SKIP
"""

from regsidecar.bench.puller import (
    FAILURE_KINDS,
    MANIFEST_ACCEPT,
    ClientPull,
    ClientResult,
    Options,
    classify,
    new_session,
)
from regsidecar.bench.report import markdown_table, merge, summarize
from regsidecar.bench.runner import MAX_CLIENTS, PullParams, read_targets, run_pull

__all__ = [
    "FAILURE_KINDS",
    "MANIFEST_ACCEPT",
    "MAX_CLIENTS",
    "ClientPull",
    "ClientResult",
    "Options",
    "PullParams",
    "classify",
    "markdown_table",
    "merge",
    "new_session",
    "read_targets",
    "run_pull",
    "summarize",
]
