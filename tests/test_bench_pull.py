"""``regsidecar bench pull`` against real registries on loopback: a sidecar and distribution
over one registry:2 tree, a fault proxy for failures, and a recording server for the exact
requests (docker's order, Accept list, download slots)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from regsidecar import cli
from regsidecar.bench.puller import PullFailure, classify
from regsidecar.bench.runner import render_line
from regsidecar.storage import layout
from regsidecar.storage.filesystem import FilesystemDriver
from tests.conftest import require
from tests.rig.faultproxy import FaultProxy
from tests.rig.images import MiB, OCIImage, build_oci_layout
from tests.rig.ports import free_port
from tests.rig.proc import child_env
from tests.rig.registry import Distribution
from tests.sidecar import Sidecar, wait_for

pytestmark = [pytest.mark.rig, pytest.mark.timeout(120)]

MULTI = "bench/multi:v1"  # OCI index: linux/amd64 + linux/arm64, two layers each
SINGLE = "bench/single:v1"  # one OCI image manifest
CORRUPT = "bench/corrupt:v1"  # a layer whose stored bytes no longer match its digest
DOCKER_ACCEPT = [
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/json",
]


def write_image(root: Path, repo: str, tag: str, image: OCIImage) -> None:
    """Put ``image`` into a registry:2 tree as a push leaves it (blobs, links, tag)."""
    driver = FilesystemDriver(str(root))
    manifests = {p.manifest.digest for p in image.platforms} | {image.digest}
    for blob in image.blobs:
        driver.put(layout.blob_data(blob.digest), image.read_blob(blob.digest))
        link = layout.revision_link if blob.digest in manifests else layout.layer_link
        driver.put(link(repo, blob.digest), blob.digest.encode())
    driver.put(layout.tag_index_link(repo, tag, image.digest), image.digest.encode())
    driver.put(layout.tag_current_link(repo, tag), image.digest.encode())


def pulled_bytes(image: OCIImage, platform: str = "linux/amd64") -> int:
    """What one client receives: the index (if any), the platform's manifest, config, layers."""
    os_, arch = platform.split("/")
    p = image.for_platform(os_, arch)
    top = image.index.size if image.index is not None else 0
    return top + p.manifest.size + p.config.size + sum(layer.size for layer in p.layers)


def requests_per_client(image: OCIImage) -> int:
    """GET /v2/, HEAD tag, GET (index,) manifest, config and layers: all 200."""
    p = image.platforms[0]
    return 2 + (1 if image.is_index else 0) + 1 + 1 + len(p.layers)


@dataclass
class Tree:
    root: Path
    multi: OCIImage
    single: OCIImage
    corrupt: OCIImage


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Tree:
    layouts = tmp_path_factory.mktemp("layouts")
    root = tmp_path_factory.mktemp("registry")
    platforms = [("linux", "amd64"), ("linux", "arm64")]
    multi = build_oci_layout(layouts / "m", "v1", platforms, [1 * MiB, 256 * 1024], seed="bm")
    single = build_oci_layout(layouts / "s", "v1", [("linux", "amd64")], [512 * 1024], seed="bs")
    corrupt = build_oci_layout(layouts / "c", "v1", [("linux", "amd64")], [64 * 1024], seed="bc")
    write_image(root, "bench/multi", "v1", multi)
    write_image(root, "bench/single", "v1", single)
    write_image(root, "bench/corrupt", "v1", corrupt)
    data = root / layout.blob_data(corrupt.platforms[0].layers[0].digest)
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    return Tree(root, multi, single, corrupt)


@pytest.fixture(scope="module")
def sidecar(tree: Tree) -> Iterator[Sidecar]:
    with Sidecar(["--storage", str(tree.root)]) as sc:
        yield sc


@pytest.fixture(scope="module")
def distribution(tree: Tree) -> Iterator[Distribution]:
    require("docker-registry")
    with Distribution(root_dir=tree.root) as dist:
        yield dist


