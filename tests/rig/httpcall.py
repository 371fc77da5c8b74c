"""One HTTP request to a loopback server, whatever the status: for checking refusals
(401/403 with the OCI error body) and small API calls without a client library.

>>> r = call("POST", sc.url + "/v2/team/app/blobs/uploads/", auth=("reader", "r3ader"))
>>> r.status, r.error_codes()  # doctest: +SKIP
(403, ['DENIED'])
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from .ports import assert_loopback


@dataclass(frozen=True)
class Reply:
    """Status, headers (lower-cased names) and body of one response, and its wall time."""

    status: int
    headers: dict[str, str]
    body: bytes
    elapsed_s: float

    def json(self) -> Any:
        return json.loads(self.body)

    def error_codes(self) -> list[str]:
        """``code`` of each entry of an OCI error body (``{"errors": [...]}``)."""
        try:
            doc = self.json()
        except ValueError:
            return []
        return [e.get("code", "") for e in doc.get("errors", [])] if isinstance(doc, dict) else []

    def __str__(self) -> str:
        return f"{self.status} {self.headers} {self.body[:500]!r}"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def call(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    json_body: Any = None,
    auth: tuple[str, str] | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> Reply:
    """Send one request (Basic ``auth`` or Bearer ``token``); never raises on a status."""
    u = urllib.parse.urlsplit(url)
    assert u.hostname is not None
    assert_loopback(u.hostname)
    hdrs = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    if auth is not None:
        hdrs["Authorization"] = basic(*auth)
    elif token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    path = u.path + (f"?{u.query}" if u.query else "")
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout_s)
    try:
        t0 = time.perf_counter()
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - t0
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, elapsed)
    finally:
        conn.close()


__all__ = ["Reply", "basic", "call"]
