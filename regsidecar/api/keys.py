"""Typed application keys: the resources an app holds for its lifetime."""

from __future__ import annotations

from aiohttp import web

from regsidecar.auth.policy import Authenticator, Identity
from regsidecar.config import Settings
from regsidecar.metrics import Metrics
from regsidecar.readiness import Readiness
from regsidecar.service import Registry

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
METRICS = web.AppKey("metrics", Metrics)
READINESS = web.AppKey("readiness", Readiness)
# The bearer token /-/cache/* wants (DATA_DIR/control.token); unset: those endpoints refuse.
CONTROL_TOKEN = web.AppKey("control_token", str)
# None: auth is off and the sidecar is read-only for everyone.
AUTH: web.AppKey[Authenticator | None] = web.AppKey("auth")
# Per request: the route kind parsed by the dispatcher, for metrics and the access log.
ROUTE = web.RequestKey("route", str)
# Per request: body bytes sent with sendfile straight to the transport (which aiohttp's own
# count of a response's bytes never sees), for the access log and the served-bytes metrics.
SENDFILE_BYTES = web.RequestKey("sendfile_bytes", int)
# Per request: who made it, once regsidecar.api.auth.require has run (for the audit log).
IDENTITY = web.RequestKey("identity", Identity)
