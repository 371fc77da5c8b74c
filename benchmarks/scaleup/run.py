"""One sweep: build the topology once (for the largest N), start and seed S3 once, then for
each N and each scenario start the servers it needs, pull from every host at once, measure,
and stop them again.

Scenarios (host i pulls ``--image`` with one ``regsidecar bench pull`` client):

* ``central``: from the one distribution registry in the registry namespace (its upload is
  capped at ``central_mbit``; it reads the bucket over the uncapped S3 link);
* ``sidecar``: from its own ``regsidecar serve`` on 127.0.0.1:5000 in its namespace, started
  with an empty cache, which reads the bucket through the host's capped link;
* ``single``: as ``sidecar``, but every sidecar fetches a blob over one connection
  (``REGSIDECAR_DOWNLOAD_CONNECTIONS_PER_BLOB=1``, regsidecar before parallel ranged GETs);
  with ``--s3-conn-mbit`` it shows what the ranged GETs buy. Not run unless asked for;
* ``warmed``: as ``sidecar``, but ``regsidecar warm IMAGE`` ran on every host first (a rolling
  deploy pre-pulls before the scale-up); the warm-up is measured apart from the pull.

S3 is moto (uncapped per connection), or with ``s3_conn_mbit`` the capped stand-in of
``capped.py`` (nginx, each connection capped as S3 caps it).

Every puller starts, sets up, creates its ready file and then waits for one start file;
the harness creates the start file once all are ready, so all hosts begin within a few ms.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.scaleup import servers
from benchmarks.scaleup.capped import CappedS3Server
from benchmarks.scaleup.cpu import CpuSampler, wait_idle
from benchmarks.scaleup.netns import (
    TBF_SENDER_LATENCY_MS,
    Topology,
    address_plan,
    check_subnet_unused,
    cleanup_stale,
    run_prefix,
    tbf_for,
)
from benchmarks.scaleup.params import HOST_UP_LATENCY_MS, MIB, PEER_PORT, Params
from benchmarks.scaleup.procs import Procs, Spawned, python_argv
from regsidecar.bench.report import merge


def log(msg: str) -> None:
    print(f"[scaleup {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Sweep:
    """The run's resources; ``close()`` releases all of them, at most once, in order:
    processes (by PID), namespaces (with whatever still runs in them), the work dir."""

    def __init__(
        self, params: Params, failure_logs: Path | None = None, every_run_logs: Path | None = None
    ) -> None:
        self.params = params
        #: Where a run with failed pulls leaves copies of its logs (None: nowhere).
        self.failure_logs = failure_logs
        #: Where every run leaves copies of all its logs (None: nowhere; --keep-logs).
        self.every_run_logs = every_run_logs
        self.prefix = run_prefix()
        self.work = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.topo: Topology | None = None
        self.procs: Procs | None = None
        self.s3: servers.S3 | CappedS3Server | None = None
        self.seeded: dict[str, Any] = {}
        self._closed = False

    def setup(self) -> None:
        p = self.params
        gone = cleanup_stale()
        if gone:
            log(f"removed {len(gone)} namespaces left by an earlier run: {', '.join(gone)}")
        check_subnet_unused(p.subnet)
        plan = address_plan(max(p.ns), p.subnet)
        self.topo = Topology(
            self.prefix,
            plan,
            host_cap=tbf_for(p.host_mbit),
            central_cap=tbf_for(p.central_mbit, TBF_SENDER_LATENCY_MS),
            s3_cap=tbf_for(p.s3_mbit, TBF_SENDER_LATENCY_MS) if p.s3_mbit else None,
            # A short queue on a host's own NIC: a deep FIFO there would hold the host's
            # download ACKs behind seconds of its uploads (TCP small queues let each flow
            # park up to ~1 MB in the qdisc: at a scaled-down 8 Mbit/s that is a second, at
            # a real NIC's 10 Gbit/s a millisecond; no fair-queuing qdisc is available here).
            host_up_cap=tbf_for(p.uplink_mbit, HOST_UP_LATENCY_MS),
            mtu=p.mtu,
            congestion_control=None if p.congestion_control == "default" else p.congestion_control,
        )
        t0 = time.monotonic()
        self.topo.build()
        log(f"{len(self.topo.created)} namespaces built in {time.monotonic() - t0:.1f} s")
        logs = self.work / "logs"
        logs.mkdir()
        self.procs = Procs(self.topo, logs)
        if p.s3_conn_mbit is not None:
            self.s3 = CappedS3Server(self.topo, self.procs, self.work / "s3", p.s3_conn_mbit)
            what = f"nginx, {p.s3_conn_mbit:g} Mbit/s per connection"
        else:
            self.s3 = servers.S3(self.topo, self.procs)
            what = "moto"
        self.s3.start()
        self.seeded = self.s3.seed(p.image, p.image_bytes, p.layers, deadline_s=300)
        log(f"bucket seeded ({what}): {p.image}, {p.image_bytes / MIB:g} MiB in {p.layers} layers")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self.procs is not None:
                self.procs.stop_all()
        finally:
            try:
                if self.topo is not None:
                    self.topo.close()
            finally:
                shutil.rmtree(self.work, ignore_errors=True)

    # -- one scenario at one N ---------------------------------------------------------------
    def run_one(self, scenario: str, n: int) -> dict[str, Any]:
        assert self.topo is not None and self.procs is not None and self.s3 is not None
        topo, procs, s3, p = self.topo, self.procs, self.s3, self.params
        hosts = list(range(n))
        t0 = time.monotonic()
        run_dir = self.work / f"n{n}-{scenario}"
        run_dir.mkdir()
        started: list[Spawned] = []
        record: dict[str, Any] = {"scenario": scenario, "n": n}
        kill: tuple[int, Spawned] | None = None
        try:
            if scenario == "central":
                reg = servers.start_registry(topo, procs, s3.endpoint, run_dir / "registry")
                started.append(reg)
                url = f"http://{topo.plan.registry}:{servers.REGISTRY_PORT}"
            else:
                addrs = [topo.plan.hosts[i] for i in hosts]
                sidecars = servers.start_sidecars(
                    topo,
                    procs,
                    hosts,
                    s3.endpoint,
                    run_dir,
                    parallel=p.start_parallel,
                    env=p.sidecar_env(scenario),
                    env_for=lambda i: p.peer_env(scenario, addrs, i),
                )
                started += sidecars
                url = servers.SIDECAR_URL
                if scenario == "peers-liar" and n > 1:
                    started.append(self._start_liar())
                    record["liar"] = {"host": 0, "url": f"http://{addrs[0]}:{PEER_PORT}"}
                if scenario == "peers-kill" and n > 2:
                    victim = self._first_holder(addrs)
                    kill = (victim, sidecars[victim])
                    record["killed"] = {"host": victim, "after_s": p.kill_after_s}
            setup_s = time.monotonic() - t0
            warm_info: dict[str, Any] | None = None
            if scenario == "warmed":
                warm_info = self._warm(hosts)
            record.update(self._pull(scenario, hosts, url, run_dir, kill=kill))
            record["phases"] = {
                "setup_s": round(setup_s, 2),
                "warm_s": warm_info["wall_s"] if warm_info else None,
                "pull_s": record.pop("pull_s"),
            }
            if warm_info is not None:
                record["warm"] = warm_info
        finally:
            procs.stop(started)
            if record.get("pull", {}).get("summary", {}).get("failed"):
                self._keep_logs(f"{scenario}-n{n}", record["pull"])
            if self.every_run_logs is not None:
                self._copy_logs(self.every_run_logs / f"{scenario}-n{n}", lambda name: True)
            shutil.rmtree(run_dir, ignore_errors=True)
        record["wall_s"] = round(time.monotonic() - t0, 2)
        return record

    def _start_liar(self) -> Spawned:
        """The corrupting proxy in host 0's namespace, on the peer port the others list."""
        assert self.topo is not None and self.procs is not None
        sp = self.procs.spawn(
            "liar",
            self.topo.hosts[0],
            python_argv(
                "benchmarks.scaleup.liar",
                "--listen",
                f"0.0.0.0:{PEER_PORT}",
                "--upstream",
                f"http://127.0.0.1:{PEER_PORT + 1}",
            ),
            name="liar-h0",
        )
        servers.wait_ready(
            self.procs, [(sp, f"http://127.0.0.1:{PEER_PORT}/peer/v1/")], 30.0, "liar proxy"
        )
        return sp

    def _first_holder(self, addrs: Sequence[str]) -> int:
        """The host that fetches the first part of the first layer from S3 (its tree's
        root): the first holder, killed in ``peers-kill``."""
        from regsidecar.peers.ring import Member, part_key, rank

        first = self.seeded["layers"][0]["digest"]
        members = [Member(f"http://{a}:{PEER_PORT}") for a in addrs]
        root = rank(members, part_key(first, 0))[0]
        return members.index(root)

    def _keep_logs(self, name: str, pull: dict[str, Any]) -> None:
        """Copy the S3 stand-in's logs, the registry's and those of the hosts whose pull
        failed, for a post-mortem."""
        if self.failure_logs is None or self.procs is None:
            return
        failed = {c["client"] for c in pull["clients"] if c.get("error") is not None}

        def wanted(name: str) -> bool:
            m = re.search(r"-h(\d+)\.", name)
            return name.startswith("registry") or bool(m and int(m.group(1)) in failed)

        dest = self.failure_logs / name
        self._copy_logs(dest, wanted)
        log(f"logs of the failed pulls copied to {dest}")

    def _copy_logs(self, dest: Path, wanted: Callable[[str], bool]) -> None:
        """The run's process logs that ``wanted`` names, and the S3 stand-in's, into dest."""
        assert self.procs is not None
        dest.mkdir(parents=True, exist_ok=True)
        for path in self.procs.logs.iterdir():
            if wanted(path.name):
                shutil.copy(path, dest / path.name)
        for path in self.s3.log_files() if self.s3 is not None else []:
            if path.exists():
                shutil.copy(path, dest / path.name)

    def _warm(self, hosts: Sequence[int]) -> dict[str, Any]:
        assert self.topo is not None and self.procs is not None and self.s3 is not None
        mark, s3_tx = self.s3.mark(), self.topo.link_bytes(self.topo.s3)[1]
        t0 = time.monotonic()
        summaries = servers.warm(
            self.topo, self.procs, hosts, self.params.image, self.params.timeout_s
        )
        wall = time.monotonic() - t0
        counts = self.s3.counts(self.s3.since(mark))
        return {
            "wall_s": round(wall, 2),
            "max_s": max(float(s["seconds"]) for s in summaries),
            "bytes": sum(int(s["bytes"]) for s in summaries),
            "backend": {
                **counts,
                "s3_bytes": self.topo.link_bytes(self.topo.s3)[1] - s3_tx,
            },
        }

    def _pull(
        self,
        scenario: str,
        hosts: Sequence[int],
        url: str,
        run_dir: Path,
        *,
        kill: tuple[int, Spawned] | None = None,
    ) -> dict[str, Any]:
        """Every host pulls at once. ``kill``: (host, its sidecar), killed with its puller
        (SIGKILL, as a host that dies) ``kill_after_s`` into the pull; its own pull is left
        out of the results (a dead host pulls nothing)."""
        assert self.topo is not None and self.procs is not None and self.s3 is not None
        topo, procs, s3, p = self.topo, self.procs, self.s3, self.params
        start_file = run_dir / "start"
        pullers: list[Spawned] = []
        outs: list[Path] = []
        readies: list[Path] = []
        try:
            for i in hosts:
                out, ready = run_dir / f"pull-h{i}.json", run_dir / f"ready-h{i}"
                argv = python_argv(
                    "regsidecar", "bench", "pull", "--url", url, "--clients", "1",
                    "--image", p.image, "--concurrency", str(p.concurrency),
                    "--timeout", str(p.timeout_s), "--json", str(out), "--label", scenario,
                    "--ready-file", str(ready), "--start-file", str(start_file), "--quiet",
                )  # fmt: skip
                pullers.append(procs.spawn("pullers", topo.hosts[i], argv, name=f"pull-h{i}"))
                outs.append(out)
                readies.append(ready)
            _wait_files(readies, pullers, deadline_s=120.0)
            idle = wait_idle(p.idle_wait_s)
            mark = s3.mark()
            s3_tx = topo.link_bytes(topo.s3)[1]
            reg_tx = topo.link_bytes(topo.registry)[1]
            tcp = {ns: topo.tcp_counters(ns) for ns in (topo.s3, topo.registry)}
            roles: dict[str, Callable[[], list[int]]] = {s3.role: s3.pids}
            roles.update(
                (role, _pids_of(procs, role)) for role in ("registry", "sidecars", "pullers")
            )
            killer: threading.Timer | None = None
            if kill is not None:
                victim, sidecar = kill
                killer = threading.Timer(
                    p.kill_after_s, _kill, ([sidecar, pullers[hosts.index(victim)]],)
                )
            with CpuSampler(roles) as sampler:
                t0 = time.monotonic()
                start_file.touch()
                if killer is not None:
                    killer.start()
                finished = procs.wait_all(pullers, deadline_s=p.timeout_s + 60)
                pull_s = time.monotonic() - t0
            if killer is not None:
                killer.cancel()
            if not finished:
                log(f"{scenario} N={len(hosts)}: pullers still running after the deadline")
        finally:
            procs.stop(pullers)
        results = [
            _result_or_failure(out, sp, scenario, url, p)
            for i, out, sp in zip(hosts, outs, pullers, strict=True)
            if kill is None or i != kill[0]
        ]
        merged = merge(results)
        rss = s3.rss_kib()
        requests = s3.since(mark)
        sizes = {layer["digest"]: int(layer["size"]) for layer in self.seeded.get("layers", [])}
        return {
            "pull": merged,
            "cpu": {**sampler.summary(), "busy_fraction_before": round(idle, 3)},
            "backend": {
                **s3.counts(requests),
                "s3_blob_bytes": servers.blob_bytes(requests, sizes),
                "s3_bytes": topo.link_bytes(topo.s3)[1] - s3_tx,
                "central_bytes": topo.link_bytes(topo.registry)[1] - reg_tx,
                **_tcp_delta("s3", tcp[topo.s3], topo.tcp_counters(topo.s3)),
                **_tcp_delta("central", tcp[topo.registry], topo.tcp_counters(topo.registry)),
                "s3_server_rss_mib": None if rss is None else round(rss / 1024),
            },
            "pull_s": round(pull_s, 2),
        }

    def sweep(self, on_run: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        runs = []
        for n in self.params.ns:
            for scenario in self.params.scenarios:
                log(f"{scenario} N={n}: starting")
                record = self.run_one(scenario, n)
                s, b = record["pull"]["summary"], record["backend"]
                ranged = f", {b['s3_range_get']} ranged" if "s3_range_get" in b else ""
                log(
                    f"{scenario} N={n}: all ready {_fmt(s['all_ready_s'])} s, "
                    f"p50 {_fmt(s['p50_s'])} s, ok {s['ok']}/{s['clients']}, "
                    f"CPU mean {_fmt(record['cpu']['busy_fraction_mean'])} "
                    f"max {_fmt(record['cpu']['busy_fraction_max'])}, "
                    f"S3 {b['s3_bytes'] / MIB:.1f} MiB in {b['s3_get']} GETs{ranged}, "
                    f"wall {record['wall_s']} s"
                )
                runs.append(record)
                if on_run is not None:
                    on_run(record)
        return runs


def _kill(group: Sequence[Spawned]) -> None:
    """SIGKILL, as a host that dies (the harness's own processes, by PID)."""
    for sp in group:
        with contextlib.suppress(ProcessLookupError):
            os.kill(sp.pid, signal.SIGKILL)
    names = ", ".join(f"{sp.role} in {sp.ns}" for sp in group)
    log(f"killed {names}")


def _tcp_delta(who: str, before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Segments sent and retransmitted by ``who`` during the phase (loss on the caps)."""
    return {f"{who}_tcp_{k}": after[k] - before[k] for k in ("out_segs", "retrans_segs")}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _pids_of(procs: Procs, role: str) -> Callable[[], list[int]]:
    return lambda: procs.pids(role)


def _wait_files(paths: Sequence[Path], procs: Sequence[Spawned], deadline_s: float) -> None:
    """Wait until every puller created its ready file; RuntimeError if one exits first."""
    end = time.monotonic() + deadline_s
    while not all(path.exists() for path in paths):
        for sp in procs:
            if not sp.alive():
                raise RuntimeError(
                    f"puller in {sp.ns} exited ({sp.proc.returncode}) before it was ready:\n"
                    f"{sp.errors()}"
                )
        if time.monotonic() >= end:
            raise RuntimeError(f"pullers not ready after {deadline_s} s")
        time.sleep(0.05)


def _result_or_failure(out: Path, sp: Spawned, label: str, url: str, p: Params) -> dict[str, Any]:
    """The puller's JSON, or (it wrote none) one failed client in the same format."""
    with contextlib.suppress(OSError, ValueError):
        result: dict[str, Any] = json.loads(out.read_text())
        return result
    detail = f"no result from the puller in {sp.ns} (exit {sp.proc.returncode}): {sp.errors()}"
    return {
        "kind": "pull",
        "version": 1,
        "params": {"image": p.image, "clients": 1, "targets": [url], "ramp_s": 0.0,
                   "concurrency": p.concurrency, "timeout_s": p.timeout_s, "label": label},
        "started_at": time.time(),
        "clients": [{"client": 0, "target": url, "offset_s": 0.0, "ready_s": None, "bytes": 0,
                     "requests": {}, "error": "other", "error_detail": detail[-2000:]}],
    }  # fmt: skip


def machine() -> dict[str, Any]:
    def version(argv: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            cp = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (cp.stdout or cp.stderr).strip().splitlines()[0]
        return "?"

    return {
        "cpus": os.cpu_count(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "distribution": version(["docker-registry", "--version"]),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }
