"""The scale-up load harness: pull clients that behave like dockerd, and their report.

* :mod:`~regsidecar.bench.puller` -- one client's pull, request for request as docker makes it
* :mod:`~regsidecar.bench.runner` -- N clients: targets, ramp, start barrier, result JSON
* :mod:`~regsidecar.bench.report` -- summary, merge, Markdown table, plots (matplotlib)

The JSON is ``benchmarks/FORMATS.md`` section 1; ``regsidecar bench pull|report`` is the CLI.
"""

from regsidecar.bench.puller import FAILURE_KINDS, MANIFEST_ACCEPT
from regsidecar.bench.runner import MAX_CLIENTS, PullParams, run_pull

__all__ = ["FAILURE_KINDS", "MANIFEST_ACCEPT", "MAX_CLIENTS", "PullParams", "run_pull"]
