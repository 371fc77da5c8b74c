"""CappedS3: a read-only S3 stand-in whose every connection is capped, like S3's.

S3 serves one connection at ~85-90 MB/s however fast the client is; throughput grows with
connections, not with a faster reader. To measure a reader against that on loopback, nginx
serves a registry:2 filesystem-driver tree (distribution's ``rootdirectory``) path style as
bucket ``BUCKET`` (key ``docker/registry/v2/blobs/...`` is file
``STORE/docker/registry/v2/blobs/...``), with ``limit_rate RATE`` on each request, i.e. on
each connection at a time::

    client --GET/HEAD /BUCKET/KEY (Range)----> nginx  alias STORE/, limit_rate, sendfile
           --HEAD, GET ?list-type=2&... /BUCKET[/] --> nginx --proxy--> s3list (walks STORE)

>>> with CappedS3(store, rate="40m") as s3:  # doctest: +SKIP
...     sidecar_args = ["--storage", f"s3://{s3.bucket}", "--s3-endpoint-url", s3.url,
...                     "--s3-path-style", "--s3-region", "us-east-1"]
...     mark = s3.mark()
...     ...
...     gets = [r for r in s3.requests(since=mark) if r.method == "GET" and r.key == key]

What it models:

* the per-connection bandwidth cap (``rate``: an nginx size per second, ``"40m"`` = 40 MiB/s,
  ``"512k"``, bytes; ``"0"`` = uncapped). Measured here: 256 MiB at ``40m`` in 6.8 s
  (6.4 s nominal), 8 MiB at ``4m`` in 1.9 s, 2 MiB at ``4m`` in 0.47 s. nginx paces by
  sleeping *after* each write for the bytes it wrote, so the last write of a response is
  never waited for; with its default 2 MiB per write (``sendfile_max_chunk``) a 2 MiB
  object came back at once, uncapped, and an 8 MiB one at ``4m`` in 0.96 s. So
  ``sendfile_max_chunk`` is set to ``PACE_MS`` worth of ``rate``: at most that much of a
  response escapes the cap, and the rate holds within ~7%;
* GetObject and HeadObject, with a single ``Range`` (206 + Content-Range; several ranges are
  answered with the whole object, as S3 does), ``Accept-Ranges: bytes`` (on 200s only:
  nginx leaves it off a 206), conditional GETs;
  404 with an S3 ``NoSuchKey`` XML body (so aws-sdk-go in distribution sees NoSuchKey), 416
  with ``InvalidRange``;
* HeadBucket (200, with a ``Date`` to learn the clock from), ListObjects V1 and V2 with
  prefix, delimiter, markers, tokens and ``max-keys`` (by ``tests.rig.s3list``).

What it does NOT model: signatures or credentials (any, or none, are accepted); SlowDown,
503s and request-rate limits; latency or time to first byte; per-prefix limits; MD5 ETags
(the ETag is nginx's ``"<mtime hex>-<size hex>"``, never a multipart one); writes
(PUT/POST/DELETE answer 405, multipart uploads do not exist); object subresources (an
object GET with ``?tagging`` etc. returns the object); listings are not rate-capped.

Every request is in ``access.log`` (written as each request ends, unbuffered);
``requests()`` parses it (``mark()`` gives a point to count from). A GET the client gave up
on is logged with the status it began with (200/206), ``completed=False`` and the bytes
nginx had written by then.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Self

from . import s3list
from .cappedlog import LOG_FIELDS, STATUS_PATH, CappedRequest, parse_log, wait_settled
from .ports import LOOPBACK, assert_loopback, free_port, tail_file
from .proc import ServerProcess, child_env, which

__all__ = ["PACE_MS", "CappedRequest", "CappedS3", "pace_chunk", "rate_bytes"]

#: nginx writes at most this long's worth of ``rate`` at once, then sleeps as long (see
#: the module docstring): small enough that the unpaced last write is negligible, large
#: enough that nginx's whole-millisecond sleeps stay accurate.
PACE_MS = 10

_NO_SUCH_KEY = (
    '<?xml version="1.0" encoding="UTF-8"?>\\n<Error><Code>NoSuchKey</Code>'
    "<Message>The specified key does not exist.</Message></Error>"
)
_INVALID_RANGE = (
    '<?xml version="1.0" encoding="UTF-8"?>\\n<Error><Code>InvalidRange</Code>'
    "<Message>The requested range is not satisfiable</Message></Error>"
)
_NO_SUCH_BUCKET = (
    '<?xml version="1.0" encoding="UTF-8"?>\\n<Error><Code>NoSuchBucket</Code>'
    "<Message>The specified bucket does not exist</Message></Error>"
)

_NGINX_CONF = """\
{user}worker_processes 1;
# A scale-up sweep opens up to ~32 connections per host at once, 40 hosts and more.
worker_rlimit_nofile 16384;
pid "{work}/nginx.pid";
error_log stderr warn;
events {{ worker_connections 8192; }}
http {{
    types {{ }}
    default_type application/octet-stream;
    log_format s3 escape=default '{log_format}';
    access_log "{work}/access.log" s3;
    sendfile on;
    tcp_nopush on;
    server_tokens off;
    keepalive_requests 1000000;
    client_body_temp_path "{work}/client_body";
    proxy_temp_path "{work}/proxy";
    fastcgi_temp_path "{work}/fastcgi";
    uwsgi_temp_path "{work}/uwsgi";
    scgi_temp_path "{work}/scgi";
    server {{
        listen {host}:{port};
        # S3 ignores a request for several ranges (whole object, 200); so does max_ranges 1.
        max_ranges 1;
        error_page 404 @no_such_key;
        error_page 416 @invalid_range;

        # Objects: GET/HEAD (the static module answers 405 to PUT/DELETE/POST).
        location /{bucket}/ {{
            alias "{store}/";
            limit_rate {rate};
            sendfile_max_chunk {chunk};
            # A directory is not an object: S3 says 404, not nginx's 301 or 403.
            if (-d $request_filename) {{ return 404; }}
        }}
        # The bucket itself: HeadBucket and listings go to the lister.
        location = /{bucket} {{ proxy_pass http://{lister_host}:{lister_port}; }}
        location = /{bucket}/ {{ proxy_pass http://{lister_host}:{lister_port}; }}
        location = {ready} {{ proxy_pass http://{lister_host}:{lister_port}; access_log off; }}
        location = {status} {{ stub_status; access_log off; }}
        location / {{ default_type application/xml; return 404 '{no_such_bucket}'; }}

        location @no_such_key {{ default_type application/xml; return 404 '{no_such_key}'; }}
        location @invalid_range {{
            default_type application/xml;
            return 416 '{invalid_range}';
        }}
    }}
}}
"""


class _Lister(ServerProcess):
    """``tests/rig/s3list.py`` on its own loopback port (nginx proxies the bucket to it)."""

    log_label = "s3list"

    def __init__(self, store: Path, bucket: str, workdir: Path, port: int | None = None) -> None:
        self.port = free_port() if port is None else port
        self.store = store
        self.bucket = bucket
        super().__init__(workdir, prefix="rig-s3list-", log_name="s3list.log")

    def argv(self) -> list[str]:
        # By path, not -m: the child's cwd is the work dir, and s3list needs only the stdlib.
        return [
            *(sys.executable, s3list.__file__, "--root", str(self.store)),
            *("--bucket", self.bucket, "--host", LOOPBACK, "--port", str(self.port)),
        ]

    def start(self, deadline_s: float = 20.0) -> Self:
        ready = f"http://{LOOPBACK}:{self.port}{s3list.READY_PATH}"
        self._start(self.argv(), ready, env=child_env(), deadline_s=deadline_s)
        return self


class CappedS3(ServerProcess):
    """nginx (``limit_rate`` per connection) + s3list, serving ``store`` as ``bucket``.

    Both run in the foreground as children, with config, pid, logs and temp dirs under
    the work dir (a temp dir removed by ``stop()`` unless ``workdir`` is given); both
    stop by PID. See the module docstring for what is and is not modelled.

    ``start()`` runs both here, on loopback. A harness that runs them elsewhere (inside a
    network namespace, listening on ``host="0.0.0.0"``) calls ``prepare()`` and spawns
    ``lister_argv()`` and ``nginx_argv()`` itself (both with cwd = the work dir), waits for
    ``ready_path`` on the server, and reads the log with ``tests.rig.cappedlog``::

        rig = CappedS3(store, rate="125000", host="0.0.0.0", port=9000, lister_port=9001,
                       workdir=work)
        rig.prepare()
        spawn(ns, rig.lister_argv()); spawn(ns, rig.nginx_argv())
    """

    log_label = "nginx"
    #: GET it through nginx: 200 once both halves (nginx and the lister) are up.
    ready_path = s3list.READY_PATH

    def __init__(
        self,
        store: Path,
        *,
        bucket: str = "capped",
        rate: str = "40m",
        workdir: Path | None = None,
        host: str = LOOPBACK,
        port: int | None = None,
        lister_port: int | None = None,
        pace_ms: int = PACE_MS,
    ) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise ValueError(f"not an S3 bucket name: {bucket!r}")
        if pace_ms < 1:
            raise ValueError("pace_ms must be at least 1")
        self.rate_bytes = rate_bytes(rate)
        #: nginx writes at most this long's worth of ``rate`` at once, then sleeps as long.
        self.pace_ms = pace_ms
        self.store = Path(store).resolve()
        self._bucket = bucket
        self.rate = rate
        #: Where nginx listens (the lister is always on the loopback of the same network).
        self.host = host
        self.port = free_port() if port is None else port
        super().__init__(workdir, prefix="rig-cappeds3-", log_name="nginx.log")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.access_log = self.workdir / "access.log"
        self.conf_path = self.workdir / "nginx.conf"
        self._lister = _Lister(self.store, bucket, self.workdir, port=lister_port)

    @property
    def url(self) -> str:
        """The S3 endpoint URL for path-style clients in the same network namespace
        (``http://127.0.0.1:PORT`` when nginx listens on loopback or on every address)."""
        host = LOOPBACK if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def chunk_bytes(self) -> int:
        """nginx's ``sendfile_max_chunk``: what one write sends before it sleeps."""
        return pace_chunk(self.rate_bytes, self.pace_ms) if self.rate_bytes else 2 << 20

    @property
    def lister_port(self) -> int:
        return self._lister.port

    @property
    def nginx_pid(self) -> int:
        """nginx's master; its one worker (which does the serving) is its child."""
        return self.pid

    @property
    def lister_pid(self) -> int:
        return self._lister.pid

    # -- lifecycle ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Check the tree and write nginx's config (``start()`` does it too)."""
        if not (self.store / "docker").is_dir():
            raise FileNotFoundError(f"{self.store} holds no docker/registry/v2 tree")
        self.conf_path.write_text(self._conf())

    def nginx_argv(self) -> list[str]:
        """nginx in the foreground on the config ``prepare()`` wrote."""
        return [
            *(which("nginx"), "-p", str(self.workdir), "-e", "stderr"),
            *("-c", str(self.conf_path), "-g", "daemon off;"),
        ]

    def lister_argv(self) -> list[str]:
        return self._lister.argv()

    def start(self, deadline_s: float = 20.0) -> Self:
        # Started here, in this process's network namespace: loopback only.
        assert_loopback(self.host)
        self.prepare()
        self._lister.start(deadline_s)
        try:
            # Ready once nginx answers *through* the lister: both halves are up.
            ready = self.url + self.ready_path
            self._start(self.nginx_argv(), ready, env=child_env(), deadline_s=deadline_s)
        except BaseException:
            self._lister.stop()
            raise
        return self

    def _conf(self) -> str:
        return _NGINX_CONF.format(
            # As root the worker runs as root too, so it reads stores under 0700 temp dirs.
            user="user root;\n" if os.geteuid() == 0 else "",
            work=self.workdir,
            host=self.host,
            port=self.port,
            lister_host=LOOPBACK,
            lister_port=self._lister.port,
            bucket=self.bucket,
            store=self.store,
            rate=self.rate,
            chunk=self.chunk_bytes,
            ready=s3list.READY_PATH,
            status=STATUS_PATH,
            log_format="\\t".join(LOG_FIELDS),
            no_such_key=_NO_SUCH_KEY,
            invalid_range=_INVALID_RANGE,
            no_such_bucket=_NO_SUCH_BUCKET,
        )

    def stop(self) -> None:
        """Stop nginx, then the lister (each by PID), then remove our own work dir."""
        try:
            try:
                self._stop_proc()
            finally:
                self._lister.stop()
        finally:
            self._remove_own_dir()

    def log_tail(self) -> str:
        return f"{tail_file(self.log_path)}\n--- s3list log tail ---\n{self._lister.log_tail()}"

    # -- request log (see tests.rig.cappedlog) ---------------------------------------------

    def mark(self) -> int:
        """A point in the request log (its byte offset once every finished request is in
        it): ``requests(since=mark)`` returns only requests that finish after it."""
        self.sync()
        try:
            return self.access_log.stat().st_size
        except FileNotFoundError:
            return 0

    def requests(self, *, since: int = 0, sync: bool = True) -> list[CappedRequest]:
        """Requests logged after byte offset ``since``, oldest first.

        ``sync``: first wait (bounded, see ``sync``) until every request that has ended
        is in the log.
        """
        if sync:
            self.sync()
        try:
            with open(self.access_log, "rb") as f:
                f.seek(since)
                chunk = f.read()
        except FileNotFoundError:
            return []
        return parse_log(chunk, self.bucket)

    def sync(self, settle_s: float = 1.0) -> None:
        """Wait until no request is in progress (for at most ``settle_s``), so that every
        request that has ended is in the access log (``cappedlog.wait_settled``)."""
        wait_settled(self.url, settle_s)


def rate_bytes(rate: str) -> int:
    """Bytes per second of an nginx ``limit_rate`` size (``40m``, ``512k``, ``1000``, ``0``).

    >>> rate_bytes("40m")
    41943040
    """
    m = re.fullmatch(r"(\d+)([kKmM]?)", rate)
    if m is None:
        raise ValueError(f"rate must be an nginx size such as 40m, 512k or 0: {rate!r}")
    return int(m[1]) << {"": 0, "k": 10, "m": 20}[m[2].lower()]


def pace_chunk(rate: int, pace_ms: int = PACE_MS) -> int:
    """``sendfile_max_chunk`` for ``rate`` bytes/s: ``pace_ms`` worth of it.

    >>> pace_chunk(125000), pace_chunk(125000, pace_ms=131)
    (1250, 16375)
    """
    # Rounded up: nginx's sleep after a write is nsent * 1000 / rate, truncated to whole ms.
    return -(-rate * pace_ms // 1000)
