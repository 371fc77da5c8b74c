"""Readiness policy: a sidecar is ready when it has anywhere to serve a pull from."""

from __future__ import annotations

import pytest

from regsidecar.readiness import decide


@pytest.mark.parametrize(
    ("store", "fallback", "entries", "ready", "reason"),
    [
        (True, False, 0, True, "store"),
        (True, True, 5, True, "store"),
        (False, True, 0, True, "fallback"),
        (False, False, 1, True, "cache"),
        (False, False, 0, False, "no reachable store or fallback, and the cache is empty"),
    ],
)
def test_decide(store: bool, fallback: bool, entries: int, ready: bool, reason: str) -> None:
    assert decide(store_ok=store, fallback_ok=fallback, cache_entries=entries) == (ready, reason)
