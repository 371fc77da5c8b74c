"""The scale-up simulation end to end (root only): a --quick run, and clean-up after it and
after a SIGTERM halfway through.

Each run is a subprocess (``python -m benchmarks.scaleup``): its namespaces are named after
its PID (``rsb<pid>-...``), which is how these tests find what it built and check that
nothing of it is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks.scaleup.netns import available, list_namespaces, ns_pids, pid_alive
from benchmarks.scaleup.report import check_format
from tests.rig.proc import missing

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.rig


def _require() -> None:
    why = available()
    if why is not None:
        pytest.skip(f"the scale-up simulation {why}")
    has_moto = (Path(sys.executable).parent / "moto_server").exists() or not missing("moto_server")
    if missing("docker-registry") or not has_moto:
        pytest.skip("not installed: docker-registry / moto_server (tests/rig/install-deps.sh)")


def _start(out: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.scaleup", "--quick", "--out", str(out), *extra],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _permanent_neighbours(ns: str) -> list[str]:
    """The addresses ``ns`` has permanent neighbour entries for ([] if it is not set up yet)."""
    cp = subprocess.run(["ip", "-n", ns, "neigh", "show"], capture_output=True, text=True)
    return [line.split()[0] for line in cp.stdout.splitlines() if "PERMANENT" in line]


def _ours(pid: int) -> list[str]:
    return [n for n in list_namespaces() if n.startswith(f"rsb{pid}-")]


def _links_with(prefix: str) -> list[str]:
    """Interfaces of the main namespace whose name starts with ``prefix``."""
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f": {prefix}" in line]


def _assert_nothing_left(pid: int, seen_pids: set[int]) -> None:
    assert _ours(pid) == []
    assert _links_with(f"rsb{pid}") == []
    assert [p for p in seen_pids if pid_alive(p)] == []
    assert list(Path(tempfile.gettempdir()).glob(f"rsb{pid}-*")) == []


def test_quick_run_pulls_on_every_host_in_all_three_scenarios_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """--quick: N=2, 2 MiB in 2 layers, every pull verified; JSON per FORMATS.md section 2;
    plots written; afterwards no namespace, interface, process or work dir of the run."""
    _require()
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = _start(out)
    seen: set[int] = set()
    neighbours: list[str] = []
    try:
        # watch what runs in its namespaces while it runs (bounded by the communicate below)
        end = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < end:
            for ns in _ours(proc.pid):
                seen.update(ns_pids(ns))
                if ns.endswith("-h0"):
                    neighbours = max(neighbours, _permanent_neighbours(ns), key=len)
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=max(1.0, end - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, stderr.decode()[-4000:]
    assert elapsed < 60, f"the smoke run took {elapsed:.0f} s"
    result = json.loads((out / "scaleup.json").read_text())
    assert check_format(result) == []
    assert [(r["scenario"], r["n"]) for r in result["runs"]] == [
        ("central", 2),
        ("sidecar", 2),
        ("warmed", 2),
    ]
    for r in result["runs"]:
        s = r["pull"]["summary"]
        assert (s["clients"], s["ok"], s["failed"]) == (2, 2, 0), r["scenario"]
        assert s["all_ready_s"] is not None
        assert s["bytes"] >= 2 * 2 * 1024 * 1024  # both hosts got the whole image
    sidecar = result["runs"][1]["backend"]
    warmed = result["runs"][2]
    assert sidecar["s3_blob_get"] >= 2 * 3  # each host's sidecar fetched 2 layers + config
    assert warmed["backend"]["s3_blob_get"] == 0  # the warm-up had them all on disk already
    assert warmed["warm"]["bytes"] >= 2 * 2 * 1024 * 1024
    for png in ("ready_vs_n.png", "cdf_max_n.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| sidecar | 2 | 2 | 0 |" in (out / "scaleup.md").read_text()
    assert "| sidecar | 2 | 2 | 0 |" in stdout.decode()
    assert seen, "no process was ever seen in the run's namespaces"
    # Host 0 knew the MAC of host 1, the registry and S3 without asking (no ARP on the
    # capped links: a VPC answers it in the hypervisor).
    assert len(neighbours) == 3, neighbours
    _assert_nothing_left(proc.pid, seen)


def test_sigterm_halfway_stops_every_process_and_removes_every_namespace(tmp_path: Path) -> None:
    """SIGTERM once the sidecars of the second scenario run: exit 130, nothing left."""
    _require()
    proc = _start(tmp_path / "out", "--scenarios", "central,sidecar,warmed")
    seen: set[int] = set()
    try:
        end = time.monotonic() + 60
        # wait until a sidecar runs in a host namespace (scenario 2 started)
        while proc.poll() is None and time.monotonic() < end:
            hosts = [n for n in _ours(proc.pid) if "-h" in n]
            pids = {p for ns in _ours(proc.pid) for p in ns_pids(ns)}
            seen |= pids
            if any(_cmdline(p).find("regsidecar serve") >= 0 for ns in hosts for p in ns_pids(ns)):
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1].decode()[-4000:]
        seen |= {p for ns in _ours(proc.pid) for p in ns_pids(ns)}
        assert _ours(proc.pid), "no namespace of the run found"
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 130, stderr.decode()[-4000:]
    assert b"interrupted (SIGTERM)" in stderr
    _assert_nothing_left(proc.pid, seen)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_killed_runs_namespaces_are_removed_by_the_next_run() -> None:
    """A run killed with SIGKILL leaves its namespaces; cleanup_stale (run at every start)
    removes them and what runs in them, and leaves those of a live run alone."""
    _require()
    from benchmarks.scaleup.netns import cleanup_stale

    # a PID that has exited (the kernel does not hand it out again at once)
    child = subprocess.Popen(["true"])
    child.wait()
    stale = f"rsb{child.pid}-h0"
    live = f"rsb{os.getpid()}-h0"  # the caller's own: a run in progress
    for ns in (stale, live):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    sleeper = None
    try:
        sleeper = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "60"])
        end = time.monotonic() + 10
        while sleeper.pid not in ns_pids(stale) and time.monotonic() < end:
            time.sleep(0.05)
        assert sleeper.pid in ns_pids(stale)
        removed = cleanup_stale()
        assert stale in removed
        assert live not in removed
        assert stale not in list_namespaces()
        assert live in list_namespaces()
        assert sleeper.wait(10) != 0  # stopped by its PID
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait(10)
        for ns in (stale, live):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
