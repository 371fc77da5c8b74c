"""Pushing an image: regsidecar (S3 on moto, with auth) vs distribution 2.8 (S3 on moto).

``push``    one random layer of ``--push-mib`` MiB pushed the way docker pushes a layer:
            ``POST /v2/<repo>/blobs/uploads/`` -> one ``PATCH <Location>`` streaming the whole
            body (chunked) -> ``PUT <Location>?digest=...`` (empty body) -> 201; then a small
            config blob the same way and an OCI manifest naming both (``PUT .../manifests/r<N>``).
            Each target writes a fresh moto bucket of its own; ``--rounds`` rounds, the order
            alternating between rounds, a new random layer every round (nothing is
            deduplicated), medians compared. regsidecar stages the PATCH on local disk and writes
            the store at the PUT (multipart above ``push.multipart_threshold_bytes``);
            distribution streams the PATCH into a multipart upload under ``_uploads/`` and
            moves it into place at the PUT (a server-side multipart copy).
``promote`` after each of its pushes, ``POST /-/promote`` on the sidecar tags the new manifest
            ``qa``: its time and the S3 requests it made (links, no blob data).

The client (:mod:`benchmarks.pushclient`) is the same code for both targets (aiohttp in this
process, loopback). Each MiB of the layer is one random block with the round's stamp written
over its head, so generating the body costs the client one copy per MiB whichever server it
goes to; the digest is computed before the clock starts, as docker knows a layer's digest
before it pushes it. The sidecar gets HTTP Basic credentials of a writer on every request;
distribution runs without auth. S3 requests are read from moto's request log and classified
by key and query (:func:`s3_kind`); the log has no headers, so a server-side copy
(``x-amz-copy-source``) looks like any other PUT and is told apart by the key it targets.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from benchmarks.coldstream import self_cpu_s
from benchmarks.common import Env, log, mib, ratio, s3_args, start_sidecar, wait_quiet
from benchmarks.loadgen import MiB
from benchmarks.procstat import RssSampler, cpu_seconds, machine_busy_s, status_kib
from benchmarks.pushclient import (
    MT_MANIFEST,
    Layer,
    PushFailed,
    image_docs,
    push_blob,
    put_manifest,
    session,
)
from regsidecar.config import PushSettings
from tests.rig.htpasswd import WRITER, PushAuth
from tests.rig.httpcall import basic, call
from tests.rig.registry import Distribution, blob_data_key, tag_current_link_key

PUSH_REPO = "bench/push"
PROMOTE_TAG = "qa"
SIDECAR = "regsidecar"
DISTRIBUTION = "distribution"


# -- one target, one round --------------------------------------------------------------


@dataclass
class PushTarget:
    label: str
    bucket: str
    url: str
    pid: int
    headers: dict[str, str]
    server: Any  # Sidecar or Distribution: .log_tail()
    rows: list[dict[str, Any]] = field(default_factory=list)


def s3_kind(method: str, query: str, key: str, layer_digest: str) -> str:
    """What one logged S3 request was for: the object's role and the S3 operation (from the
    query's parameter names; a copy cannot be told from an upload: the log has no headers)."""
    params = {p.split("=", 1)[0] for p in query.split("&") if p}
    op = ""
    if "uploads" in params:
        op = " (create multipart)" if method == "POST" else " (list multipart uploads)"
    elif "partNumber" in params:
        op = " (part)"
    elif "uploadId" in params:
        op = {"GET": " (list parts)", "POST": " (complete multipart)"}.get(method, " (abort)")
    elif "delete" in params:
        op = " (delete objects)"
    elif params & {"list-type", "prefix", "delimiter"}:
        op = " (list)"
    if not key:
        role = "bucket"
    elif "/_uploads/" in key:
        role = "upload staging"
    elif layer_digest and key == blob_data_key(layer_digest):
        role = "layer data"
    elif "/_layers/" in key:
        role = "layer link"
    elif "/_manifests/" in key:
        role = "manifest/tag link"
    elif "/blobs/" in key:
        role = "other blob data"
    elif "/_audit/" in key:
        role = "audit record"
    else:
        role = "other"
    return role + op


