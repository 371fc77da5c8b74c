"""docker and skopeo try HTTPS first on a plain-HTTP registry. Their TLS ClientHello is
answered 400 as before, but it is not a client request: no access-log line (it used to be a
``"method":"UNKNOWN" ... "status":400`` line for every pull) and no count in
``regsidecar_http_requests_total``; ``regsidecar_tls_probes_total`` has it instead."""

from __future__ import annotations

import re
import socket
import ssl

import aiohttp

from tests.sidecar import Sidecar


def _client_hello(port: int) -> None:
    """A real TLS handshake attempt (Python's ssl: a ClientHello), as docker's first try."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        try:
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                pass
        except (ssl.SSLError, OSError):
            pass  # the plain-HTTP answer is not a ServerHello


async def test_a_tls_probe_is_counted_apart_and_not_logged_as_a_request() -> None:
    with Sidecar([], env={"REGSIDECAR_LOG_ACCESS": "true"}) as sc:
        for _ in range(3):
            _client_hello(sc.port)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{sc.url}/v2/") as r:
                assert r.status == 200
            async with s.get(f"{sc.url}/metrics") as r:
                metrics = await r.text()
        logs = sc.logs()
    probes = re.search(r"^regsidecar_tls_probes_total (\S+)$", metrics, re.M)
    assert probes and float(probes.group(1)) == 3
    assert 'status="400"' not in metrics
    requests = [e for e in logs if e.get("msg") == "request"]
    assert [e["method"] for e in requests if e["status"] == 400] == []
    assert any(e["path"] == "/v2/" for e in requests)
    assert [e for e in logs if e.get("msg") == "bad request"] == []