@pytest.fixture
def proxy(sidecar: Sidecar) -> Iterator[FaultProxy]:
    """A fault proxy in front of the sidecar (its request log is per test)."""
    with FaultProxy(sidecar.url) as p:
        yield p


def bench_pull(
    tmp_path: Path, *args: str, timeout_s: float = 60.0
) -> tuple[int, dict[str, Any], str]:
    """Run ``python -m regsidecar bench pull ARGS --json OUT``: (exit status, result, stderr)."""
    out = tmp_path / f"result-{time.monotonic_ns()}.json"
    cp = subprocess.run(
        [sys.executable, "-m", "regsidecar", "bench", "pull", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=child_env(),
        stdin=subprocess.DEVNULL,
    )
    assert cp.returncode in (0, 1), cp.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    assert "| label | N |" in cp.stdout  # the Markdown summary
    return cp.returncode, result, cp.stderr


def assert_all_pulled(result: dict[str, Any], clients: int, image_bytes: int, reqs: int) -> None:
    assert result["kind"] == "pull" and result["version"] == 1
    assert result["params"]["clients"] == clients
    assert len(result["clients"]) == clients
    for i, c in enumerate(result["clients"]):
        assert c["client"] == i
        assert c["error"] is None and c["error_detail"] == "", c
        assert c["ready_s"] > 0
        assert c["bytes"] == image_bytes
        assert c["requests"] == {"200": reqs}
    s = result["summary"]
    assert (s["clients"], s["ok"], s["failed"]) == (clients, clients, 0)
    assert set(s["failures"].values()) == {0}
    assert s["bytes"] == clients * image_bytes
    assert s["requests"] == {"200": clients * reqs}
    assert 0 < s["p50_s"] <= s["p95_s"] <= s["p99_s"] <= s["max_s"] <= s["all_ready_s"]
    assert s["max_s"] == max(c["ready_s"] for c in result["clients"])
    assert abs(result["started_at"] - time.time()) < 120


def test_four_clients_pull_a_multi_platform_image_from_the_sidecar(
    tmp_path: Path, tree: Tree, sidecar: Sidecar
) -> None:
    """Index -> linux/amd64 manifest -> config + layers, verified, for each of 4 clients,
    with docker's requests: HEAD the tag, then GET the manifest by digest."""
    mark = len(sidecar.logs())
    rc, result, stderr = bench_pull(
        tmp_path, "--url", sidecar.url, "--clients", "4", "--image", MULTI, "--label", "sc"
    )
    assert rc == 0
    assert stderr == ""  # not a terminal: no progress line
    assert_all_pulled(result, 4, pulled_bytes(tree.multi), requests_per_client(tree.multi))
    assert result["params"] == {
        "image": MULTI,
        "clients": 4,
        "targets": [sidecar.url],
        "ramp_s": 0.0,
        "concurrency": 3,
        "platform": "linux/amd64",
        "timeout_s": 600.0,
        "label": "sc",
    }
    seen = [(e["method"], e["path"]) for e in sidecar.logs()[mark:] if "path" in e]
    amd64 = tree.multi.manifest_digest("linux", "amd64")
    assert seen.count(("GET", "/v2/")) == 4
    assert seen.count(("HEAD", "/v2/bench/multi/manifests/v1")) == 4
    assert seen.count(("GET", "/v2/bench/multi/manifests/v1")) == 0
    assert seen.count(("GET", f"/v2/bench/multi/manifests/{tree.multi.digest}")) == 4
    assert seen.count(("GET", f"/v2/bench/multi/manifests/{amd64}")) == 4


def test_platform_flag_takes_that_platforms_manifest(
    tmp_path: Path, tree: Tree, sidecar: Sidecar
) -> None:
    mark = len(sidecar.logs())
    rc, result, _ = bench_pull(
        tmp_path, "--url", sidecar.url, "--image", MULTI, "--platform", "linux/arm64"
    )
    assert rc == 0
    arm64 = pulled_bytes(tree.multi, "linux/arm64")
    assert_all_pulled(result, 1, arm64, requests_per_client(tree.multi))
    got = {e["path"] for e in sidecar.logs()[mark:] if e.get("method") == "GET"}
    arm = tree.multi.for_platform("linux", "arm64")
    assert f"/v2/bench/multi/manifests/{arm.manifest_digest}" in got
    assert {f"/v2/bench/multi/blobs/{b.digest}" for b in (arm.config, *arm.layers)} <= got
    amd64 = tree.multi.manifest_digest("linux", "amd64")
    assert f"/v2/bench/multi/manifests/{amd64}" not in got


def test_distribution_one_url_for_all(
    tmp_path: Path, tree: Tree, distribution: Distribution
) -> None:
    rc, result, _ = bench_pull(
        tmp_path, "--url", distribution.url, "--clients", "3", "--image", MULTI
    )
    assert rc == 0
    assert_all_pulled(result, 3, pulled_bytes(tree.multi), requests_per_client(tree.multi))


def test_one_target_per_client_cycled_from_flags_and_from_a_file(
    tmp_path: Path, tree: Tree, sidecar: Sidecar, distribution: Distribution
) -> None:
    """Two targets, four clients: client i pulls from target i mod 2 (a single manifest)."""
    rc, result, _ = bench_pull(
        tmp_path, "--url", distribution.url, "--url", sidecar.url, "--clients", "4",
        "--image", SINGLE,
    )  # fmt: skip
    assert rc == 0
    assert_all_pulled(result, 4, pulled_bytes(tree.single), requests_per_client(tree.single))
    assert [c["target"] for c in result["clients"]] == [distribution.url, sidecar.url] * 2
    targets = tmp_path / "targets"
    targets.write_text(f"# one per host\n{sidecar.url}/\n\n{distribution.url}  # central\n")
    rc, result, _ = bench_pull(
        tmp_path, "--targets", str(targets), "--clients", "2", "--image", SINGLE
    )
    assert rc == 0
    assert [c["target"] for c in result["clients"]] == [sidecar.url, distribution.url]
    assert result["params"]["targets"] == [sidecar.url, distribution.url]


def test_pull_by_digest_skips_the_tag(tmp_path: Path, tree: Tree, sidecar: Sidecar) -> None:
    rc, result, _ = bench_pull(
        tmp_path, "--url", sidecar.url, "--image", f"bench/single@{tree.single.digest}"
    )
    assert rc == 0
    assert_all_pulled(result, 1, pulled_bytes(tree.single), requests_per_client(tree.single) - 1)


def test_ramp_spreads_the_starts(tmp_path: Path, tree: Tree, sidecar: Sidecar) -> None:
    """Client i starts i * ramp / N after the first."""
    rc, result, _ = bench_pull(
        tmp_path, "--url", sidecar.url, "--clients", "4", "--ramp", "0.4", "--image", SINGLE
    )
    assert rc == 0
    offsets = [c["offset_s"] for c in result["clients"]]
    for i, offset in enumerate(offsets):
        assert i * 0.1 - 0.005 <= offset < i * 0.1 + 0.3, offsets
    ends = [c["offset_s"] + c["ready_s"] for c in result["clients"]]
    assert result["summary"]["all_ready_s"] == pytest.approx(max(ends) - offsets[0], abs=1e-5)


# -- failures, by kind ---------------------------------------------------------------------
def one_failure(result: dict[str, Any], kind: str) -> dict[str, Any]:
    s = result["summary"]
    assert (s["ok"], s["failed"]) == (0, 1)
    assert s["failures"][kind] == 1 and sum(s["failures"].values()) == 1
    assert s["p50_s"] is None and s["all_ready_s"] is None
    c: dict[str, Any] = result["clients"][0]
    assert c["error"] == kind and c["ready_s"] is None
    return c


@pytest.mark.parametrize("server", ["sidecar", "distribution"])
def test_missing_tag_is_an_http_failure(
    request: pytest.FixtureRequest, tmp_path: Path, server: str
) -> None:
    """HEAD answers 404 without a body, so the GET by tag asks for the error, as docker."""
    url = request.getfixturevalue(server).url
    rc, result, _ = bench_pull(tmp_path, "--url", url, "--image", "bench/multi:nope")
    assert rc == 1
    c = one_failure(result, "http")
    assert "GET /v2/bench/multi/manifests/nope: HTTP 404 MANIFEST_UNKNOWN" in c["error_detail"]
    assert c["requests"] == {"200": 1, "404": 2}


@pytest.mark.parametrize("server", ["sidecar", "distribution"])
def test_corrupt_blob_is_a_digest_failure_and_not_retried(
    request: pytest.FixtureRequest, tmp_path: Path, tree: Tree, server: str
) -> None:
    url = request.getfixturevalue(server).url
    rc, result, _ = bench_pull(tmp_path, "--url", url, "--image", CORRUPT)
    assert rc == 1
    c = one_failure(result, "digest")
    layer = tree.corrupt.platforms[0].layers[0]
    assert layer.digest in c["error_detail"]
    # One try of the corrupt layer, as docker (no retry after a digest mismatch): no request
    # beyond one pull's worth. The config GET running beside it may be cut off ("error") when
    # the pull fails first.
    assert set(c["requests"]) <= {"200", "error"} and c["requests"].get("error", 0) <= 1
    assert sum(c["requests"].values()) == requests_per_client(tree.corrupt)
    assert c["bytes"] <= pulled_bytes(tree.corrupt)


def test_dead_target_is_a_connect_failure(tmp_path: Path) -> None:
    rc, result, _ = bench_pull(
        tmp_path, "--url", f"http://127.0.0.1:{free_port()}", "--image", SINGLE
    )
    assert rc == 1
    c = one_failure(result, "connect")
    assert c["requests"] == {"error": 1}


def test_stalled_server_is_a_timeout_failure(tmp_path: Path, tree: Tree, proxy: FaultProxy) -> None:
    layer = tree.single.platforms[0].layers[0].digest
    proxy.stall(30.0, path_contains=f"/blobs/{layer}")
    began = time.monotonic()
    rc, result, _ = bench_pull(tmp_path, "--url", proxy.url, "--image", SINGLE, "--timeout", "1")
    assert time.monotonic() - began < 15
    assert rc == 1
    c = one_failure(result, "timeout")
    assert f"waiting for GET /v2/bench/single/blobs/{layer}" in c["error_detail"]
    assert c["requests"] == {"200": requests_per_client(tree.single) - 1, "error": 1}


def test_reset_layer_is_retried_five_times_then_a_reset_failure(
    tmp_path: Path, tree: Tree, proxy: FaultProxy
) -> None:
    layer = tree.single.platforms[0].layers[0]
    proxy.reset_after(1000, path_contains=f"/blobs/{layer.digest}")
    rc, result, _ = bench_pull(
        tmp_path, "--url", proxy.url, "--image", SINGLE, "--retry-delay", "0.01"
    )
    assert rc == 1
    c = one_failure(result, "reset")
    assert "after 5 attempts" in c["error_detail"]
    assert proxy.count("GET", f"/blobs/{layer.digest}") == 5  # docker's max-download-attempts


def test_transient_resets_are_retried_and_the_pull_succeeds(
    tmp_path: Path, tree: Tree, proxy: FaultProxy
) -> None:
    layer = tree.single.platforms[0].layers[0]
    proxy.reset_after(1000, times=2, path_contains=f"/blobs/{layer.digest}")
    rc, result, _ = bench_pull(
        tmp_path, "--url", proxy.url, "--image", SINGLE, "--retry-delay", "0.01"
    )
    assert rc == 0
    c = result["clients"][0]
    assert c["error"] is None
    assert c["requests"] == {"200": requests_per_client(tree.single) + 2}
    # what the cut attempts received counts as moved too
    assert pulled_bytes(tree.single) <= c["bytes"] <= pulled_bytes(tree.single) + 2000


@pytest.mark.parametrize(("status", "tries"), [(500, 5), (404, 1)])
def test_layer_5xx_is_retried_4xx_is_not(
    tmp_path: Path, tree: Tree, proxy: FaultProxy, status: int, tries: int
) -> None:
    layer = tree.single.platforms[0].layers[0]
    proxy.fail(status, path_contains=f"/blobs/{layer.digest}")
    rc, result, _ = bench_pull(
        tmp_path, "--url", proxy.url, "--image", SINGLE, "--retry-delay", "0.01"
    )
    assert rc == 1
    c = one_failure(result, "http")
    assert c["requests"][str(status)] == tries
    assert proxy.count("GET", f"/blobs/{layer.digest}") == tries


# -- orchestration -------------------------------------------------------------------------
def test_nothing_is_requested_before_the_start_file_exists(
    tmp_path: Path, tree: Tree, proxy: FaultProxy
) -> None:
    ready, start, out = tmp_path / "ready", tmp_path / "start", tmp_path / "out.json"
    argv = [sys.executable, "-m", "regsidecar", "bench", "pull", "--url", proxy.url]
    argv += ["--clients", "2", "--image", SINGLE, "--json", str(out), "--quiet"]
    argv += ["--ready-file", str(ready), "--start-file", str(start), "--timeout", "30"]
    proc = subprocess.Popen(
        argv,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(ready.exists, 20.0, "the ready file")
        time.sleep(0.3)
        assert proxy.requests() == [], "requests before the start file"
        assert proc.poll() is None
        start.touch()
        released = time.time()
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    result = json.loads(out.read_text())
    assert result["started_at"] >= released - 0.05
    assert result["summary"]["ok"] == 2
    assert [r.path for r in proxy.requests()].count("/v2/") == 2


def test_start_file_that_never_appears_fails_every_client_as_timeout(
    tmp_path: Path, proxy: FaultProxy
) -> None:
    rc, result, _ = bench_pull(
        tmp_path, "--url", proxy.url, "--clients", "2", "--image", SINGLE,
        "--start-file", str(tmp_path / "never"), "--timeout", "0.3",
    )  # fmt: skip
    assert rc == 1
    assert result["summary"]["failures"]["timeout"] == 2
    assert all(c["requests"] == {} for c in result["clients"])
    assert proxy.requests() == []


def test_progress_line_on_a_terminal(tmp_path: Path, sidecar: Sidecar) -> None:
    """stderr a terminal: the line is redrawn with \r and ends with the final counts."""
    argv = [sys.executable, "-m", "regsidecar", "bench", "pull", "--url", sidecar.url]
    main, child = pty.openpty()
    try:
        cp = subprocess.run(
            [*argv, "--clients", "2", "--image", SINGLE],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=child,
            env=child_env(),
            timeout=60,
        )
        os.close(child)
        child = -1
        shown = b""
        while True:
            try:
                data = os.read(main, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            shown += data
    finally:
        os.close(main)
        if child >= 0:
            os.close(child)
    assert cp.returncode == 0
    text = shown.decode()
    assert "\r" in text
    assert "clients 2/2 done (2 ok, 0 failed, 0 running)" in text


@pytest.mark.parametrize(
    ("exc", "kind", "retry"),
    [
        (TimeoutError(), "timeout", True),
        (aiohttp.SocketTimeoutError("read"), "timeout", True),
        (aiohttp.ConnectionTimeoutError("connect"), "connect", True),
        (ConnectionRefusedError(111, "refused"), "connect", True),
        (ConnectionResetError(104, "reset by peer"), "reset", True),
        (aiohttp.ServerDisconnectedError(), "reset", True),
        (aiohttp.ClientPayloadError("short body"), "reset", True),
        (ValueError("not JSON"), "other", False),
        (PullFailure("digest", "mismatch"), "digest", False),
    ],
)
def test_failure_kinds(exc: BaseException, kind: str, retry: bool) -> None:
    failure = classify(exc)
    assert (failure.kind, failure.retry) == (kind, retry)


def test_render_line() -> None:
    from regsidecar.bench.puller import Totals

    line = render_line(Totals(clients=4, running=1, ok=2, failed=1, bytes=10 << 20), 4.0)
    assert line.startswith("clients 3/4 done (2 ok, 1 failed, 1 running)")
    assert "10.0 MiB" in line and "2.5 MiB/s" in line and line.endswith("4.0 s")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "http://127.0.0.1:1", "--clients", "0"], "--clients"),
        (["--url", "http://127.0.0.1:1", "--clients", "10001"], "--clients"),
        ([], "no target"),
        (["--url", "ftp://127.0.0.1:1"], "http://"),
        (["--url", "http://127.0.0.1:1", "--ramp", "-1"], "--ramp"),
        (["--url", "http://127.0.0.1:1", "--timeout", "0"], "--timeout"),
        (["--url", "http://127.0.0.1:1", "--concurrency", "0"], "--concurrency"),
        (["--url", "http://127.0.0.1:1", "--platform", "linux"], "--platform"),
        (["--targets", "/nonexistent/targets"], "--targets"),
    ],
)
def test_bad_arguments_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["bench", "pull", "--image", SINGLE, *args]) == 2
    assert message in capsys.readouterr().err