def s3_summary(reqs: list[Any], layer_digest: str) -> dict[str, Any]:
    methods = Counter(q.method for q in reqs)
    kinds = Counter(f"{q.method} {s3_kind(q.method, q.query, q.key, layer_digest)}" for q in reqs)
    return {
        "total": len(reqs),
        "by_method": dict(sorted(methods.items())),
        "by_kind": dict(sorted(kinds.items())),
        "non_2xx": [f"{q.method} {q.path} {q.status}" for q in reqs if not 200 <= q.status < 300],
    }


def _stored_digest(env: Env, bucket: str, key: str) -> str | None:
    """sha256 of an object as the bucket holds it (streamed), None if it is missing."""
    assert env.moto is not None
    try:
        body = env.moto.client().get_object(Bucket=bucket, Key=key)["Body"]
    except Exception:  # botocore's NoSuchKey and friends: the check fails, the run goes on
        return None
    h = hashlib.sha256()
    for chunk in body.iter_chunks(MiB):
        h.update(chunk)
    return "sha256:" + h.hexdigest()


def _verify(
    env: Env, t: PushTarget, layer: Layer, tag: str, manifest_digest: str
) -> dict[str, Any]:
    """After the clock: the server answers for what was pushed, the bucket holds the bytes."""
    auth = WRITER if t.label == SIDECAR else None
    head = call("HEAD", f"{t.url}/v2/{PUSH_REPO}/blobs/{layer.digest}", auth=auth)
    man = call(
        "GET",
        f"{t.url}/v2/{PUSH_REPO}/manifests/{tag}",
        auth=auth,
        headers={"Accept": MT_MANIFEST},
    )
    stored = _stored_digest(env, t.bucket, blob_data_key(layer.digest))
    checks = {
        "blob_head": head.status == 200 and head.headers.get("content-length") == str(layer.size),
        "manifest_get": man.status == 200
        and man.headers.get("docker-content-digest") == manifest_digest,
        "bucket_layer_sha256": stored == layer.digest,
    }
    if not all(checks.values()):
        log(f"  WARNING {t.label}: checks {checks}; HEAD blob {head}; GET manifest {man}")
        log(f"  {t.label} log tail:\n{t.server.log_tail()}")
    return checks


