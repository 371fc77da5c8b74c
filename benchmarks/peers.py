"""The peers regsidecar is measured against: nginx (sendfile) and a bare aiohttp handler.

Both run in the foreground as one child process each, on 127.0.0.1, with every file they
write (config, pid, logs, temp dirs) under a private work directory; both stop by PID.

>>> with Nginx(root="/var/cache/files") as ngx:  # doctest: +SKIP
...     run_hey(ngx.url + "/sha256/<hex>", concurrency=8, duration_s=10)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Self

from tests.rig.ports import LOOPBACK, free_port
from tests.rig.proc import ServerProcess, child_env, which

_NGINX_CONF = """\
{user}worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    access_log {work}/access.log;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen {host}:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


class _Child(ServerProcess):
    """A foreground server process with a private work dir, stopped by PID."""

    name = "server"

    def __init__(self, workdir: Path | None) -> None:
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        super().__init__(workdir, prefix=f"bench-{self.name}-", log_name=f"{self.name}.log")
        self.workdir.mkdir(parents=True, exist_ok=True)

    def _argv(self) -> list[str]:
        raise NotImplementedError

    def _ready_url(self) -> str:
        return self.url + "/"

    def start(self, deadline_s: float = 20.0) -> Self:
        self._start(self._argv(), self._ready_url(), env=child_env(), deadline_s=deadline_s)
        return self


class Nginx(_Child):
    """``nginx -c CONF -g 'daemon off;'``: one worker, sendfile on, serving files under ``root``.

    ``ready_path`` is a URL path that must answer 200 before the server counts as started.
    As root the worker runs as root too, so it can read files under 0700 temp directories.
    """

    name = "nginx"

    def __init__(
        self, root: str | Path, ready_path: str = "/", workdir: Path | None = None
    ) -> None:
        super().__init__(workdir)
        self.root = Path(root)
        self.ready_path = ready_path
        self.conf_path = self.workdir / "nginx.conf"
        self.conf_path.write_text(
            _NGINX_CONF.format(
                user="user root;\n" if os.geteuid() == 0 else "",
                work=self.workdir,
                host=LOOPBACK,
                port=self.port,
                root=self.root,
            )
        )

    def _argv(self) -> list[str]:
        return [
            which("nginx"),
            "-p", str(self.workdir),
            "-e", str(self.workdir / "error.log"),
            "-c", str(self.conf_path),
            "-g", "daemon off;",
        ]  # fmt: skip

    def _ready_url(self) -> str:
        return self.url + self.ready_path


_BARE_APP = """\
import sys
from aiohttp import web

async def handle(request):
    return web.json_response({"ok": True})

app = web.Application()
app.router.add_get("/", handle)
web.run_app(app, host=sys.argv[1], port=int(sys.argv[2]), access_log=None, print=None)
"""


class BareAiohttp(_Child):
    """A bare aiohttp app (default asyncio loop, no middleware, no access log) answering
    ``GET /`` with a small JSON body: the framework's ceiling for small responses."""

    name = "bare-aiohttp"

    def _argv(self) -> list[str]:
        return [sys.executable, "-c", _BARE_APP, LOOPBACK, str(self.port)]
