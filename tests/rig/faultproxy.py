"""FaultProxy: a real HTTP reverse proxy in front of an S3 server (moto) that injects faults.

It listens on ``127.0.0.1:PORT`` and runs an aiohttp server on its own event loop in a
background thread, so blocking test code (``docker pull``, ``subprocess.run``) can run in the
main thread while the proxy keeps answering. Point the sidecar's S3 endpoint at ``proxy.url``;
seed the bucket directly on moto (not through the proxy)::

    with FaultProxy(moto.endpoint_url) as proxy:
        proxy.fail_ratio(0.3, seed=1)                       # 30 % of requests: 500/503
        key = layout.blob_data(digest)  # ".../blobs/sha256/ab/<hex>/data"
        proxy.reset_after(1 << 20, times=3, method="GET", path_contains=key)
        proxy.stall(5.0, path_contains="/_manifests/tags/")
        proxy.down(); ...; proxy.up()                       # connection refused, same port
        proxy.clear()
        proxy.count("GET", key), proxy.ranges(key), proxy.requests()

(Match a blob by its data key, not by its bare hex: the repository's ``_layers/.../<hex>/link``
path holds the hex too.)

Forwarding is verbatim: method, raw path and query (never re-encoded, so SigV4 signatures
still verify), request headers including ``Host`` and ``Authorization`` (only hop-by-hop
headers and ``Expect`` are dropped) and the body. Response status, reason and headers
(``Content-Length``, ``Date``, ``ETag``, ...) are copied and the body is streamed, never held.

Faults are rules, changeable at any time from any thread. Each may be limited to a method,
to a path substring (matched against the raw path+query and its percent-decoded form), to an
exact ``Range`` header (``range_header=``: stall, reset, corrupt), and to a number of
applications (``times``). For each request, every matching ``stall`` rule delays
it (they add up), then the first matching *terminal* rule (``fail_ratio`` or ``reset_after``)
applies. Each fault method returns its :class:`Fault` handle (``.applied`` counts uses).

* ``fail_ratio(p, statuses=(500, 503), seed=0)``: with probability ``p`` (drawn per
  (method, path, n-th such request), so repeatable under concurrency) answer at once (the
  request does not reach S3) with an S3-style XML error: 500 ``InternalError``, 503
  ``SlowDown``, others ``ServiceUnavailable`` (HEAD: no body, as S3 does).
* ``reset_after(nbytes)``: forward, send the response headers and the first ``nbytes`` of the
  body, wait until they have left the proxy's buffer, then ``transport.abort()``. The client
  gets exactly ``nbytes`` and then a connection closed short of ``Content-Length``
  (``rst=True``: SO_LINGER 0 first, so the kernel sends a TCP RST; bytes still in flight may
  then be lost).
* ``corrupt(at_byte=0)``: forward the body with the byte at that offset flipped (XOR 0xff);
  not terminal, so it combines with a stall or a reset.
* ``throttle(bytes_per_s)``: forward the body at that rate (each response by itself, in
  pieces of a tenth of a second's worth); not terminal.
* ``stall(seconds, after_bytes=None)``: hold the request ``seconds`` before forwarding it, or
  (``after_bytes``) send headers and that many body bytes first, then hold mid-body. Stalls
  end early on ``release_stalls()``, ``clear()`` and ``stop()``.
* A ``reset_after`` or mid-body ``stall`` whose cut point is never reached (a HEAD, a body
  shorter than the cut, e.g. a 71-byte link file) does not count as applied: its ``times``
  is handed back and the request is logged without that fault.
* ``down()`` / ``up()``: close the listening socket and abort every open connection (so the
  client's pooled keep-alive connections die too: new connections are refused); reopen on the
  same port.

The request log (``requests()``) holds every request the proxy read, in arrival order, as
:class:`ProxyRequest` snapshots: method, raw path, Range header, status answered (None if it
never answered), body bytes sent, fault applied, timings, whether it completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from .ports import LOOPBACK, assert_loopback, free_port

T = TypeVar("T")

#: Body chunk size for streaming responses.
CHUNK = 64 * 1024

# RFC 9110 7.6.1 connection-specific headers, never forwarded in either direction.
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
    )
)
# Request headers also dropped: the proxy answers 100-continue itself.
_REQUEST_DROP = _HOP_BY_HOP | {"expect"}

_S3_ERRORS = {
    500: ("InternalError", "We encountered an internal error. Please try again."),
    503: ("SlowDown", "Please reduce your request rate."),
}
_DEFAULT_ERROR = ("ServiceUnavailable", "Service is unable to handle request.")


@dataclass(frozen=True)
class ProxyRequest:
    """One request the proxy read (a snapshot: later changes are not reflected)."""

    seq: int
    method: str
    path: str  # raw path + query, exactly as received (percent-encoded)
    range: str | None  # the Range request header
    status: int | None  # status the proxy answered; None if it never sent a status line
    bytes_sent: int  # response body bytes written to the client
    fault: str | None  # "fail", "reset", "stall", "stall+reset", ... ; None if forwarded as is
    started: float  # time.monotonic() when the request was read
    finished: float | None  # when the proxy was done with it (None: still in progress)
    completed: bool  # True if the whole response was sent
    error: str | None = None  # what went wrong (upstream or client side), if anything

    @property
    def path_only(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.path.split("?", 1)[1] if "?" in self.path else ""

    def matches(self, path_substring: str) -> bool:
        """``path_substring`` occurs in the raw path+query or in its percent-decoded form."""
        return path_substring in self.path or path_substring in urllib.parse.unquote(self.path)

    @property
    def range_start(self) -> int | None:
        """N of a ``Range: bytes=N-...`` header, else None."""
        if not self.range or not self.range.startswith("bytes="):
            return None
        first = self.range[6:].split(",", 1)[0].strip()
        start = first.split("-", 1)[0]
        return int(start) if start.isdigit() else None


@dataclass
class _Entry:
    """Mutable log record, owned by the proxy loop; read under the proxy's lock."""

    seq: int
    method: str
    path: str
    range: str | None
    started: float
    status: int | None = None
    bytes_sent: int = 0
    faults: list[str] = field(default_factory=list)
    finished: float | None = None
    completed: bool = False
    error: str | None = None

    def path_only(self) -> str:
        return self.path.split("?", 1)[0]

    def snapshot(self) -> ProxyRequest:
        return ProxyRequest(
            seq=self.seq,
            method=self.method,
            path=self.path,
            range=self.range,
            status=self.status,
            bytes_sent=self.bytes_sent,
            fault="+".join(self.faults) or None,
            started=self.started,
            finished=self.finished,
            completed=self.completed,
            error=self.error,
        )


