"""Typed application keys: the resources an app holds for its lifetime."""

from __future__ import annotations

from aiohttp import web

from regsidecar.config import Settings
from regsidecar.metrics import Metrics
from regsidecar.service import Registry

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
METRICS = web.AppKey("metrics", Metrics)
