"""Self-tests of the clock-skew rig: s3rver (enforces request time), libfaketime for
child processes (wall clock shifted, monotonic not, offset changeable live), and moto
with signature checking. Each proves the component really behaves as the rig says."""

from __future__ import annotations

import datetime
import email.utils
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.rig.moto import MotoServer
from tests.rig.proc import child_env
from tests.rig.s3rver import (
    MAX_SKEW_S,
    S3rver,
    raw_request,
    s3rver_missing,
    sign_headers,
    signed_request,
)
from tests.sidecar import FakeTime, Sidecar, libfaketime_path

pytestmark = pytest.mark.timeout(60)

BUCKET = "clock-rig"


def _require_s3rver() -> None:
    why = s3rver_missing()
    if why is not None:
        pytest.skip(why)


def _require_faketime() -> None:
    if libfaketime_path() is None:
        pytest.skip("libfaketime not installed (run tests/rig/install-deps.sh)")


def _date_header_offset(value: str | None) -> float:
    """(time in an HTTP Date header) - (our wall clock now), in seconds."""
    assert value is not None, "response has no Date header"
    return email.utils.parsedate_to_datetime(value).timestamp() - time.time()


@pytest.fixture(scope="module")
def s3rver() -> Iterator[S3rver]:
    _require_s3rver()
    with S3rver(buckets=[BUCKET]) as server:
        server.client().put_object(Bucket=BUCKET, Key="probe", Body=b"clock rig")
        yield server


# -- s3rver --------------------------------------------------------------------
@pytest.mark.parametrize("skew_s", [20 * 60, -20 * 60])
def test_s3rver_rejects_a_20_minute_skewed_signature(s3rver: S3rver, skew_s: int) -> None:
    url = f"{s3rver.endpoint_url}/{BUCKET}/probe"
    headers = sign_headers("GET", url, skew_s=skew_s)
    since = s3rver.mark()
    r = raw_request("GET", url, headers=headers)

    assert r.status == 403, r.body
    assert r.xml("Code") == "RequestTimeTooSkewed"
    # RequestTime echoes our X-Amz-Date verbatim; ServerTime is ISO 8601 without millis.
    assert r.xml("RequestTime") == headers["X-Amz-Date"]
    server_time = datetime.datetime.strptime(r.xml("ServerTime") or "", "%Y-%m-%dT%H:%M:%SZ")
    assert abs(server_time.replace(tzinfo=datetime.UTC).timestamp() - time.time()) < 5
    # Error responses carry a Date header too (IMF-fixdate), from the server's clock.
    assert abs(_date_header_offset(r.header("Date"))) < 5
    [logged] = s3rver.requests(since=since)
    assert (logged.method, logged.key, logged.status) == ("GET", "probe", 403)
    assert logged.x_amz_date == headers["X-Amz-Date"]


@pytest.mark.parametrize("skew_s", [0, 10 * 60, -10 * 60])
def test_s3rver_accepts_a_signature_within_15_minutes(s3rver: S3rver, skew_s: int) -> None:
    assert abs(skew_s) < MAX_SKEW_S
    r = signed_request("GET", f"{s3rver.endpoint_url}/{BUCKET}/probe", skew_s=skew_s)
    assert (r.status, r.body) == (200, b"clock rig")
    assert abs(_date_header_offset(r.header("Date"))) < 5


def test_s3rver_checks_the_access_key_but_not_the_v4_signature(s3rver: S3rver) -> None:
    url = f"{s3rver.endpoint_url}/{BUCKET}/probe"
    assert signed_request("GET", url, secret_key="not-the-secret").status == 200
    r = signed_request("GET", url, access_key="NOSUCHKEY")
    assert (r.status, r.xml("Code")) == (403, "InvalidAccessKeyId")
    # The time check comes first: a skewed request with a bad key is "too skewed".
    r = signed_request("GET", url, access_key="NOSUCHKEY", skew_s=3600)
    assert (r.status, r.xml("Code")) == (403, "RequestTimeTooSkewed")
    # No Authorization at all: served anonymously.
    assert raw_request("GET", url).status == 200