def push_round(env: Env, t: PushTarget, n: int, layer: Layer) -> dict[str, Any]:
    """One image pushed to ``t``, timed, with its CPU, RSS and S3 requests."""
    assert env.moto is not None
    cfg, moto = env.cfg, env.moto
    tag = f"r{n + 1}"
    config, config_digest, manifest = image_docs(layer)
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    waited = wait_quiet(cfg.quiet_wait_s)
    mark0 = moto.mark()
    baseline = status_kib(t.pid, "VmRSS")
    pids = {t.pid, moto.pid}

    async def run() -> dict[str, Any]:
        async with session(t.headers, cfg.stream_timeout_s) as http:
            cpu0 = {p: cpu_seconds(p) for p in pids}
            me0, busy0 = self_cpu_s(), machine_busy_s()
            phases = await push_blob(http, t.url, PUSH_REPO, layer.stream(), layer.digest)
            cpu = {p: cpu_seconds(p) - cpu0[p] for p in pids}
            me = self_cpu_s() - me0
            other = machine_busy_s() - busy0 - sum(cpu.values()) - me
            # Every S3 request of the layer push, before the config and manifest add theirs.
            mark1 = await asyncio.to_thread(moto.mark)
            t0 = time.perf_counter()
            cfg_phases = await push_blob(http, t.url, PUSH_REPO, config, config_digest)
            t1 = time.perf_counter()
            await put_manifest(http, t.url, PUSH_REPO, tag, manifest, manifest_digest)
            t2 = time.perf_counter()
        return {
            **{k: round(v, 3) for k, v in phases.items()},
            "config_s": round(t1 - t0, 3),
            "config_put_s": round(cfg_phases["put_s"], 3),
            "manifest_s": round(t2 - t1, 3),
            "image_s": round(phases["seconds"] + (t2 - t0), 3),
            "server_cpu_s": round(cpu[t.pid], 2),
            "moto_cpu_s": round(cpu[moto.pid], 2),
            "client_cpu_s": round(me, 2),
            "other_cpu_s": round(max(0.0, other), 2),
            "mark1": mark1,
        }

    with RssSampler(t.pid, cfg.rss_interval_s) as sampler:
        r = asyncio.run(run())
    mark1 = r.pop("mark1")
    layer_reqs = list(moto.requests(since=mark0))[: mark1 - mark0]
    image_reqs = list(moto.requests(since=mark1))
    row = {
        "target": t.label,
        "round": n + 1,
        "tag": tag,
        "layer_digest": layer.digest,
        "manifest_digest": manifest_digest,
        **r,
        "mib_s": round(layer.size / MiB / r["seconds"], 1),
        "baseline_rss_mib": mib(baseline),
        "peak_rss_sampled_mib": mib(sampler.peak_kib),
        "s3_layer": s3_summary(layer_reqs, layer.digest),
        "s3_config_and_manifest": s3_summary(image_reqs, layer.digest),
        "waited_for_quiet_s": waited,
    }
    row["checks"] = _verify(env, t, layer, tag, manifest_digest)
    row["verified"] = all(row["checks"].values())
    log(
        f"push: {t.label} round {n + 1}: layer {r['seconds']:.2f} s ({row['mib_s']} MiB/s: "
        f"POST {r['post_s']:.3f} PATCH {r['patch_s']:.2f} PUT {r['put_s']:.2f}), image "
        f"{r['image_s']:.2f} s, S3 requests for the layer {row['s3_layer']['total']} "
        f"{row['s3_layer']['by_method']}, server CPU {r['server_cpu_s']} s, peak RSS "
        f"{row['peak_rss_sampled_mib']} MiB, rest of the machine {r['other_cpu_s']} s, "
        f"verified {row['verified']}"
    )
    return row


def promote_round(env: Env, t: PushTarget, n: int, manifest_digest: str) -> dict[str, Any]:
    """``POST /-/promote`` of the manifest just pushed to the tag ``qa``, timed, S3 counted."""
    assert env.moto is not None
    waited = wait_quiet(env.cfg.quiet_wait_s)
    mark = env.moto.mark()
    doc = {"source": f"{PUSH_REPO}@{manifest_digest}", "tags": [PROMOTE_TAG]}
    reply = call("POST", f"{t.url}/-/promote", json_body=doc, auth=WRITER)
    reqs = list(env.moto.requests(since=mark))
    link = tag_current_link_key(PUSH_REPO, PROMOTE_TAG)
    try:
        moved_to = env.moto.get(t.bucket, link).decode()
    except Exception:  # a missing link fails the check below
        moved_to = ""
    s3 = s3_summary(reqs, "")
    writes = [q for q in reqs if q.method in ("PUT", "POST")]
    row = {
        "round": n + 1,
        "status": reply.status,
        "seconds": round(reply.elapsed_s, 4),
        "response": reply.json()
        if reply.status == 200
        else reply.body[:2000].decode("utf-8", "replace"),
        "s3": s3,
        "s3_writes": len(writes),
        "s3_blob_writes": sum(1 for q in writes if "/blobs/" in q.key),
        "tag_link_ok": moved_to == manifest_digest,
        "waited_for_quiet_s": waited,
    }
    row["verified"] = reply.status == 200 and row["tag_link_ok"] and row["s3_blob_writes"] == 0
    if not row["verified"]:
        log(f"  WARNING promote: {reply}; tag link holds {moved_to!r}")
        log(f"  sidecar log tail:\n{t.server.log_tail()}")
    log(
        f"promote: round {n + 1}: {reply.status} in {reply.elapsed_s * 1000:.1f} ms, "
        f"S3 {s3['by_kind']}"
    )
    return row


# -- the benchmark ----------------------------------------------------------------------