@dataclass(eq=False)
class Fault:
    """One fault rule. ``times``: how many more times it may apply (None: unlimited)."""

    kind: str  # "fail", "reset", "stall", "throttle", "corrupt"
    method: str | None
    path_contains: str | None
    times: int | None
    params: dict[str, Any]
    applied: int = 0
    _seen: dict[tuple[str, str], int] = field(default_factory=dict)
    range_header: str | None = None  # only requests with exactly this Range header

    def _matches(self, method: str, path: str, range_: str | None = None) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.range_header is not None and self.range_header != range_:
            return False
        if self.path_contains is not None:
            return self.path_contains in path or self.path_contains in urllib.parse.unquote(path)
        return True


@dataclass
class _Plan:
    stall_s: float = 0.0
    stall_after: int | None = None  # bytes of body before a mid-body stall
    stall_mid_s: float = 0.0
    fail_status: int | None = None
    fail_code: str | None = None
    reset_after: int | None = None
    rst: bool = False
    corrupt_at: int | None = None  # body offset of the byte to flip
    rate: float | None = None  # body bytes per second (throttle)
    names: list[str] = field(default_factory=list)
    # Body rules, handed back (_refund) if the body ends before their offset.
    stall_fault: Fault | None = None
    reset_fault: Fault | None = None
    corrupt_fault: Fault | None = None


