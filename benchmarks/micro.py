"""Micro benchmarks: each regsidecar number as a ratio against a peer measured in the same run.

1. ``blob``     cache-hit GET of one blob (16 MiB) at c=8: regsidecar (S3 store on moto, served
                from its disk cache with sendfile) vs nginx (sendfile) serving the very same
                cached file vs distribution (filesystem driver) serving the same blob.
2. ``manifest`` manifest GET by tag at c=16: regsidecar vs distribution over the same registry:2
                tree on disk, regsidecar over S3 (moto, default 30 s tag TTL), and a bare
                aiohttp handler (the framework's ceiling).
3. ``cold``     GET of a cold 256 MiB blob through a freshly started sidecar vs a direct GET
                of the same S3 object from moto (same aiohttp client), interleaved rounds.
3b. ``capped``  the same from an S3 stand-in capping each connection at 40 MiB/s (nginx
                ``limit_rate``): through a fresh sidecar vs one direct GET vs distribution
                2.8 on the same stand-in (target: the sidecar >= 5x the direct GET).
4. ``fanout``   100 concurrent cold GETs of one blob through a fresh sidecar: S3 GETs of the
                blob's data counted in moto's log (target 1), every body sha256-verified.
5. ``rss``      peak RSS of regsidecar while 50 clients stream cold 256 MiB blobs
                (moto S3 -> sidecar -> aiohttp client here, sha256 verified).
6. ``push``     push of a new random 256 MiB layer (POST, one PATCH, PUT ?digest), its config
                and manifest: regsidecar (S3 on moto, Basic auth) vs distribution (S3 on moto),
                interleaved rounds, S3 requests counted; then ``POST /-/promote`` on the sidecar.

hey is the load generator, always against 127.0.0.1, ``-z`` bounded. Each load runs ``--rounds``
times (default 3), interleaved across the servers it compares, and the median round is
reported (``cold`` and ``push`` time single requests of an aiohttp client in this process
instead, and compare medians). Before each load the script waits (``--quiet-wait``, at most
10 s) for the rest of the machine to go idle. Every process started here is stopped by PID
and every temp dir removed, also on Ctrl-C, SIGTERM or an error. Run from the repository
root::

    python -m benchmarks.micro --json benchmarks/results/micro.json
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks.capped import bench_capped
from benchmarks.coldget import bench_cold, bench_fanout
from benchmarks.coldstream import bench_rss
from benchmarks.common import (
    MANIFEST_ACCEPT,
    REPO,
    TAG,
    Config,
    Env,
    expect,
    loaded,
    log,
    ratio,
    s3_args,
    setup_image,
    start_sidecar,
    wait_quiet,
)
from benchmarks.options import build_parser, resolve
from benchmarks.peers import BareAiohttp, Nginx
from benchmarks.push import bench_push
from benchmarks.report import bad_responses, machine, render
from tests.rig.moto import MotoServer

# -- the benchmarks -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One server under load: its label, the PID to account CPU to, the URL, extra headers."""

    label: str
    pid: int
    url: str
    headers: tuple[str, ...] = ()