def _targets(env: Env) -> list[PushTarget]:
    assert env.moto is not None
    for bucket in ("push-sidecar", "push-distribution"):
        env.moto.create_bucket(bucket)
    auth_cfg = PushAuth().write(env.root / "push-auth")
    sc = start_sidecar(
        env, [*s3_args(env.moto, "push-sidecar"), "--config", str(auth_cfg)], "sidecar-push"
    )
    dist = Distribution(moto=env.moto, bucket="push-distribution", workdir=env.root / "dist-push")
    dist.workdir.mkdir()
    env.stack.enter_context(dist)
    log(f"push: distribution pid {dist.pid} on {dist.url} (bucket push-distribution)")
    return [
        PushTarget(SIDECAR, "push-sidecar", sc.url, sc.pid, {"Authorization": basic(*WRITER)}, sc),
        PushTarget(DISTRIBUTION, "push-distribution", dist.url, dist.pid, {}, dist),
    ]


def _median(rows: list[dict[str, Any]], k: str) -> float | None:
    return statistics.median(r[k] for r in rows) if rows else None


def bench_push(env: Env) -> dict[str, Any]:
    cfg = env.cfg
    size = cfg.push_mib * MiB
    block = os.urandom(MiB)
    targets = _targets(env)
    sc = targets[0]
    log(f"push: {cfg.rounds} rounds of one {cfg.push_mib} MiB layer + config + manifest")
    promotes: list[dict[str, Any]] = []
    failures: list[str] = []
    for n in range(cfg.rounds):
        order = targets if n % 2 == 0 else targets[::-1]
        for t in order:
            layer = Layer(block[24:], size, os.urandom(16))
            try:
                row = push_round(env, t, n, layer)
            except (PushFailed, aiohttp.ClientError, TimeoutError) as exc:
                failures.append(f"{t.label} round {n + 1}: {exc!r}")
                log(f"push: FAILED {t.label} round {n + 1}: {exc!r}")
                log(f"  {t.label} log tail:\n{t.server.log_tail()}")
                break
            t.rows.append(row)
            if t is sc and row["verified"]:
                promotes.append(promote_round(env, sc, n, row["manifest_digest"]))
        if failures:
            break
    uploads_left = sorted(p.name for p in (env.root / "sidecar-push" / "uploads").glob("*"))
    hwm = status_kib(sc.pid, "VmHWM")
    result = push_result(cfg.push_mib, targets, promotes, failures)
    result["sidecar_vmhwm_mib"] = mib(hwm)
    result["sidecar_uploads_left"] = uploads_left
    return result


def push_result(
    push_mib: int, targets: list[PushTarget], promotes: list[dict[str, Any]], failures: list[str]
) -> dict[str, Any]:
    settings = PushSettings()
    rows = {t.label: t.rows for t in targets}
    med = {
        label: {k: _median(rs, k) for k in ("seconds", "post_s", "patch_s", "put_s", "image_s")}
        for label, rs in rows.items()
    }
    sc, dist = med[SIDECAR], med[DISTRIBUTION]

    def div(a: float | None, b: float | None) -> float | None:
        return ratio(a, b) if a is not None and b is not None else None

    layer_mib = float(push_mib)
    return {
        "layer_bytes": push_mib * MiB,
        "repo": PUSH_REPO,
        "sidecar_push_settings": {
            "multipart_threshold_bytes": int(settings.multipart_threshold_bytes),
            "part_bytes": int(settings.part_bytes),
        },
        "rows": rows,
        "median": med,
        "median_mib_s": {
            label: round(layer_mib / m["seconds"], 1) if m["seconds"] else None
            for label, m in med.items()
        },
        "ratio": div(sc["image_s"], dist["image_s"]),
        "ratio_layer": div(sc["seconds"], dist["seconds"]),
        "sidecar_peak_rss_mib": max(
            (r["peak_rss_sampled_mib"] or 0 for r in rows[SIDECAR]), default=None
        ),
        "promote": {
            "rounds": promotes,
            "median_s": _median(promotes, "seconds"),
            "verified_ok": sum(1 for p in promotes if p["verified"]),
        },
        "pushes": sum(len(rs) for rs in rows.values()),
        "verified_ok": sum(1 for rs in rows.values() for r in rs if r["verified"]),
        "failures": failures,
    }
