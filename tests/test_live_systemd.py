"""The systemd units under a real systemd: a minimal Debian booted with ``systemd-nspawn -b``.

The rootfs (``mmdebstrap --variant=minbase``, bookworm: systemd 252, python3.11) is built once
and cached in ``REGSIDECAR_ROOTFS_CACHE`` (default /var/cache/regsidecar-test/); each run boots a
copy with the project's wheel installed into /opt/regsidecar as the README says, a directory
store at /srv/registry (the sample image), ``regsidecar install --systemd`` and
``--private-network`` (the container's traffic stays in the container). Commands run inside
with ``nsenter`` into the container's systemd. Checked, as the README promises:

- ``systemctl start regsidecar`` returns once ``/v2/`` answers (Type=notify, READY=1);
- ``kill -9`` of the main process: systemd restarts it, pulls work again;
- ``SIGSTOP`` (a hung process): the watchdog (WatchdogSec=30s) kills and restarts it;
- the dynamic user may write /var/lib/regsidecar and nothing else it was tried on;
- MemoryMax=1G is applied (read back from systemd);
- ``regsidecar-prune.service`` runs a prune;
- ``example-app.service`` starts its app with the registry stopped (its docker is a stand-in
  script: no docker daemon runs inside this container, named as such below);
- ``journalctl -u regsidecar -o json`` holds the JSON request lines;
- ``regsidecar doctor`` inside passes.

Skipped where the machine cannot do it (not root, no mmdebstrap / systemd-nspawn, no network
to a Debian mirror for the first build). The host has cgroup v1 and no systemd:
``--register=no --keep-unit`` are required (TESTRIG.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.rig, pytest.mark.live_systemd]

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("REGSIDECAR_ROOTFS_CACHE", "/var/cache/regsidecar-test"))
ROOTFS = CACHE / "rootfs-bookworm"
PACKAGES = "systemd,systemd-sysv,dbus,python3,python3-venv,curl,procps,util-linux"

# Stand-in for docker inside the container (no daemon can run there): "pull" asks the
# registry (and fails when it is down), "run" stays up as the app would, "rm"/"stop" succeed.
FAKE_DOCKER = """#!/bin/sh
# STAND-IN for /usr/bin/docker in the live-systemd test: no docker daemon runs in this container.
case "$1" in
  pull) exec curl -sf -o /dev/null "http://127.0.0.1:5000/v2/" ;;
  run) echo "app started"; exec sleep 3600 ;;
  *) exit 0 ;;
esac
"""


def _run(
    argv: list[str], timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and cp.returncode != 0:
        raise AssertionError(
            f"{argv[:6]} failed ({cp.returncode}): {cp.stdout[-1500:]} {cp.stderr[-1500:]}"
        )
    return cp


def _build_rootfs() -> None:
    if (ROOTFS / "usr/bin/python3").exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"rootfs-building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cp = subprocess.run(
        ["mmdebstrap", "--variant=minbase", f"--include={PACKAGES}", "bookworm", str(tmp)],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    if cp.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"mmdebstrap could not build the rootfs here: {cp.stderr[-400:]}")
    os.rename(tmp, ROOTFS)


def _wheels() -> Path:
    """The project's wheel and its dependencies (built against this checkout, every run)."""
    out = CACHE / "wheels"
    for old in out.glob("regsidecar-*.whl"):
        old.unlink()
    _run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(out), str(REPO)], timeout=900)
    return out


