"""What a new user meets against a sidecar on a directory store (the demo's, the embedded
default): the cache commands and ``warm`` say plainly that such a store keeps no cache,
rather than reporting an empty local cache or "0 already cached"."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.sidecar import Sidecar

pytestmark = pytest.mark.rig


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regsidecar", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_cache_commands_and_warm_say_a_directory_store_keeps_no_cache() -> None:
    with Sidecar([]) as sc:
        where = ["--listen", sc.host, "--data-dir", str(sc.data_dir)]
        for action in ("stats", "verify", "gc"):
            r = _cli("cache", action, *where)
            assert r.returncode == 0, (action, r.stderr)
            assert "serves a directory store" in r.stdout and "keeps no cache" in r.stdout
            assert "entries" not in r.stdout
        r = _cli("cache", "stats", "--json", *where)
        assert json.loads(r.stdout)["cache"] is None
        r = _cli("prune", "--no-docker", *where)
        assert r.returncode == 0, r.stderr
        assert "cache: skipped" in r.stdout and "directory store" in r.stdout
        r = _cli("warm", "regsidecar/hello", "--registry", sc.url, "--json")
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        assert report["warmed"] is False and "directory store" in report["reason"]
        assert "cached_before" not in report  # no "0 already cached" summary