def test_s3rver_upload_tree_round_trips(s3rver: S3rver, sample_tree: Path) -> None:
    s3rver.create_bucket("tree-copy")
    keys = s3rver.upload_tree("tree-copy", sample_tree, prefix="/reg/")
    files = sorted(p for p in sample_tree.rglob("*") if p.is_file())
    assert keys == sorted(f"reg/{p.relative_to(sample_tree).as_posix()}" for p in files)
    assert any(k.endswith("/link") for k in keys) and any(k.endswith("/data") for k in keys)
    assert s3rver.list_keys("tree-copy") == keys
    for path, key in zip(files, keys, strict=True):
        assert s3rver.get("tree-copy", key) == path.read_bytes(), key
    assert s3rver.count("PUT", "/tree-copy/reg/") == len(keys)


def test_s3rver_under_faketime_rejects_a_client_with_the_right_time(tmp_path: Path) -> None:
    """Skewing the *server* instead: node runs fine under libfaketime too."""
    _require_s3rver()
    _require_faketime()
    ft = FakeTime("+20m", tmp_path / "s3rver.rc")
    with S3rver(buckets=[BUCKET], env=ft.env()) as server:
        pid = server.pid
        r = signed_request("GET", f"{server.endpoint_url}/{BUCKET}/nokey")
        assert (r.status, r.xml("Code")) == (403, "RequestTimeTooSkewed")
        assert abs(_date_header_offset(r.header("Date")) - 1200) < 5
        r = signed_request("GET", f"{server.endpoint_url}/{BUCKET}/nokey", skew_s=1200)
        assert (r.status, r.xml("Code")) == (404, "NoSuchKey")
    FakeTime.cleanup_shm(pid)


# -- libfaketime -----------------------------------------------------------------
_CHILD = """\
import os, sys, time
out, stop = sys.argv[1], sys.argv[2]
end = time.monotonic() + 20
with open(out, "a") as f:
    while not os.path.exists(stop) and time.monotonic() < end:
        f.write(f"{time.time()!r} {time.monotonic()!r}\\n")
        f.flush()
        time.sleep(0.01)  # the launcher's sleep: libfaketime 0.9.10 breaks time.sleep
"""


def _samples(path: Path, real_wall_minus_mono: float) -> list[tuple[float, float]]:
    """(child's wall-clock offset from real time, child's monotonic) per complete line."""
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            wall, mono = float(parts[0]), float(parts[1])
            out.append((wall - (mono + real_wall_minus_mono), mono))
    return out


def test_faketime_child_shifts_wall_clock_not_monotonic_and_follows_jumps(
    tmp_path: Path,
) -> None:
    _require_faketime()
    ft = FakeTime("+20m", tmp_path / "child.rc")
    script, out, stop = tmp_path / "child.py", tmp_path / "samples", tmp_path / "stop"
    script.write_text(_CHILD)
    # CLOCK_MONOTONIC is system-wide, so (real wall - monotonic) maps the child's
    # monotonic readings to real wall time.
    real_wall_minus_mono = time.time() - time.monotonic()
    mono_before = time.monotonic()
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen(
            FakeTime.python_argv(str(script), [str(out), str(stop)]),
            env=child_env(ft.env(), unset=FakeTime.UNSET),
            stderr=err,
        )
    try:

        def wait_offset(expected_s: float, after_mono: float) -> float:
            """Monotonic time of the first sample after ``after_mono`` at ``expected_s``."""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                assert proc.poll() is None, err_path.read_text()
                for offset, mono in _samples(out, real_wall_minus_mono) if out.exists() else []:
                    if mono >= after_mono and abs(offset - expected_s) < 1.0:
                        return mono
                time.sleep(0.02)
            raise AssertionError(f"child never showed offset {expected_s}s: {_tail(out)}")

        wait_offset(1200, mono_before)
        jumps = []
        for offset, seconds in (("-2h", -7200), ("+1d", 86400), ("+0", 0)):
            t_set = time.monotonic()
            ft.set(offset)
            jumps.append(wait_offset(seconds, t_set) - t_set)
        assert max(jumps) < 1.0, jumps  # FAKETIME_NO_CACHE=1: the next read sees it

        stop.touch()
        assert proc.wait(10) == 0, err_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        FakeTime.cleanup_shm(proc.pid)
    samples = _samples(out, real_wall_minus_mono)
    monos = [m for _, m in samples]
    # Monotonic is the real one: inside our own before/after readings, never backwards.
    assert mono_before <= monos[0] and monos[-1] <= time.monotonic()
    assert monos == sorted(monos)
    # Every sample sits at one of the offsets we set (to within scheduling noise).
    assert all(min(abs(o - s) for s in (1200, -7200, 86400, 0)) < 1.0 for o, _ in samples)
    assert not [f for f in os.listdir("/dev/shm") if f.endswith(f"_{proc.pid}")]