class Booted:
    """A booted copy of the rootfs; ``sh(cmd)`` runs inside (as root, in its namespaces)."""

    def __init__(self, root: Path, log: Path) -> None:
        self.root = root
        self._log = open(log, "wb")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "-D",
                str(root),
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--console=pipe",
                "-b",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.pid = self._systemd_pid(60)
        state = self.sh("systemctl is-system-running --wait", check=False, timeout=120).stdout
        assert state.strip() in ("running", "degraded"), state

    def _systemd_pid(self, deadline_s: float) -> int:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            assert self.proc.poll() is None, "systemd-nspawn exited"
            for child in Path(f"/proc/{self.proc.pid}/task").glob("*/children"):
                for pid in child.read_text().split():
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return int(pid)
            time.sleep(0.2)
        raise AssertionError("the container's systemd never appeared")

    def sh(
        self, cmd: str, *, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return _run(
            ["nsenter", "-t", str(self.pid), "-m", "-u", "-i", "-n", "-p", "/bin/sh", "-c", cmd],
            timeout=timeout,
            check=check,
        )

    def prop(self, unit: str, name: str) -> str:
        return self.sh(f"systemctl show -p {name} --value {unit}").stdout.strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.sh("systemctl poweroff", check=False, timeout=30)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    if os.geteuid() != 0:
        pytest.skip("booting a container needs root")
    for tool in ("mmdebstrap", "systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            pytest.skip(f"not installed: {tool} (apt-get install mmdebstrap systemd-container)")
    _build_rootfs()
    wheels = _wheels()
    base = tmp_path_factory.mktemp("live")
    root = base / "root"
    _run(["cp", "-a", "--reflink=auto", str(ROOTFS), str(root)], timeout=300)
    try:
        setup = (
            "set -e; python3 -m venv /opt/regsidecar; "
            "/opt/regsidecar/bin/pip install -q --no-index --find-links /wheels regsidecar; "
            "/opt/regsidecar/bin/regsidecar install --systemd; "
            "/opt/regsidecar/bin/python -c 'from regsidecar.demo import write_sample; "
            "from regsidecar.storage.filesystem import FilesystemDriver; "
            'write_sample(FilesystemDriver("/srv/registry"))\'; '
            "printf 'storage: /srv/registry\\nlog:\\n  access: true\\n' "
            ">> /etc/regsidecar/config.yml; "
            "cp /usr/share/regsidecar-example-app.service /etc/systemd/system/app.service; "
            "systemctl enable regsidecar-prune.timer"
        )
        (root / "usr/share/regsidecar-example-app.service").write_text(
            (REPO / "systemd/example-app.service").read_text()
        )
        docker = root / "usr/bin/docker"
        docker.write_text(FAKE_DOCKER)
        docker.chmod(0o755)
        _run(
            [
                "systemd-nspawn",
                "-D",
                str(root),
                "--register=no",
                "--keep-unit",
                f"--bind-ro={wheels}:/wheels",
                "--pipe",
                "/bin/sh",
                "-c",
                setup,
            ],
            timeout=600,
        )
        b = Booted(root, base / "console.log")
        try:
            yield b
        finally:
            b.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _v2(b: Booted) -> str:
    return b.sh(
        "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:5000/v2/", check=False
    ).stdout


def _wait(what: str, cond: object, deadline_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < deadline_s:
        if cond():  # type: ignore[operator]
            return time.monotonic() - t0
        time.sleep(0.5)
    raise AssertionError(f"{what}: not within {deadline_s:g} s")


def test_the_units_keep_their_promises_under_a_real_systemd(booted: Booted) -> None:
    b = booted
    report: dict[str, object] = {}
    # Type=notify: start returns only once /v2/ answers.
    t0 = time.monotonic()
    b.sh("systemctl start regsidecar")
    report["start_s"] = round(time.monotonic() - t0, 2)
    assert _v2(b) == "200", "systemctl start returned before /v2/ answered"
    assert b.prop("regsidecar", "Type") == "notify"
    # Pulls work: the sample image's manifest by tag.
    out = b.sh(
        "curl -sf -o /dev/null -w '%{http_code}' "
        "-H 'Accept: application/vnd.oci.image.index.v1+json' "
        "http://127.0.0.1:5000/v2/regsidecar/hello/manifests/latest"
    ).stdout
    assert out == "200"
    # kill -9: restarted (Restart=always), pulls work again.
    first = b.prop("regsidecar", "MainPID")
    b.sh(f"kill -9 {first}")
    report["restart_after_kill_s"] = round(
        _wait(
            "restart after kill -9",
            lambda: b.prop("regsidecar", "MainPID") not in ("0", first) and _v2(b) == "200",
            60,
        ),
        1,
    )
    assert int(b.prop("regsidecar", "NRestarts")) >= 1
    # SIGSTOP: the watchdog (30 s) kills the hung process; it comes back.
    hung = b.prop("regsidecar", "MainPID")
    b.sh(f"kill -STOP {hung}")
    report["watchdog_restart_s"] = round(
        _wait(
            "watchdog restart",
            lambda: b.prop("regsidecar", "MainPID") not in ("0", hung) and _v2(b) == "200",
            90,
        ),
        1,
    )
    journal = b.sh("journalctl -u regsidecar --no-pager -o cat", check=False).stdout
    assert "Watchdog timeout" in journal, journal[-1500:]
    report["n_restarts"] = int(b.prop("regsidecar", "NRestarts"))
    # The dynamic user writes its state directory and nothing else.
    pid = b.prop("regsidecar", "MainPID")
    uid = b.sh(f"stat -c %u /proc/{pid}").stdout.strip()
    assert uid != "0"
    in_unit = f"nsenter -t {pid} -m setpriv --reuid {uid} --regid {uid} --clear-groups"
    assert b.sh(f"{in_unit} touch /var/lib/regsidecar/probe", check=False).returncode == 0
    for path in ("/etc/probe", "/opt/regsidecar/probe", "/srv/registry/probe", "/usr/probe"):
        assert b.sh(f"{in_unit} touch {path}", check=False).returncode != 0, path
    # MemoryMax applied.
    assert b.prop("regsidecar", "MemoryMax") == str(1024**3)
    # The prune service runs a prune.
    b.sh("systemctl start regsidecar-prune.service", timeout=300, check=False)
    pruned = b.sh("journalctl -u regsidecar-prune --no-pager -o cat", check=False).stdout
    assert b.prop("regsidecar-prune.service", "Result") == "success", pruned[-2000:]
    assert "cache" in pruned, pruned[-1500:]
    # The app starts with the registry stopped (its pull fails, "-" ignores that).
    b.sh("systemctl stop regsidecar")
    b.sh("systemctl start app.service", timeout=60)
    assert b.prop("app.service", "ActiveState") == "active"
    assert "app started" in b.sh("journalctl -u app --no-pager -o cat", check=False).stdout
    b.sh("systemctl stop app.service; systemctl start regsidecar")
    # The JSON request lines are in the journal.
    lines = b.sh("journalctl -u regsidecar -o json --no-pager", check=False).stdout.splitlines()
    messages = [json.loads(line).get("MESSAGE", "") for line in lines if line.strip()]
    requests = [
        json.loads(m)
        for m in messages
        if isinstance(m, str) and m.startswith('{"ts"') and '"msg":"request"' in m
    ]
    assert any(r.get("path") == "/v2/" for r in requests)
    # doctor inside passes.
    doc = b.sh(
        "/opt/regsidecar/bin/regsidecar doctor --config /etc/regsidecar/config.yml "
        "--data-dir /var/lib/regsidecar --skip-docker --json",
        check=False,
    )
    checks = json.loads(doc.stdout)["checks"]
    assert doc.returncode == 0, [c for c in checks if c["status"] != "pass"]
    print("live systemd:", json.dumps(report))