def test_bad_image_and_missing_image_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "pull", "--url", "http://127.0.0.1:1", "--image", "Bad:Name"]) == 2
    assert "Bad" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "pull", "--url", "http://127.0.0.1:1"])
    assert exc.value.code == 2


# -- the requests themselves, recorded ----------------------------------------------------------
async def test_requests_are_dockers_in_order_headers_and_download_slots(
    tmp_path: Path,
) -> None:
    """A recording registry: GET /v2/, HEAD tag, GET by digest; one Accept header per
    manifest type; a fresh connection per request; at most 3 layers at once; the config
    outside the slots; importable from benchmarks/."""
    from benchmarks.puller import PullParams, run_pull

    image = build_oci_layout(tmp_path / "l", "v1", [("linux", "amd64")], [4096] * 6, seed="rec")
    blobs = {b.digest: (b, image.read_blob(b.digest)) for b in image.blobs}
    log: list[tuple[str, str, list[str], str]] = []
    active: dict[str, int] = {"now": 0, "max": 0}

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path
        log.append(
            (
                request.method,
                path,
                request.headers.getall("Accept", []),
                request.headers.get("Connection", ""),
            )
        )
        if path == "/v2/":
            return web.json_response({})
        ref = path.rsplit("/", 1)[1]
        if "/manifests/" in path:
            digest = image.digest if ref == "v1" else ref
            blob, data = blobs[digest]
            headers = {"Docker-Content-Digest": digest, "Content-Type": blob.media_type}
            return web.Response(body=data if request.method == "GET" else None, headers=headers)
        blob, data = blobs[ref]
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        await asyncio.sleep(0.05)  # long enough for every free slot to be taken
        active["now"] -= 1
        return web.Response(body=data)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        params = PullParams("bench/rec:v1", (f"http://127.0.0.1:{port}",), clients=1)
        result = await run_pull(params)
    finally:
        await runner.cleanup()
    assert result["summary"]["ok"] == 1, result["clients"][0]["error_detail"]
    p = image.platforms[0]
    assert [(m, path) for m, path, _, _ in log[:3]] == [
        ("GET", "/v2/"),
        ("HEAD", "/v2/bench/rec/manifests/v1"),
        ("GET", f"/v2/bench/rec/manifests/{image.digest}"),
    ]
    assert sorted(path for m, path, _, _ in log[3:]) == sorted(
        f"/v2/bench/rec/blobs/{b.digest}" for b in (p.config, *p.layers)
    )
    for method, path, accept, _ in log:
        assert accept == (DOCKER_ACCEPT if "/manifests/" in path else []), (method, path)
    assert {conn.lower() for *_, conn in log} == {"close"}
    assert active["max"] == 4  # three layer slots + the config beside them
