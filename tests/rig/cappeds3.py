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

import dataclasses
import http.client
import os
import re
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Self

from . import s3list
from .ports import LOOPBACK, POLL_INTERVAL_S, free_port, tail_file
from .proc import ServerProcess, child_env, which

#: nginx writes at most this long's worth of ``rate`` at once, then sleeps as long (see
#: the module docstring): small enough that the unpaced last write is negligible, large
#: enough that nginx's whole-millisecond sleeps stay accurate.
PACE_MS = 10

#: Rig-internal URLs (readiness, request counts), not logged. S3 bucket names
#: cannot hold '_', so no bucket collides with them.
_RIG = "/__rig/"
_STATUS = _RIG + "status"

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

# One line per request, tab-separated; escape=default turns a tab (or any byte < 32 or
# > 126, and '"' and '\') inside a value into \xXX, so a tab always separates fields.
_LOG_FIELDS = (
    "$msec",
    "$connection",
    "$request_method",
    "$uri",
    "$args",
    "$status",
    "$body_bytes_sent",
    "$http_range",
    "$request_time",
    "$request_completion",
)

_NGINX_CONF = """\
{user}worker_processes 1;
pid "{work}/nginx.pid";
error_log stderr warn;
events {{ worker_connections 1024; }}
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
        location = /{bucket} {{ proxy_pass http://{host}:{lister_port}; }}
        location = /{bucket}/ {{ proxy_pass http://{host}:{lister_port}; }}
        location = {ready} {{ proxy_pass http://{host}:{lister_port}; access_log off; }}
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


@dataclasses.dataclass(frozen=True)
class CappedRequest:
    """One request as nginx logged it when it finished."""

    #: When it finished (epoch seconds, ms resolution).
    time: float
    #: nginx's connection serial number: requests with the same number shared a connection.
    connection: int
    method: str
    #: The request path, percent-decoded and normalised by nginx.
    uri: str
    #: Object key relative to the bucket ('' for a bucket-level request).
    key: str
    #: The raw (still percent-encoded) query string, '' if none.
    query: str
    status: int
    #: Body bytes handed to the kernel (headers not counted): what S3 would bill as data
    #: out; for an aborted request more than the client read.
    bytes_sent: int
    #: The request's Range header, None if it had none.
    range: str | None
    #: Seconds from the first request byte read to the last response byte sent.
    request_time: float
    #: False when the client went away before the whole response was sent (the status
    #: is still the one nginx began answering with, e.g. 200).
    completed: bool

    @property
    def params(self) -> dict[str, str]:
        """The query string decoded (``prefix``, ``list-type``, ``max-keys``...)."""
        return dict(urllib.parse.parse_qsl(self.query, keep_blank_values=True))


class _Lister(ServerProcess):
    """``tests/rig/s3list.py`` on its own loopback port (nginx proxies the bucket to it)."""

    log_label = "s3list"

    def __init__(self, store: Path, bucket: str, workdir: Path) -> None:
        self.port = free_port()
        self.store = store
        self.bucket = bucket
        super().__init__(workdir, prefix="rig-s3list-", log_name="s3list.log")

    def start(self, deadline_s: float = 20.0) -> Self:
        # By path, not -m: the child's cwd is the work dir, and s3list needs only the stdlib.
        argv = [sys.executable, s3list.__file__, "--root", str(self.store)]
        argv += ["--bucket", self.bucket, "--host", LOOPBACK, "--port", str(self.port)]
        ready = f"http://{LOOPBACK}:{self.port}{s3list.READY_PATH}"
        self._start(argv, ready, env=child_env(), deadline_s=deadline_s)
        return self


class CappedS3(ServerProcess):
    """nginx (``limit_rate`` per connection) + s3list, serving ``store`` as ``bucket``.

    Both run in the foreground as children, with config, pid, logs and temp dirs under
    the work dir (a temp dir removed by ``stop()`` unless ``workdir`` is given); both
    stop by PID. See the module docstring for what is and is not modelled.
    """

    log_label = "nginx"

    def __init__(
        self,
        store: Path,
        *,
        bucket: str = "capped",
        rate: str = "40m",
        workdir: Path | None = None,
    ) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise ValueError(f"not an S3 bucket name: {bucket!r}")
        self.rate_bytes = rate_bytes(rate)
        self.store = Path(store).resolve()
        self._bucket = bucket
        self.rate = rate
        self.port = free_port()
        super().__init__(workdir, prefix="rig-cappeds3-", log_name="nginx.log")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.access_log = self.workdir / "access.log"
        self.conf_path = self.workdir / "nginx.conf"
        self._lister = _Lister(self.store, bucket, self.workdir)

    @property
    def url(self) -> str:
        """The S3 endpoint URL (``http://127.0.0.1:PORT``), for path-style clients."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def nginx_pid(self) -> int:
        """nginx's master; its one worker (which does the serving) is its child."""
        return self.pid

    @property
    def lister_pid(self) -> int:
        return self._lister.pid

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, deadline_s: float = 20.0) -> Self:
        if not (self.store / "docker").is_dir():
            raise FileNotFoundError(f"{self.store} holds no docker/registry/v2 tree")
        self._lister.start(deadline_s)
        try:
            self.conf_path.write_text(self._conf())
            argv = [which("nginx"), "-p", str(self.workdir), "-e", "stderr"]
            argv += ["-c", str(self.conf_path), "-g", "daemon off;"]
            # Ready once nginx answers *through* the lister: both halves are up.
            self._start(argv, self.url + s3list.READY_PATH, env=child_env(), deadline_s=deadline_s)
        except BaseException:
            self._lister.stop()
            raise
        return self

    def _conf(self) -> str:
        return _NGINX_CONF.format(
            # As root the worker runs as root too, so it reads stores under 0700 temp dirs.
            user="user root;\n" if os.geteuid() == 0 else "",
            work=self.workdir,
            host=LOOPBACK,
            port=self.port,
            lister_port=self._lister.port,
            bucket=self.bucket,
            store=self.store,
            rate=self.rate,
            # Uncapped: nginx's default chunk.
            chunk=_pace_chunk(self.rate_bytes) if self.rate_bytes else "2m",
            ready=s3list.READY_PATH,
            status=_STATUS,
            log_format="\\t".join(_LOG_FIELDS),
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

    # -- request log ----------------------------------------------------------------------

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
        complete = chunk[: chunk.rfind(b"\n") + 1]
        found = [self._parse(line) for line in complete.decode("ascii").splitlines()]
        return [r for r in found if r is not None]

    def sync(self, settle_s: float = 1.0) -> None:
        """Wait until no request is in progress (for at most ``settle_s``), so that every
        request that has ended is in the access log.

        nginx logs a request in the same event-loop turn that sends its last byte, and
        counts it out of stub_status's ``Writing`` in that turn too; with one worker, a
        status answer showing only itself in progress comes after every such line. A
        client that hung up mid-body is noticed at nginx's next paced write (a few ms).
        A transfer still running after ``settle_s`` is simply not in the log yet.
        """
        end = time.monotonic() + settle_s
        while True:
            reading, writing = self._in_progress()
            # The status request itself is the one request being written.
            if (reading, writing) == (0, 1) or time.monotonic() >= end:
                return
            time.sleep(POLL_INTERVAL_S)

    def _in_progress(self) -> tuple[int, int]:
        """stub_status's Reading and Writing counts (requests in progress)."""
        conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10.0)
        try:
            conn.request("GET", _STATUS)
            resp = conn.getresponse()
            text = resp.read().decode()
        finally:
            conn.close()
        m = re.search(r"Reading: (\d+) Writing: (\d+)", text)
        if resp.status != 200 or m is None:
            raise RuntimeError(f"nginx stub_status answered {resp.status}: {text!r}")
        return int(m[1]), int(m[2])

    def _parse(self, line: str) -> CappedRequest | None:
        fields = [_unescape(v) for v in line.split("\t")]
        if len(fields) != len(_LOG_FIELDS):
            return None
        when, conn, method, uri, args, status, sent, rng, rtime, done = fields
        if uri.startswith(_RIG):
            return None
        bucket_prefix = f"/{self.bucket}/"
        key = uri[len(bucket_prefix) :] if uri.startswith(bucket_prefix) else ""
        return CappedRequest(
            time=float(when),
            connection=int(conn),
            method=method,
            uri=uri,
            key=key,
            query="" if args == "-" else args,
            status=int(status),
            bytes_sent=int(sent),
            range=None if rng == "-" else rng,
            request_time=float(rtime),
            completed=done == "OK",
        )


def rate_bytes(rate: str) -> int:
    """Bytes per second of an nginx ``limit_rate`` size (``40m``, ``512k``, ``1000``, ``0``).

    >>> rate_bytes("40m")
    41943040
    """
    m = re.fullmatch(r"(\d+)([kKmM]?)", rate)
    if m is None:
        raise ValueError(f"rate must be an nginx size such as 40m, 512k or 0: {rate!r}")
    return int(m[1]) << {"": 0, "k": 10, "m": 20}[m[2].lower()]


def _pace_chunk(rate: int) -> int:
    # Rounded up: nginx's sleep after a write is nsent * 1000 / rate, truncated to whole ms.
    return -(-rate * PACE_MS // 1000)


def _unescape(value: str) -> str:
    """Undo nginx's escape=default (``\\xXX`` for '"', '\\' and bytes outside 32..126)."""
    if "\\x" not in value:
        return value
    raw = re.sub(rb"\\x([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), value.encode("ascii"))
    return raw.decode("utf-8", "replace")