def _tail(path: Path) -> str:
    return path.read_text()[-500:] if path.exists() else "(no samples)"


def test_faketime_regsidecar_help_and_imports_work(tmp_path: Path) -> None:
    _require_faketime()
    ft = FakeTime("+20m", tmp_path / "help.rc")
    env = child_env(ft.env(), unset=FakeTime.UNSET)
    for argv in (
        [sys.executable, "-m", "regsidecar", "serve", "--help"],
        FakeTime.python_argv("regsidecar", ["serve", "--help"]),
    ):
        rc, out, err = _run_faked(argv, env)
        assert rc == 0 and "usage:" in out, err
    script = tmp_path / "imports.py"
    script.write_text(
        "import time, aiohttp, asyncio, botocore.session, regsidecar.service\n"
        "time.sleep(0.01)\n"
        "print(time.time())\n"
    )
    before = time.time()
    rc, out, err = _run_faked(FakeTime.python_argv(str(script), []), env)
    assert rc == 0, err
    assert 1195 < float(out) - before < 1200 + (time.time() - before) + 1


def _run_faked(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run a faked child to completion; remove libfaketime's shm files of its PID."""
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        FakeTime.cleanup_shm(proc.pid)
    return proc.returncode, out, err


def test_faketime_sidecar_serves_with_a_shifted_date_and_follows_a_jump(
    sample_tree: Path,
) -> None:
    _require_faketime()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def date_offset(sc: Sidecar) -> float:
        with opener.open(sc.url + "/v2/", timeout=10) as r:
            assert r.status == 200
            return _date_header_offset(r.headers["Date"])

    with Sidecar(["--storage", str(sample_tree)], faketime="+20m") as sc:
        pid = sc.pid
        assert abs(date_offset(sc) - 1200) < 3
        t_set = time.monotonic()
        sc.set_faketime("-2h")
        while abs(date_offset(sc) + 7200) > 3:
            assert time.monotonic() - t_set < 2.0, "sidecar did not follow the clock jump"
            time.sleep(0.05)
    assert not [f for f in os.listdir("/dev/shm") if f.endswith(f"_{pid}")]


# -- moto with signature checking ------------------------------------------------
def test_moto_auth_accepts_good_signatures_and_rejects_bad_ones() -> None:
    require("moto_server")
    with MotoServer(auth=True) as moto:
        assert moto.access_key.startswith("AKIA") and moto.secret_key
        moto.create_bucket("auth-rig")
        moto.client().put_object(Bucket="auth-rig", Key="k", Body=b"v")
        url = f"{moto.endpoint_url}/auth-rig/k"
        key, secret = moto.access_key, moto.secret_key

        assert signed_request("GET", url, access_key=key, secret_key=secret).status == 200
        r = signed_request("GET", url, access_key=key, secret_key="wrong")
        assert (r.status, r.xml("Code")) == (403, "SignatureDoesNotMatch")
        r = signed_request("GET", url, access_key="AKIANOSUCHKEY0000000", secret_key="x")
        assert (r.status, r.xml("Code")) == (403, "InvalidAccessKeyId")
        assert raw_request("GET", url).status == 403
        # moto never checks the request time: a correctly signed, 1 h skewed request passes.
        r = signed_request("GET", url, access_key=key, secret_key=secret, skew_s=3600)
        assert r.status == 200

        # The request log still works, and the rig's IAM setup calls are not in it.
        reqs = moto.requests()
        assert [(r.method, r.path, r.status) for r in reqs[:2]] == [
            ("PUT", "/auth-rig", 200),
            ("PUT", "/auth-rig/k", 200),
        ]
        assert moto.count("GET", key="k", status=403) == 3
        assert moto.count("GET", key="k", status=200) == 2
