"""A readiness probe, run *inside* a namespace::

    ip netns exec NS python -m benchmarks.scaleup.probe URL

The harness never connects to a namespace address from the main namespace; each probe runs
where the server is (its own loopback, or the bridge between namespaces). Standard library
only, so it starts in a few tens of milliseconds.

    python -m benchmarks.scaleup.probe http://127.0.0.1:5000/readyz --deadline 60
    python -m benchmarks.scaleup.probe http://127.0.0.1:9000/moto-api/?sync=1 --once

Exit status 0 when the URL answered with an accepted status (``--ok``, default 200) within
``--deadline`` seconds (with ``--once``: after one attempt), 1 otherwise.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
import urllib.parse

POLL_S = 0.05


def status(url: str, timeout_s: float = 2.0) -> int | None:
    """The HTTP status of one GET of ``url``, None when nothing answered."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or u.hostname is None:
        raise ValueError(f"only plain http URLs: {url!r}")
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout_s)
    try:
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaleup.probe")
    p.add_argument("url")
    p.add_argument("--deadline", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--ok", default="200", metavar="CODES", help="accepted statuses, e.g. 200,401")
    p.add_argument("--once", action="store_true", help="one attempt, no polling")
    args = p.parse_args(argv)
    ok = {int(c) for c in args.ok.split(",")}
    end = time.monotonic() + args.deadline
    last: int | None = None
    while True:
        last = status(args.url)
        if last in ok:
            return 0
        if args.once or time.monotonic() >= end:
            print(f"probe: {args.url} answered {last} (want {sorted(ok)})", file=sys.stderr)
            return 1
        time.sleep(POLL_S)


if __name__ == "__main__":
    sys.exit(main())
