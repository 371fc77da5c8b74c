"""Typed application keys: the resources an app holds for its lifetime."""

from __future__ import annotations

from aiohttp import web

from regsidecar.config import Settings
from regsidecar.metrics import Metrics
from regsidecar.readiness import Readiness
from regsidecar.service import Registry

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
METRICS = web.AppKey("metrics", Metrics)
READINESS = web.AppKey("readiness", Readiness)
# Per request: the route kind parsed by the dispatcher, for metrics and the access log.
ROUTE = web.RequestKey("route", str)
