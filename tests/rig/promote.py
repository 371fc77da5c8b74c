"""Run ``python -m regsidecar promote`` as a CI job would: a fresh process on the store,
timed from spawn to exit (Python start-up included).

>>> p = promote_cli("team/app@sha256:...", "qa", store=["--storage", str(root)])  # doctest: +SKIP
>>> p.returncode, p.stdout  # doctest: +SKIP
(0, 'team/app:qa  (new) -> sha256:...\\n')
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .proc import child_env

#: What ``Sidecar`` gives its process: dummy S3 keys moto accepts, no instance metadata.
CLI_ENV = {
    "AWS_ACCESS_KEY_ID": "rigtestaccesskey",
    "AWS_SECRET_ACCESS_KEY": "rigtestsecretkey",
    "AWS_EC2_METADATA_DISABLED": "true",
    "PYTHONUNBUFFERED": "1",
}


@dataclass(frozen=True)
class Promotion:
    """Exit status, output and wall time of one ``regsidecar promote`` run."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return (
            f"exit {self.returncode} in {self.elapsed_s:.2f}s: {' '.join(self.argv)}\n"
            f"--- stdout ---\n{self.stdout[-2000:]}\n--- stderr ---\n{self.stderr[-2000:]}"
        )


def promote_cli(
    *args: str,
    store: Sequence[str],
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Promotion:
    """``python -m regsidecar promote ARGS STORE-FLAGS``; never raises on the exit status."""
    argv = [sys.executable, "-m", "regsidecar", "promote", *args, *store]
    t0 = time.perf_counter()
    cp = subprocess.run(
        argv,
        env=child_env({**CLI_ENV, **(env or {})}, unset=["AWS_PROFILE"]),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    elapsed = time.perf_counter() - t0
    return Promotion(argv, cp.returncode, cp.stdout, cp.stderr, elapsed)


__all__ = ["CLI_ENV", "Promotion", "promote_cli"]
