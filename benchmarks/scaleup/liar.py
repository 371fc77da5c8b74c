"""A lying peer for the ``peers-liar`` scenario: a reverse proxy in front of one host's peer
listener that flips one byte of every blob it passes on (XOR 0xff at ``--flip-at`` of each
response body), headers untouched, so it claims verified bytes when its sidecar has them::

    python -m benchmarks.scaleup.liar --listen 0.0.0.0:5001 --upstream http://127.0.0.1:5002

Runs inside the host's namespace; the other hosts list it at the host's usual peer port.
"""

from __future__ import annotations

import argparse

import aiohttp
from aiohttp import web

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


def make_app(upstream: str, flip_at: int) -> web.Application:
    session: aiohttp.ClientSession | None = None

    async def handle(request: web.Request) -> web.StreamResponse:
        assert session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers.pop("Host", None)
        async with session.request(
            request.method, upstream + request.path_qs, headers=headers
        ) as up:
            resp = web.StreamResponse(status=up.status)
            for k, v in up.headers.items():
                if k.lower() not in HOP_BY_HOP:
                    resp.headers[k] = v
            await resp.prepare(request)
            pos = 0
            async for chunk in up.content.iter_any():
                if "/blobs/" in request.path and pos <= flip_at < pos + len(chunk):
                    i = flip_at - pos
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
                pos += len(chunk)
                await resp.write(chunk)
            await resp.write_eof()
            return resp

    async def ctx(app: web.Application):  # type: ignore[no-untyped-def]
        nonlocal session
        session = aiohttp.ClientSession(auto_decompress=False)
        yield
        await session.close()

    app = web.Application()
    app.cleanup_ctx.append(ctx)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaleup.liar", description=__doc__)
    p.add_argument("--listen", required=True, metavar="HOST:PORT")
    p.add_argument("--upstream", required=True, metavar="URL")
    p.add_argument("--flip-at", type=int, default=100, metavar="BYTE")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    web.run_app(
        make_app(args.upstream.rstrip("/"), args.flip_at),
        host=host,
        port=int(port),
        print=None,
        access_log=None,
        handle_signals=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
