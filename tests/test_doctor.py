"""`regsidecar doctor` as a real process against real stores, a real sidecar and a real dockerd.

Cases: an unreachable S3 fails (exit 2); a clock 20 minutes fast against s3rver (which really
refuses skewed requests) warns with the measured offset while reads still work (exit 1); a
healthy setup passes every row (exit 0). Everything talks over loopback only.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from regsidecar.doctor.docker_verdicts import DOCKER_MIN_FREE_BYTES, DOCKER_MIN_FREE_FRACTION
from regsidecar.doctor.probes import read_log_opts
from tests.conftest import require, s3_args
from tests.rig.dockerd import Dockerd
from tests.rig.moto import MotoServer
from tests.rig.ports import free_port
from tests.rig.proc import child_env
from tests.rig.s3rver import ACCESS_KEY, SECRET_KEY, S3rver, s3rver_missing
from tests.s3tree import BucketWriter
from tests.sidecar import FakeTime, Sidecar

pytestmark = [pytest.mark.rig, pytest.mark.timeout(180)]

NAMES = ["config", "auth", "policy", "store", "clock", "cache", "sidecar", "docker", "containerd"]
DOCKER_NAMES = ["docker", "docker-data-root", "docker-log-driver", "docker-registry"]
MOTO_CREDS = {"AWS_ACCESS_KEY_ID": "rigtestaccesskey", "AWS_SECRET_ACCESS_KEY": "rigtestsecretkey"}
S3RVER_CREDS = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}


@dataclass
class Report:
    rc: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> dict[str, object]:
        return json.loads(self.stdout)  # type: ignore[no-any-return]

    @property
    def rows(self) -> dict[str, dict[str, str]]:
        checks = self.doc["checks"]
        assert isinstance(checks, list)
        return {c["name"]: c for c in checks}

    def status(self, name: str) -> str:
        return self.rows[name]["status"]


def doctor(
    args: list[str],
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    faketime: str | None = None,
    json_out: bool = True,
) -> Report:
    """``python -m regsidecar doctor [--json] ARGS`` with no ambient REGSIDECAR_*/DOCKER_*."""
    cli = ["doctor", *(["--json"] if json_out else []), "--data-dir", str(tmp_path / "data")]
    cli += ["--cache-max-bytes", "1GiB", *args]
    if "--containerd-socket" not in args:  # whatever containerd this machine runs is not ours
        cli += ["--containerd-socket", str(tmp_path / "no-containerd.sock")]
    extra = {"AWS_EC2_METADATA_DISABLED": "true", **MOTO_CREDS, **(env or {})}
    unset = [v for v in os.environ if v.startswith(("REGSIDECAR_", "DOCKER_"))]
    unset += ["AWS_PROFILE"]
    ft = None
    if faketime is None:
        argv = [sys.executable, "-m", "regsidecar", *cli]
    else:
        ft = FakeTime(faketime, tmp_path / "faketime.rc")
        argv = FakeTime.python_argv("regsidecar", cli)
        extra.update(ft.env())
        unset += FakeTime.UNSET
    proc = subprocess.Popen(
        argv,
        env=child_env(extra, unset=unset),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if ft is not None:
            FakeTime.cleanup_shm(proc.pid)
    return Report(proc.returncode, out, err)


def table_rows(stdout: str) -> tuple[list[list[str]], list[str]]:
    """(rows split into name, status, detail; fix lines) of the table output."""
    lines = stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    rows = [ln.split(None, 2) for ln in lines[1:] if not ln.startswith(" ")]
    fixes = [ln.strip() for ln in lines[1:] if ln.startswith(" ")]
    return rows, fixes


# -- unreachable S3 -----------------------------------------------------------------------------


def test_unreachable_s3_fails_the_store_check_and_exits_2(tmp_path: Path) -> None:
    """An endpoint nobody listens on: store fail naming the endpoint fix, clock unmeasured."""
    dead = f"http://127.0.0.1:{free_port()}"
    args = [*s3_args(dead, "images"), "--skip-docker", "--listen", f"127.0.0.1:{free_port()}"]
    r = doctor(args, tmp_path)
    assert r.rc == 2, r.stderr
    assert list(r.rows) == NAMES
    store = r.rows["store"]
    assert store["status"] == "fail"
    assert "s3://images" in store["detail"]
    assert "s3.endpoint_url" in store["fix"]
    assert r.status("clock") == "warn"  # S3 never answered: nothing to measure against
    assert r.status("config") == "pass"
    assert r.status("cache") == "pass"
    assert r.doc["worst"] == "fail"

    t = doctor(args, tmp_path, json_out=False)
    assert t.rc == 2
    rows, fixes = table_rows(t.stdout)
    assert [row[0] for row in rows] == NAMES
    assert [row[1] for row in rows] == [r.status(n) for n in NAMES]
    non_pass = [n for n in NAMES if r.status(n) != "pass"]
    assert len(fixes) == len(non_pass) and all(f.startswith("fix: ") for f in fixes)
    assert fixes[0] == f"fix: {store['fix']}"


def test_a_sidecar_that_is_not_ready_warns_with_its_reason(tmp_path: Path) -> None:
    """The sidecar runs but its S3 is down and its cache empty: /readyz says 503, and the
    sidecar row warns with the reason it gives."""
    args = [*s3_args(f"http://127.0.0.1:{free_port()}", "images"), "--skip-docker"]
    with Sidecar(args[:-1]) as sc:
        r = doctor([*args, "--listen", sc.host], tmp_path)
    assert r.rc == 2
    sidecar = r.rows["sidecar"]
    assert sidecar["status"] == "warn"
    assert "200 registry/2.0; /readyz: not ready: " in sidecar["detail"]
    assert len(sidecar["detail"].split("not ready: ", 1)[1]) > 5  # the sidecar's reason


def test_an_invalid_config_is_a_failed_config_row(tmp_path: Path) -> None:
    """The CLI would exit before a command; doctor reports the error as its first row."""
    r = doctor(["--listen", "nonsense", "--skip-docker"], tmp_path)
    assert r.rc == 2
    assert list(r.rows) == ["config"]
    assert r.status("config") == "fail"
    assert "listen" in r.rows["config"]["detail"]


# -- clock skew -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_store(moto: MotoServer) -> Iterator[tuple[str, Sidecar]]:
    """A bucket holding team/app:v1 on moto, and a sidecar serving it (not time-shifted)."""
    bucket = f"doctor-{uuid.uuid4().hex[:8]}"
    moto.create_bucket(bucket)
    BucketWriter(moto.client(), bucket).image("team/app", "v1", [b"layer" * 100])
    with Sidecar(s3_args(moto.endpoint_url, bucket)) as sc:
        yield bucket, sc


@pytest.mark.parametrize(("offset", "seconds"), [("+20m", 1200), ("+5m", 300)])
def test_a_skewed_clock_warns_with_the_measured_offset(
    moto: MotoServer,
    moto_store: tuple[str, Sidecar],
    tmp_path: Path,
    offset: str,
    seconds: int,
) -> None:
    """faketime: the doctor's clock runs fast; S3's Date says by how much (S3 - local < 0).
    Only the clock row warns (exit 1): listing and reading still work."""
    require("faketime")
    bucket, sc = moto_store
    args = [*s3_args(moto.endpoint_url, bucket), "--listen", sc.host, "--skip-docker"]
    r = doctor(args, tmp_path, faketime=offset)
    assert r.rc == 1, r.stdout + r.stderr
    clock = r.rows["clock"]
    assert clock["status"] == "warn"
    measured = float(clock["detail"].split()[1])
    assert abs(measured + seconds) < 5, clock
    assert "NTP" in clock["fix"] and "corrected" in clock["fix"]
    assert "tag team/app:v1 -> sha256:" in r.rows["store"]["detail"]
    assert [n for n in NAMES if r.status(n) != "pass"] == ["clock"]


@pytest.fixture(scope="module")
def s3rver_store() -> Iterator[S3rver]:
    require("faketime")
    why = s3rver_missing()
    if why:
        pytest.skip(why)
    with S3rver() as s3:
        s3.create_bucket("skew")
        BucketWriter(s3.client(), "skew").image("team/app", "v1", [b"layer" * 100])
        yield s3


@pytest.mark.parametrize("correct", [True, False])
def test_against_an_s3_that_enforces_time_correction_decides(
    s3rver_store: S3rver, tmp_path: Path, correct: bool
) -> None:
    """s3rver refuses requests signed > 15 min off. 20 min fast with clock.correct on: the
    doctor's signed requests carry S3's time and are answered; off: S3 refuses them, and the
    store and clock rows fail (exit 2)."""
    args = [*s3_args(s3rver_store.endpoint_url, "skew"), "--skip-docker"]
    args += ["--listen", f"127.0.0.1:{free_port()}"]
    env = {**S3RVER_CREDS, "REGSIDECAR_CLOCK_CORRECT": str(correct).lower()}
    mark = len(s3rver_store.requests())
    r = doctor(args, tmp_path, env=env, faketime="+20m")
    signed = [q for q in s3rver_store.requests(since=mark) if q.auth]
    assert signed, "the doctor made signed requests"
    clock = r.rows["clock"]
    assert abs(float(clock["detail"].split()[1]) + 1200) < 5, clock
    if correct:
        assert {q.status for q in signed} == {200}
        for q in signed:  # signed at S3's time, not the faked local one
            assert q.x_amz_date is not None
            at = datetime.datetime.strptime(q.x_amz_date, "%Y%m%dT%H%M%SZ")
            assert abs(at.replace(tzinfo=datetime.UTC).timestamp() - time.time()) < 120
        assert clock["status"] == "warn"
        # (s3rver 3.7.1 writes its ListObjectsV2 answer in a wrong XML namespace, so the
        # store row sees no repositories there: it warns, but it does not fail.)
        assert r.status("store") != "fail"
        assert r.rc == 1
    else:
        assert {q.status for q in signed} == {403}
        assert clock["status"] == "fail"
        assert r.status("store") == "fail"
        assert "RequestTimeTooSkewed" in r.rows["store"]["detail"]
        assert r.rc == 2


# -- healthy ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_dockerd() -> Iterator[Dockerd]:
    """A private dockerd whose logs are bounded (the local driver)."""
    require("dockerd")
    with Dockerd(daemon_config={"log-driver": "local"}) as d:
        st = os.statvfs(d.data_root)
        free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
        if free < DOCKER_MIN_FREE_BYTES or free < DOCKER_MIN_FREE_FRACTION * total:
            pytest.skip(f"the disk under {d.data_root} is below doctor's data-root threshold")
        yield d


def test_a_healthy_setup_passes_every_check(
    moto: MotoServer, moto_store: tuple[str, Sidecar], good_dockerd: Dockerd, tmp_path: Path
) -> None:
    """Seeded bucket, a running sidecar, a well-set dockerd, room on disk: all pass, exit 0."""
    bucket, sc = moto_store
    args = [*s3_args(moto.endpoint_url, bucket), "--listen", sc.host]
    args += ["--docker-host", good_dockerd.host_arg]
    args += ["--daemon-json", str(good_dockerd.config_file)]
    r = doctor(args, tmp_path)
    t = doctor(args, tmp_path, json_out=False)
    assert r.rc == 0, r.stdout + r.stderr
    names = [*NAMES[:-2], *DOCKER_NAMES, "containerd"]
    assert list(r.rows) == names
    assert {n: r.status(n) for n in names} == dict.fromkeys(names, "pass")
    assert r.doc["worst"] == "pass"
    assert str(good_dockerd.data_root) in r.rows["docker-data-root"]["detail"]
    assert r.rows["docker-log-driver"]["detail"] == "local"
    assert "tag team/app:v1 -> sha256:" in r.rows["store"]["detail"]
    assert not (tmp_path / "data").exists(), "the cache check leaves nothing behind"
    assert t.rc == 0
    rows, fixes = table_rows(t.stdout)
    assert [row[0] for row in rows] == names
    assert {row[1] for row in rows} == {"pass"} and fixes == []


def test_a_missing_daemon_warns_and_json_file_without_max_size_warns(
    sample_tree: Path, tmp_path: Path
) -> None:
    """Directory store and a running sidecar; docker absent -> warn (exit 1). Then a dockerd
    left at json-file with no max-size -> the log-driver row warns."""
    with Sidecar(["--storage", str(sample_tree)]) as sc:
        args = ["--storage", str(sample_tree), "--listen", sc.host]
        absent = doctor([*args, "--docker-host", f"unix://{tmp_path}/none.sock"], tmp_path)
        assert absent.rc == 1, absent.stdout
        assert absent.status("docker") == "warn"
        assert "--skip-docker" in absent.rows["docker"]["fix"]
        assert [n for n in absent.rows if absent.status(n) != "pass"] == ["docker"]
        assert absent.rows["clock"]["detail"] == "no S3 store; nothing to sign"
        assert "regsidecar/hello" in absent.rows["store"]["detail"]
        require("dockerd")
        with Dockerd() as d:
            r = doctor(
                [*args, "--docker-host", d.host_arg, "--daemon-json", str(d.config_file)],
                tmp_path,
            )
            # Without --daemon-json: the file this dockerd was started with (--config-file),
            # not /etc/docker/daemon.json.
            told = doctor([*args, "--docker-host", d.host_arg], tmp_path)
    assert r.status("docker") == "pass"
    assert r.status("docker-log-driver") == "warn"
    assert "max-size" in r.rows["docker-log-driver"]["fix"]
    assert r.rc == 1
    row = told.rows["docker-log-driver"]
    assert f"{d.config_file} (its --config-file)" in row["detail"], row
    assert "/etc/docker/daemon.json" not in row["detail"] + row["fix"]


def test_daemon_json_log_opts(tmp_path: Path) -> None:
    """Missing file: docker defaults (no opts); unreadable or not JSON: unknown (None)."""
    path = tmp_path / "daemon.json"
    assert read_log_opts(str(path)) == {}
    path.write_text('{"log-driver": "json-file", "log-opts": {"max-size": "10m"}}')
    assert read_log_opts(str(path)) == {"max-size": "10m"}
    path.write_text("{not json")
    assert read_log_opts(str(path)) is None