def measure(env: Env, bench: str, concurrency: int, targets: list[Target]) -> list[dict[str, Any]]:
    """``--rounds`` rounds, each loading every target once in turn (interleaved, so a noisy
    neighbour hits all of them alike); per target the round with the median req/s is reported,
    every round is kept under ``rounds``."""
    assert env.moto is not None
    per: dict[str, list[dict[str, Any]]] = {t.label: [] for t in targets}
    for n in range(env.cfg.rounds):
        for t in targets:
            quiet = wait_quiet(env.cfg.quiet_wait_s)
            mark = env.moto.mark()
            row = loaded(bench, t.label, t.pid, t.url, concurrency, env.cfg.duration_s, t.headers)
            row["s3_requests_during_load"] = len(env.moto.requests(since=mark))
            row["round"] = n + 1
            row["waited_for_quiet_s"] = quiet
            per[t.label].append(row)
    out = []
    for t in targets:
        rows = sorted(per[t.label], key=lambda r: r["req_s"])
        best = dict(rows[(len(rows) - 1) // 2])
        best["req_s_rounds"] = [r["req_s"] for r in per[t.label]]
        best["rounds"] = per[t.label]
        out.append(best)
    return out


def bench_blob(env: Env) -> dict[str, Any]:
    cfg, d = env.cfg, env.blob_digest
    assert env.moto is not None and env.distribution is not None
    if env.sidecar_s3 is None:
        env.sidecar_s3 = start_sidecar(env, s3_args(env.moto, "bench"), "sidecar-s3")
    sc = env.sidecar_s3
    path = f"/v2/{REPO}/blobs/{d}"
    first = expect(sc.url + path, d).get("X-Cache")
    second = expect(sc.url + path, d).get("X-Cache")
    if (first, second) != ("miss", "hit"):
        raise RuntimeError(f"expected a miss then a hit, got X-Cache {first}, {second}")
    cached = sc.data_dir / "cache" / "blobs" / "sha256" / d.split(":")[1]
    if not cached.is_file():
        raise RuntimeError(f"warmed blob not found at {cached}")
    ngx_path = f"/sha256/{cached.name}"
    ngx = env.stack.enter_context(Nginx(cached.parent.parent, ready_path=ngx_path))
    expect(ngx.url + ngx_path, d)
    dist = env.distribution
    expect(dist.url + path, d)

    rows = measure(
        env,
        "blob",
        cfg.blob_concurrency,
        [
            Target("regsidecar (S3 on moto, cache hit)", sc.pid, sc.url + path),
            Target("nginx sendfile (same cached file)", ngx.pid, ngx.url + ngx_path),
            Target("distribution (filesystem driver)", dist.pid, dist.url + path),
        ],
    )
    ngx.stop()
    return {
        "blob_bytes": cfg.blob_size,
        "cached_file": str(cached),
        "rows": rows,
        "ratios": {
            "sidecar/nginx req/s": ratio(rows[0]["req_s"], rows[1]["req_s"]),
            "sidecar/distribution req/s": ratio(rows[0]["req_s"], rows[2]["req_s"]),
        },
    }


def bench_manifest(env: Env) -> dict[str, Any]:
    cfg, md = env.cfg, env.manifest_digest
    assert env.moto is not None and env.distribution is not None and env.tree is not None
    accept = {"Accept": MANIFEST_ACCEPT.split(": ", 1)[1]}
    path = f"/v2/{REPO}/manifests/{TAG}"
    sc_fs = start_sidecar(env, ["--storage", str(env.tree)], "sidecar-fs")
    if env.sidecar_s3 is None:
        env.sidecar_s3 = start_sidecar(env, s3_args(env.moto, "bench"), "sidecar-s3")
    sc_s3 = env.sidecar_s3
    bare = env.stack.enter_context(BareAiohttp(None))
    dist = env.distribution
    for url in (sc_fs.url, sc_s3.url, dist.url):
        h = expect(url + path, md, accept)  # also warms the sidecars' tag and manifest caches
        if h.get("Docker-Content-Digest") != md:
            raise RuntimeError(f"{url}: Docker-Content-Digest {h.get('Docker-Content-Digest')}")

    hh = (MANIFEST_ACCEPT,)
    rows = measure(
        env,
        "manifest",
        cfg.manifest_concurrency,
        [
            Target("bare aiohttp handler (small JSON)", bare.pid, bare.url + "/"),
            Target("regsidecar (filesystem tree)", sc_fs.pid, sc_fs.url + path, hh),
            Target("regsidecar (S3 on moto, tag TTL 30 s)", sc_s3.pid, sc_s3.url + path, hh),
            Target("distribution (filesystem driver, same tree)", dist.pid, dist.url + path, hh),
        ],
    )
    bare.stop()
    sc_fs.stop()
    bare_rps, fs_rps, s3_rps, dist_rps = (r["req_s"] for r in rows)
    return {
        "rows": rows,
        "ratios": {
            "sidecar-fs/distribution req/s": ratio(fs_rps, dist_rps),
            "sidecar-s3/distribution req/s": ratio(s3_rps, dist_rps),
            "sidecar-fs/bare aiohttp req/s": ratio(fs_rps, bare_rps),
        },
    }


# -- main -----------------------------------------------------------------------------------


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(cfg: Config) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="regsidecar-bench-"))
        stack.callback(shutil.rmtree, root, ignore_errors=True)  # registered first: runs last
        try:
            env = Env(stack, root, cfg)
            env.moto = stack.enter_context(MotoServer())
            if "blob" in cfg.benches or "manifest" in cfg.benches:
                setup_image(env)
            for name, fn in (
                ("blob", bench_blob),
                ("manifest", bench_manifest),
                ("cold", bench_cold),
                ("capped", bench_capped),
                ("fanout", bench_fanout),
                ("rss", bench_rss),
                ("push", bench_push),
            ):
                if name in cfg.benches:
                    results[name] = fn(env)
        except BaseException:
            # A second Ctrl-C must not cut the clean-up short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            log("stopping every process started and removing temp dirs")
            raise
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = resolve(args)
    for binary in ("hey", "nginx", "docker-registry", "moto_server"):
        if shutil.which(binary) is None:
            print(
                f"micro: {binary} is not on PATH (see tests/rig/install-deps.sh)", file=sys.stderr
            )
            return 2
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta: dict[str, Any] = {
        "date": date,
        "command": "python -m benchmarks.micro"
        + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:])),
        "machine": machine(),
        "config": {k: v for k, v in vars(cfg).items()},
    }
    previous = signal.signal(signal.SIGTERM, _sigterm)
    # Ctrl-C cleans up too, even when started from a shell that ignores SIGINT in background jobs
    signal.signal(signal.SIGINT, signal.default_int_handler)
    t0 = time.monotonic()
    try:
        results = run(cfg)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    meta["wall_s"] = round(time.monotonic() - t0, 1)
    results = {"meta": meta, **results}
    print(render(results))
    if cfg.json_out:
        out = Path(cfg.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.merge and out.is_file():
            results = merge(json.loads(out.read_text()), results)
        out.write_text(json.dumps(results, indent=2) + "\n")
        log(f"results written to {out}")
    return 1 if bad_responses(results) else 0


def merge(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with the benchmarks of ``new`` replacing its own; the rerun is recorded in
    ``meta.reruns`` (command, date, benchmarks) so the results page can show it."""
    meta = dict(old["meta"])
    rerun = {k: new["meta"][k] for k in ("command", "date")}
    rerun["benches"] = [b for b in new if b != "meta"]
    meta["reruns"] = [*meta.get("reruns", []), rerun]
    return {**old, **{k: v for k, v in new.items() if k != "meta"}, "meta": meta}


if __name__ == "__main__":
    sys.exit(main())
