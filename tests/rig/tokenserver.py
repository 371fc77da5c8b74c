"""A Docker-registry token server (the bearer flow of distribution's ``auth: token``).

It issues RS256 JWTs signed by a self-signed certificate it creates, carrying the certificate
in the ``x5c`` header, as distribution verifies them against its ``rootcertbundle``. Clients
authenticate to it with HTTP basic auth. Runs an aiohttp server on its own loop in a thread,
on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import secrets
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from .ports import LOOPBACK, free_port


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """``with TokenServer(workdir, users={"u": "p"}) as ts:`` then configure distribution with
    ``ts.distribution_auth()``. ``issued`` counts the tokens handed out."""

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str],
        *,
        service: str = "central",
        issuer: str = "rig-token-issuer",
    ) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}/token"
        self.users = users
        self.service = service
        self.issuer = issuer
        self.issued = 0
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.bundle = workdir / "token-root.pem"
        self.bundle.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def distribution_auth(self) -> dict[str, Any]:
        return {
            "auth": {
                "token": {
                    "realm": self.url,
                    "service": self.service,
                    "issuer": self.issuer,
                    "rootcertbundle": str(self.bundle),
                }
            }
        }

    def _token(self, subject: str, scope: str) -> str:
        access = []
        parts = scope.split(":")
        if len(parts) == 3 and parts[0] == "repository":
            access.append(
                {
                    "type": "repository",
                    "name": parts[1],
                    "actions": [a for a in parts[2].split(",") if a == "pull"],
                }
            )
        now = int(time.time())
        der = self._cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    async def _handle(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return web.Response(status=401)
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        if self.users.get(user) != password:
            return web.Response(status=401)
        self.issued += 1
        token = self._token(user, request.query.get("scope", ""))
        return web.json_response({"token": token, "access_token": token, "expires_in": 300})

    def start(self) -> TokenServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_get("/token", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, LOOPBACK, self.port).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="rig-token-server", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise TimeoutError("token server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