class FaultProxy:
    """HTTP reverse proxy to ``upstream_url`` on ``127.0.0.1:port`` with injectable faults.

    A context manager: ``__enter__`` starts the loop thread and listens, ``__exit__`` releases
    stalls, closes every connection and the upstream session, stops the loop and joins the
    thread.
    """

    def __init__(self, upstream_url: str, *, port: int | None = None) -> None:
        up = URL(upstream_url)
        if up.scheme != "http" or up.host is None:
            raise ValueError(f"upstream must be a plain http URL: {upstream_url!r}")
        assert_loopback(up.host)
        self.upstream = str(up.origin())
        self.host = LOOPBACK
        self.port = port or free_port()
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._log: list[_Entry] = []
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._web: web.Server | None = None
        self._listener: asyncio.base_events.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._release: asyncio.Event | None = None

    @property
    def url(self) -> str:
        """Base URL to use as the S3 endpoint (``http://127.0.0.1:PORT``)."""
        return f"http://{self.host}:{self.port}"

    endpoint_url = url

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, deadline_s: float = 10.0) -> FaultProxy:
        if self._thread is not None:
            raise RuntimeError("already started")
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(deadline_s):
            raise RuntimeError("fault proxy loop did not start")
        try:
            self._call(self._astart(), deadline_s)
        except BaseException:
            self.stop()
            raise
        return self

    async def _astart(self) -> None:
        self._release = asyncio.Event()
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=120),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._web = web.Server(self._handle, access_log=None)
        await self._listen()

    async def _listen(self) -> None:
        assert self._web is not None
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(
            self._web, self.host, self.port, reuse_address=True, backlog=256
        )

    def stop(self) -> None:
        """Release stalls, close everything, stop the loop and join its thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                with contextlib.suppress(Exception):
                    self._call(self._astop(), 30.0)
        finally:
            if loop.is_running():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(30.0)
            if not thread.is_alive():
                loop.close()
            self._loop = None
            self._thread = None

    async def _astop(self) -> None:
        if self._release is not None:
            self._release.set()
        await self._adown()
        if self._web is not None:
            await self._web.shutdown(1.0)
        if self._session is not None:
            await self._session.close()
            self._session = None
        # Whatever is left (handlers, idle keep-alive connection tasks) ends here, so the loop
        # closes with no pending task.
        me = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Let aborted transports run their connection_lost callbacks before the loop stops.
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        """Run ``coro`` on the proxy loop from another thread and wait for its result."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("fault proxy is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    # -- down / up ----------------------------------------------------------------------------
    def down(self) -> None:
        """Stop answering: close the listening socket (connects are refused) and abort every
        open connection, including idle keep-alive ones."""
        self._call(self._adown())

    async def _adown(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._web is not None:
            for conn in self._web.connections:
                transport = conn.transport
                if transport is not None:
                    transport.abort()

    def up(self) -> None:
        """Listen again on the same port."""
        self._call(self._aup())

    async def _aup(self) -> None:
        if self._listener is None:
            await self._listen()

    # -- faults -------------------------------------------------------------------------------
    def _add(self, fault: Fault) -> Fault:
        if fault.method is not None:
            fault.method = fault.method.upper()
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail_ratio(
        self,
        p: float,
        statuses: Iterable[int] = (500, 503),
        *,
        seed: int | str = 0,
        code: str | None = None,
        method: str | None = None,
        path_contains: str | None = None,
        times: int | None = None,
    ) -> Fault:
        """Answer a fraction ``p`` of matching requests with an S3 XML error, the status
        drawn from ``statuses``. Seeded per request: whether the n-th request for a given
        method and raw path+query fails depends only on (seed, method, path, n), so a run is
        repeatable even when concurrent requests for different paths interleave differently
        (keep the bucket name fixed for that: it is part of the path)."""
        if not 0.0 <= p <= 1.0:
            raise ValueError("p must be within [0, 1]")
        sts = tuple(statuses)
        if not sts:
            raise ValueError("need at least one status")
        return self._add(
            Fault(
                "fail",
                method,
                path_contains,
                times,
                {"p": p, "statuses": sts, "code": code, "seed": seed},
            )
        )

    def fail(
        self,
        status: int = 503,
        *,
        code: str | None = None,
        method: str | None = None,
        path_contains: str | None = None,
        times: int | None = None,
    ) -> Fault:
        """Answer every matching request with an S3 XML error ``status``."""
        return self.fail_ratio(
            1.0, (status,), code=code, method=method, path_contains=path_contains, times=times
        )

    def reset_after(
        self,
        nbytes: int,
        *,
        times: int | None = None,
        method: str | None = None,
        path_contains: str | None = None,
        range_header: str | None = None,
        rst: bool = False,
    ) -> Fault:
        """Send headers and the first ``nbytes`` of the body, then abort the connection."""
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        return self._add(
            Fault(
                "reset",
                method,
                path_contains,
                times,
                {"nbytes": nbytes, "rst": rst},
                range_header=range_header,
            )
        )

    def stall(
        self,
        seconds: float,
        *,
        after_bytes: int | None = None,
        times: int | None = None,
        method: str | None = None,
        path_contains: str | None = None,
        range_header: str | None = None,
    ) -> Fault:
        """Hold matching requests ``seconds`` before forwarding them, or after sending the
        headers and ``after_bytes`` of the body. Ends early on ``release_stalls()``."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return self._add(
            Fault(
                "stall",
                method,
                path_contains,
                times,
                {"seconds": seconds, "after_bytes": after_bytes},
                range_header=range_header,
            )
        )

    def throttle(
        self,
        bytes_per_s: float,
        *,
        times: int | None = None,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> Fault:
        """Forward matching responses' bodies at ``bytes_per_s`` each (a slow link)."""
        if bytes_per_s <= 0:
            raise ValueError("bytes_per_s must be > 0")
        return self._add(Fault("throttle", method, path_contains, times, {"rate": bytes_per_s}))

    def corrupt(
        self,
        at_byte: int = 0,
        *,
        times: int | None = None,
        method: str | None = None,
        path_contains: str | None = None,
        range_header: str | None = None,
    ) -> Fault:
        """Forward the response with the body byte at offset ``at_byte`` flipped (XOR 0xff):
        a storage or network corruption the client can only catch by its digest. Not
        terminal: it combines with a stall or a reset."""
        if at_byte < 0:
            raise ValueError("at_byte must be >= 0")
        return self._add(
            Fault(
                "corrupt",
                method,
                path_contains,
                times,
                {"at_byte": at_byte},
                range_header=range_header,
            )
        )

    def remove(self, fault: Fault) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._faults.remove(fault)

    def clear(self) -> None:
        """Remove every fault rule and end the stalls in progress (the proxy stays up/down as
        it is)."""
        with self._lock:
            self._faults.clear()
        self.release_stalls()

    def release_stalls(self) -> None:
        """End every stall in progress now; later stalls wait again."""
        if self._loop is None:
            return

        def release() -> None:
            if self._release is not None:
                self._release.set()
            self._release = asyncio.Event()

        self._loop.call_soon_threadsafe(release)

    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def _plan(self, method: str, path: str, range_: str | None = None) -> _Plan:
        plan = _Plan()
        terminal = False
        with self._lock:
            for f in self._faults:
                if not f._matches(method, path, range_):
                    continue
                if f.kind == "stall":
                    after = f.params["after_bytes"]
                    if after is None:
                        plan.stall_s += f.params["seconds"]
                    elif plan.stall_after is None:
                        plan.stall_after = after
                        plan.stall_mid_s = f.params["seconds"]
                        plan.stall_fault = f
                    else:
                        continue
                elif f.kind == "throttle":
                    if plan.rate is not None:
                        continue
                    plan.rate = f.params["rate"]
                elif f.kind == "corrupt":
                    if plan.corrupt_at is not None:
                        continue
                    plan.corrupt_at = f.params["at_byte"]
                    plan.corrupt_fault = f
                elif terminal:
                    continue
                elif f.kind == "fail":
                    # The n-th request for one (method, path) draws from its own seeded
                    # generator: the outcome does not depend on how concurrent requests for
                    # other paths interleave.
                    n = f._seen.get((method, path), 0)
                    f._seen[(method, path)] = n + 1
                    rng = random.Random(f"{f.params['seed']}|{method}|{path}|{n}")
                    if rng.random() >= f.params["p"]:
                        continue
                    plan.fail_status = rng.choice(f.params["statuses"])
                    plan.fail_code = f.params["code"]
                    terminal = True
                elif f.kind == "reset":
                    plan.reset_after = f.params["nbytes"]
                    plan.rst = f.params["rst"]
                    plan.reset_fault = f
                    terminal = True
                if f.times is not None:
                    f.times -= 1
                f.applied += 1
                plan.names.append(f.kind)
        return plan

    # -- request log --------------------------------------------------------------------------
    def requests(self, *, since: int = 0) -> list[ProxyRequest]:
        """Every request seen, oldest first (``since``: skip that many)."""
        with self._lock:
            return [e.snapshot() for e in self._log[since:]]

    def mark(self) -> int:
        """Number of requests so far; pass it as ``since=`` to look at later ones only."""
        with self._lock:
            return len(self._log)

    def select(
        self,
        method: str | None = None,
        path_substring: str = "",
        *,
        fault: str | None = None,
        status: int | None = None,
        since: int = 0,
    ) -> list[ProxyRequest]:
        """Requests matching all of: method (None: any), a substring of the (raw or decoded)
        path+query, a fault name within ``fault`` ("fail", "reset", "stall"), ``status``."""
        return [
            r
            for r in self.requests(since=since)
            if (method is None or r.method == method.upper())
            and r.matches(path_substring)
            and (fault is None or (r.fault is not None and fault in r.fault.split("+")))
            and (status is None or r.status == status)
        ]

    def count(
        self,
        method: str | None = None,
        path_substring: str = "",
        *,
        fault: str | None = None,
        status: int | None = None,
        since: int = 0,
    ) -> int:
        return len(self.select(method, path_substring, fault=fault, status=status, since=since))

    def ranges(self, path_substring: str = "", *, since: int = 0) -> list[str | None]:
        """Range header of each GET whose path contains ``path_substring`` (None: no Range)."""
        return [r.range for r in self.select("GET", path_substring, since=since)]

    def wait_for(
        self, predicate: Callable[[list[ProxyRequest]], bool], deadline_s: float = 10.0
    ) -> list[ProxyRequest]:
        """Poll the log until ``predicate(requests)`` is true (bounded); return the log."""
        end = time.monotonic() + deadline_s
        while True:
            reqs = self.requests()
            if predicate(reqs):
                return reqs
            if time.monotonic() >= end:
                raise TimeoutError(f"fault proxy log: condition not met after {deadline_s}s")
            time.sleep(0.02)

    # -- the proxy ----------------------------------------------------------------------------
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.raw_path
        entry = _Entry(
            next(self._seq),
            request.method,
            path,
            request.headers.get("Range"),
            time.monotonic(),
        )
        with self._lock:
            self._log.append(entry)
        try:
            return await self._proxy(request, entry)
        finally:
            with self._lock:
                entry.finished = time.monotonic()

    def _set(self, entry: _Entry, **changes: Any) -> None:
        with self._lock:
            for k, v in changes.items():
                setattr(entry, k, v)

    async def _proxy(self, request: web.BaseRequest, entry: _Entry) -> web.StreamResponse:
        plan = self._plan(request.method, entry.path, entry.range)
        self._set(entry, faults=list(plan.names))
        if plan.stall_s:
            await self._hold(plan.stall_s)
        if plan.fail_status is not None:
            return self._s3_error(request, entry, plan.fail_status, plan.fail_code)

        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # Streamed (with the client's Content-Length, if any): never held in memory.
        body = request.content if request.body_exists else None
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _REQUEST_DROP
        )
        assert self._session is not None
        try:
            upstream = await self._session.request(
                request.method,
                URL(self.upstream + entry.path, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._set(entry, error=f"upstream: {type(exc).__name__}: {exc}")
            return self._s3_error(request, entry, 503, "ServiceUnavailable")

        try:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in _HOP_BY_HOP:
                    resp.headers.add(k, v)
            try:
                await resp.prepare(request)
                self._set(entry, status=upstream.status)
                if request.method == "HEAD":
                    self._refund(entry, plan.stall_fault, plan.reset_fault, plan.corrupt_fault)
                    await resp.write_eof()
                    self._set(entry, completed=True)
                    return resp
                await self._stream(request, upstream, resp, entry, plan)
            except (ConnectionError, aiohttp.ClientConnectionResetError) as exc:
                self._set(entry, error=f"client: {type(exc).__name__}: {exc}")
                upstream.close()
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Upstream failed mid-body: the client must see it fail too.
                self._set(entry, error=f"upstream: {type(exc).__name__}: {exc}")
                upstream.close()
                self._abort(request, rst=False)
            return resp
        finally:
            upstream.release()

    async def _stream(
        self,
        request: web.BaseRequest,
        upstream: aiohttp.ClientResponse,
        resp: web.StreamResponse,
        entry: _Entry,
        plan: _Plan,
    ) -> None:
        # Cut points in body bytes: a mid-body stall and/or a reset.
        stall_at = plan.stall_after
        reset_at = plan.reset_after
        corrupt_at = plan.corrupt_at
        sent = 0
        if stall_at == 0:
            await self._flush(request)
            await self._hold(plan.stall_mid_s)
            stall_at = None
        if reset_at == 0:
            self._refund(
                entry, plan.stall_fault if stall_at is not None else None, plan.corrupt_fault
            )
            await self._reset(request, entry, plan)
            return
        began = time.monotonic()
        piece_most = max(1, int(plan.rate / 10)) if plan.rate else CHUNK
        async for chunk in upstream.content.iter_chunked(CHUNK):
            view = memoryview(chunk)
            while view:
                limit = min(len(view), piece_most)
                for cut in (stall_at, reset_at):
                    if cut is not None and sent < cut:
                        limit = min(limit, cut - sent)
                piece: bytes | memoryview = view[:limit]
                view = view[limit:]
                if corrupt_at is not None and sent <= corrupt_at < sent + len(piece):
                    flipped = bytearray(piece)
                    flipped[corrupt_at - sent] ^= 0xFF
                    piece, corrupt_at = bytes(flipped), None
                await resp.write(piece)
                sent += len(piece)
                self._set(entry, bytes_sent=sent)
                if plan.rate:
                    ahead = sent / plan.rate - (time.monotonic() - began)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if stall_at is not None and sent == stall_at:
                    await self._flush(request)
                    await self._hold(plan.stall_mid_s)
                    stall_at = None
                if reset_at is not None and sent >= reset_at:
                    self._refund(
                        entry,
                        plan.stall_fault if stall_at is not None else None,
                        plan.corrupt_fault if corrupt_at is not None else None,
                    )
                    upstream.close()
                    await self._reset(request, entry, plan)
                    return
        # The body ended before a cut: that rule did not apply, it stays available.
        self._refund(
            entry,
            plan.stall_fault if stall_at is not None else None,
            plan.reset_fault,
            plan.corrupt_fault if corrupt_at is not None else None,
        )
        await resp.write_eof()
        self._set(entry, completed=True)

    def _refund(self, entry: _Entry, *faults: Fault | None) -> None:
        with self._lock:
            for f in faults:
                if f is None:
                    continue
                if f.times is not None:
                    f.times += 1
                f.applied -= 1
                with contextlib.suppress(ValueError):
                    entry.faults.remove(f.kind)

    async def _reset(self, request: web.BaseRequest, entry: _Entry, plan: _Plan) -> None:
        await self._flush(request)
        self._abort(request, rst=plan.rst)
        self._set(entry, error="reset by fault")

    @staticmethod
    async def _flush(request: web.BaseRequest, deadline_s: float = 10.0) -> None:
        """Wait until the transport's write buffer is empty (handed to the kernel)."""
        transport = request.transport
        end = time.monotonic() + deadline_s
        # Polled: asyncio has no "write buffer empty" event (resume_writing fires at the low
        # watermark, not at zero).
        while True:
            if transport is None or transport.is_closing():
                return
            if transport.get_write_buffer_size() == 0 or time.monotonic() >= end:
                return
            await asyncio.sleep(0.002)

    @staticmethod
    def _abort(request: web.BaseRequest, *, rst: bool) -> None:
        transport = request.transport
        if transport is None:
            return
        if rst:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    async def _hold(self, seconds: float) -> None:
        release = self._release
        if release is None or seconds <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(release.wait(), seconds)

    def _s3_error(
        self, request: web.BaseRequest, entry: _Entry, status: int, code: str | None
    ) -> web.Response:
        default_code, message = _S3_ERRORS.get(status, _DEFAULT_ERROR)
        code = code or default_code
        request_id = f"FAULTPROXY{entry.seq:010d}"
        headers = {"x-amz-request-id": request_id, "Content-Type": "application/xml"}
        if request.method == "HEAD":
            self._set(entry, status=status, completed=True)
            return web.Response(status=status, headers=headers)
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{message}</Message>"
            f"<Resource>{_xml_escape(entry.path_only())}</Resource>"
            f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        self._set(entry, status=status, bytes_sent=len(body), completed=True)
        return web.Response(status=status, body=body, headers=headers)


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


__all__ = ["Fault", "FaultProxy", "ProxyRequest"]
