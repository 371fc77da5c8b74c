"""CappedS3's request log: the access-log format, its parser, and waiting until it is
complete. Standard library only, so it also runs where the server runs (inside a network
namespace of the scale-up simulation)::

    python -m tests.rig.cappedlog sync http://127.0.0.1:9000 --settle 2

Every request nginx answers is one tab-separated line (``LOG_FIELDS``), written as the
request ends. ``parse_log(data, bucket)`` turns a slice of the file into ``CappedRequest``s;
``wait_settled(url)`` returns once no request is in progress, i.e. once every request that
has ended is in the file.

>>> line = "1.5\\t7\\tGET\\t/b/k/data\\t-\\t206\\t10\\tbytes=0-9\\t0.010\\tOK"
>>> r = parse_line(line, "b")
>>> (r.key, r.status, r.range, r.completed)
('k/data', 206, 'bytes=0-9', True)
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import re
import sys
import time
import urllib.parse

#: Rig-internal URLs (readiness, request counts), not logged. S3 bucket names
#: cannot hold '_', so no bucket collides with them.
RIG_PREFIX = "/__rig/"
STATUS_PATH = RIG_PREFIX + "status"

# One line per request, tab-separated; escape=default turns a tab (or any byte < 32 or
# > 126, and '"' and '\') inside a value into \xXX, so a tab always separates fields.
LOG_FIELDS = (
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

_POLL_S = 0.02


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


def parse_line(line: str, bucket: str) -> CappedRequest | None:
    """One access-log line; None for a malformed line or a rig-internal request."""
    fields = [_unescape(v) for v in line.split("\t")]
    if len(fields) != len(LOG_FIELDS):
        return None
    when, conn, method, uri, args, status, sent, rng, rtime, done = fields
    if uri.startswith(RIG_PREFIX):
        return None
    bucket_prefix = f"/{bucket}/"
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


def parse_log(data: bytes, bucket: str) -> list[CappedRequest]:
    """The requests in a slice of the log, oldest first (a trailing partial line is left
    out: nginx writes each line whole, so only a slice cut mid-line has one)."""
    complete = data[: data.rfind(b"\n") + 1]
    found = [parse_line(line, bucket) for line in complete.decode("ascii").splitlines()]
    return [r for r in found if r is not None]


def in_progress(status_text: str) -> tuple[int, int]:
    """stub_status's Reading and Writing counts (requests in progress).

    >>> in_progress("Active connections: 3\\nReading: 0 Writing: 1 Waiting: 2\\n")
    (0, 1)
    """
    m = re.search(r"Reading: (\d+) Writing: (\d+)", status_text)
    if m is None:
        raise ValueError(f"not an nginx stub_status answer: {status_text!r}")
    return int(m[1]), int(m[2])


def _status(host: str, port: int) -> str:
    conn = http.client.HTTPConnection(host, port, timeout=10.0)
    try:
        conn.request("GET", STATUS_PATH)
        resp = conn.getresponse()
        text = resp.read().decode()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"nginx stub_status answered {resp.status}: {text!r}")
    return text


def wait_settled(url: str, settle_s: float = 1.0) -> bool:
    """Wait until no request is in progress at the server ``url`` (``http://HOST:PORT``),
    for at most ``settle_s``, so that every request that has ended is in the access log;
    False if requests were still running at the end.

    nginx logs a request in the same event-loop turn that sends its last byte, and
    counts it out of stub_status's ``Writing`` in that turn too; with one worker, a
    status answer showing only itself in progress comes after every such line. A
    client that hung up mid-body is noticed at nginx's next paced write (a few ms).
    A transfer still running after ``settle_s`` is simply not in the log yet.
    """
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or u.hostname is None or u.port is None:
        raise ValueError(f"expected http://HOST:PORT, got {url!r}")
    end = time.monotonic() + settle_s
    while True:
        # The status request itself is the one request being written.
        if in_progress(_status(u.hostname, u.port)) == (0, 1):
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(_POLL_S)


def _unescape(value: str) -> str:
    """Undo nginx's escape=default (``\\xXX`` for '"', '\\' and bytes outside 32..126)."""
    if "\\x" not in value:
        return value
    raw = re.sub(rb"\\x([0-9A-Fa-f]{2})", lambda m: bytes([int(m[1], 16)]), value.encode("ascii"))
    return raw.decode("utf-8", "replace")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.rig.cappedlog")
    sub = p.add_subparsers(dest="command", required=True)
    sync = sub.add_parser("sync", help="wait until no request is in progress")
    sync.add_argument("url", help="the server, http://HOST:PORT")
    sync.add_argument("--settle", type=float, default=1.0, metavar="SECONDS")
    args = p.parse_args(argv)
    settled = wait_settled(args.url, args.settle)
    if not settled:
        print(f"cappedlog: requests still in progress after {args.settle} s", file=sys.stderr)
    # Still a success: whatever has ended is in the log; the rest is simply not yet.
    return 0


if __name__ == "__main__":
    sys.exit(main())
