"""Simulated hosts as network namespaces on one bridge, each with a tbf bandwidth cap.

::

                        <prefix>-hub  (bridge <prefix>-br, no address)
       ┌──────────────┬──────────────┬─────────────┬─────────────┐
   <prefix>-s3    <prefix>-reg    <prefix>-h0   ...   <prefix>-h{N-1}
   10.213.0.3     10.213.0.2      10.213.0.10         10.213.0.{10+N-1}
   (moto, uncapped) (distribution;  (sidecar on 127.0.0.1:5000 + puller;
                   tbf on its own   tbf on the hub end of its veth = download cap)
                   veth = upload cap)

Every interface is created *inside* a namespace of the run (``ip -n HUB link add ... peer
name ... netns NS``), so the main namespace never gets an interface, an address or a route of
the simulation, and no traffic can leave the namespaces: there is no gateway and no link to
the outside. Deleting a namespace deletes its veth ends (and their peers) and the bridge.

Names: every namespace is ``<prefix>-<role>``; the run's prefix is ``rsb<pid>`` (pid of the
harness process), so ``cleanup_stale()`` can tell a leftover of a killed earlier run (its pid
is gone) from a run in progress.

tbf: ``rate`` is the cap; ``burst`` is the larger of 96 KiB and 10 ms at the rate (at least
rate/HZ for any kernel HZ >= 100, and bigger than a 64 KiB GSO packet from the veth, so tbf
never has to segment one). The queue (``latency``; tc sets limit = rate x latency + burst):

* 50 ms on a host's download cap. That cap sits in the network, away from the sender (the
  S3 or registry namespace), so a full queue drops packets and TCP's congestion control
  shares the link, as at a real bottleneck.
* 2 s on the registry's upload cap (and S3's, when capped). A cap on a server's own egress
  is its NIC: a real server never drops its own packets there, TCP small queues keep each
  connection's excess in its socket. A shallow tbf there drops instead; with 120 flows
  sharing 100 Mbit/s that meant 13 % loss, connections that distribution had finished
  writing and closed were aborted by the kernel before their data got out, and their
  clients waited for the rest forever. 2 s holds TSQ's two 64 KiB packets of several
  hundred connections.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

#: Every run's names start with this, then the harness's pid.
NAME_ROOT = "rsb"
#: The default private range; ``check_subnet_unused`` refuses one the host routes or uses.
DEFAULT_SUBNET = "10.213.0.0/16"
#: Offsets in the subnet: the registry host, the S3 host, the first simulated host.
REGISTRY_OFFSET = 2
S3_OFFSET = 3
FIRST_HOST_OFFSET = 10
#: MTU of every veth and the bridge: jumbo frames, as inside an EC2 VPC (see ``Topology``).
DEFAULT_MTU = 9000
MIN_MTU, MAX_MTU = 1280, 65535
#: TCP congestion control on every link: Linux's default (many hosts, and this machine, have
#: bbr set instead; bbr through a shallow tbf queue retransmits a quarter of what it sends).
DEFAULT_CONGESTION_CONTROL = "cubic"
#: Linux interface names are at most 15 bytes.
IFNAMSIZ_MAX = 15

#: tbf: smallest burst (bytes), the burst as time at the rate, the queue's latency bound.
TBF_MIN_BURST = 96 * 1024
TBF_BURST_S = 0.010
TBF_LATENCY_MS = 50
TBF_SENDER_LATENCY_MS = 2000

_STALE = re.compile(rf"^{NAME_ROOT}(\d+)-")


def run_prefix(pid: int | None = None) -> str:
    """``rsb<pid>``: the prefix of every name this run creates."""
    return f"{NAME_ROOT}{os.getpid() if pid is None else pid}"


# -- address plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AddressPlan:
    """Who gets which address in the private subnet (all share one /prefixlen on the bridge)."""

    subnet: ipaddress.IPv4Network
    registry: str
    s3: str
    hosts: tuple[str, ...]

    @property
    def prefixlen(self) -> int:
        return self.subnet.prefixlen

    def cidr(self, addr: str) -> str:
        return f"{addr}/{self.prefixlen}"


def address_plan(n_hosts: int, subnet: str = DEFAULT_SUBNET) -> AddressPlan:
    """Registry at offset 2, S3 at 3, host i at 10 + i; ValueError if the subnet is too small.

    >>> address_plan(2).hosts
    ('10.213.0.10', '10.213.0.11')
    """
    if n_hosts < 1:
        raise ValueError("need at least one host")
    net = ipaddress.IPv4Network(subnet, strict=True)
    if not net.is_private:
        raise ValueError(f"{subnet} is not a private range")
    last = FIRST_HOST_OFFSET + n_hosts - 1
    if last >= net.num_addresses - 1:  # the last address is the broadcast address
        raise ValueError(f"{subnet} has no room for {n_hosts} hosts")
    base = int(net.network_address)
    return AddressPlan(
        subnet=net,
        registry=str(ipaddress.IPv4Address(base + REGISTRY_OFFSET)),
        s3=str(ipaddress.IPv4Address(base + S3_OFFSET)),
        hosts=tuple(
            str(ipaddress.IPv4Address(base + FIRST_HOST_OFFSET + i)) for i in range(n_hosts)
        ),
    )


def overlapping_routes(
    subnet: str, routes: Iterable[dict[str, Any]], addrs: Iterable[dict[str, Any]]
) -> list[str]:
    """What in the main namespace already covers ``subnet``: routes more specific than the
    default route (``ip -j route show table all``) and local addresses (``ip -j addr``).

    Empty means the range is unused here, so the simulation's copy of it (inside its own
    namespaces, unreachable from here) cannot shadow anything the host talks to.
    """
    net = ipaddress.IPv4Network(subnet)
    found: list[str] = []
    for r in routes:
        dst = r.get("dst", "")
        if dst in ("default", "") or ":" in dst:
            continue
        with contextlib.suppress(ValueError):
            rnet = ipaddress.IPv4Network(dst if "/" in dst else f"{dst}/32", strict=False)
            if rnet.prefixlen > 0 and rnet.overlaps(net):
                found.append(f"route {dst} dev {r.get('dev', '?')} table {r.get('table', 'main')}")
    for link in addrs:
        for a in link.get("addr_info", []):
            if a.get("family") != "inet":
                continue
            with contextlib.suppress(ValueError):
                anet = ipaddress.IPv4Network(f"{a['local']}/{a.get('prefixlen', 32)}", strict=False)
                if anet.overlaps(net):
                    found.append(f"address {a['local']}/{a.get('prefixlen')} on {link['ifname']}")
    return found


def check_subnet_unused(subnet: str) -> None:
    """RuntimeError if the main namespace routes or holds any part of ``subnet``."""
    routes = json.loads(_ip(["-j", "-4", "route", "show", "table", "all"]).stdout or "[]")
    addrs = json.loads(_ip(["-j", "-4", "addr", "show"]).stdout or "[]")
    found = overlapping_routes(subnet, routes, addrs)
    if found:
        raise RuntimeError(
            f"{subnet} is in use on this machine ({'; '.join(found)}): pick another --subnet"
        )


# -- bandwidth caps --------------------------------------------------------------------------


@dataclass(frozen=True)
class Tbf:
    """One token bucket filter: ``tc qdisc add dev DEV root tbf rate R burst B latency L``."""

    rate_bit: int
    burst_bytes: int
    latency_ms: int
    #: A qdisc inside the tbf (e.g. ``fq_codel``): how its queue is shared among flows.
    inner: str | None = None

    def tc_args(self) -> list[str]:
        return [
            "tbf",
            "rate",
            f"{self.rate_bit}bit",
            "burst",
            str(self.burst_bytes),
            "latency",
            f"{self.latency_ms}ms",
        ]

    def describe(self) -> str:
        return (
            f"tbf rate {self.rate_bit / 1e6:g} Mbit/s burst {self.burst_bytes} B "
            f"latency {self.latency_ms} ms" + (f", {self.inner} inside" if self.inner else "")
        )


def tbf_for(mbit: float, latency_ms: int = TBF_LATENCY_MS, inner: str | None = None) -> Tbf:
    """The tbf for a cap of ``mbit`` Mbit/s (10^6 bit/s): burst = max(96 KiB, 10 ms of rate);
    the queue holds ``latency_ms`` at the rate (``TBF_SENDER_LATENCY_MS`` for a cap on a
    sender's own egress, see the module docstring)."""
    if not mbit > 0 or not math.isfinite(mbit):
        raise ValueError(f"a bandwidth cap must be a positive number of Mbit/s, not {mbit!r}")
    rate_bit = round(mbit * 1_000_000)
    burst = max(TBF_MIN_BURST, math.ceil(rate_bit / 8 * TBF_BURST_S))
    return Tbf(rate_bit=rate_bit, burst_bytes=burst, latency_ms=latency_ms, inner=inner)


# -- commands ------------------------------------------------------------------------------


def _ip(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _cmd(["ip", *args], check=check)


def _cmd(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    cp = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    if check and cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({cp.returncode}): {cp.stderr.strip()}")
    return cp


def available() -> str | None:
    """None if namespaces can be built here, else the reason they cannot."""
    if os.geteuid() != 0:
        return "needs root (ip netns, tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (iproute2)"
    cp = _ip(["netns", "list"], check=False)
    if cp.returncode != 0:
        return f"ip netns does not work here: {cp.stderr.strip()}"
    return None


def congestion_controls() -> list[str]:
    """The TCP congestion control algorithms this kernel has loaded."""
    try:
        with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
            return f.read().split()
    except OSError:
        return []


def list_namespaces() -> list[str]:
    """Names of every network namespace ``ip netns`` knows."""
    cp = _ip(["-j", "netns", "list"], check=False)
    if cp.returncode != 0 or not cp.stdout.strip():
        return []
    return [str(entry["name"]) for entry in json.loads(cp.stdout)]


def ns_pids(ns: str) -> list[int]:
    """PIDs of the processes running in namespace ``ns``."""
    cp = _ip(["netns", "pids", ns], check=False)
    return [int(p) for p in cp.stdout.split()] if cp.returncode == 0 else []


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone: only its parent's wait is missing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_ns_processes(ns: str, timeout_s: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL, each process still in ``ns`` (by PID); return those PIDs.

    Only the harness starts processes in its namespaces, so whatever runs there is ours.
    """
    pids = ns_pids(ns)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + timeout_s
    while any(pid_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def delete_namespace(ns: str) -> None:
    """Stop what runs in ``ns``, then delete it (its interfaces go with it)."""
    kill_ns_processes(ns)
    _ip(["netns", "delete", ns], check=False)


def stale_namespaces(names: Iterable[str], is_live_run: Any = None) -> list[str]:
    """Namespaces of earlier runs (``rsb<pid>-...``) whose harness process is gone.

    ``is_live_run(pid) -> bool`` says whether pid is a harness still running (default: the
    process exists and its command line mentions ``scaleup``).
    """
    check = is_live_run or _is_live_run
    return [n for n in names if (m := _STALE.match(n)) and not check(int(m.group(1)))]


def _is_live_run(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"scaleup" in f.read()
    except OSError:
        return False


def cleanup_stale(root: str = NAME_ROOT) -> list[str]:
    """Remove the namespaces (and the processes in them) that a killed earlier run left
    behind; return their names. Runs in progress (their pid is alive) are left alone."""
    if root != NAME_ROOT:
        raise ValueError(f"only {NAME_ROOT}<pid>- names are ours")
    gone = stale_namespaces(list_namespaces())
    for ns in gone:
        delete_namespace(ns)
    return gone


def tcp_counters(snmp: str) -> dict[str, int]:
    """``OutSegs`` and ``RetransSegs`` from the text of /proc/net/snmp."""
    rows = [line.split() for line in snmp.splitlines() if line.startswith("Tcp:")]
    if len(rows) < 2:
        raise ValueError("no Tcp: lines in /proc/net/snmp")
    values = dict(zip(rows[0][1:], rows[1][1:], strict=True))
    return {"out_segs": int(values["OutSegs"]), "retrans_segs": int(values["RetransSegs"])}


# -- the topology ----------------------------------------------------------------------------


class Topology:
    """N host namespaces, a registry and an S3 namespace, on one bridge in a hub namespace.

    >>> with Topology(run_prefix(), address_plan(5), host_cap=tbf_for(16),
    ...               central_cap=tbf_for(160)) as topo:  # doctest: +SKIP
    ...     subprocess.run(topo.exec_argv(topo.hosts[0], ["ip", "-br", "addr"]))

    ``close()`` (also on leaving the ``with`` block) stops whatever still runs in the
    namespaces and deletes them; it is safe to call twice and after a failed build.
    """

    def __init__(
        self,
        prefix: str,
        plan: AddressPlan,
        *,
        host_cap: Tbf | None,
        central_cap: Tbf | None,
        s3_cap: Tbf | None = None,
        host_up_cap: Tbf | None = None,
        mtu: int = DEFAULT_MTU,
        congestion_control: str | None = DEFAULT_CONGESTION_CONTROL,
    ) -> None:
        if len(f"{prefix}h{len(plan.hosts) - 1}") > IFNAMSIZ_MAX:
            raise ValueError(f"prefix {prefix!r} makes interface names longer than 15 bytes")
        self.prefix = prefix
        self.plan = plan
        self.host_cap = host_cap
        self.host_up_cap = host_up_cap
        self.central_cap = central_cap
        self.s3_cap = s3_cap
        if not MIN_MTU <= mtu <= MAX_MTU:
            raise ValueError(f"mtu must be within {MIN_MTU}..{MAX_MTU}")
        self.mtu = mtu
        self.congestion_control = congestion_control
        self.hub = f"{prefix}-hub"
        self.registry = f"{prefix}-reg"
        self.s3 = f"{prefix}-s3"
        self.hosts = [f"{prefix}-h{i}" for i in range(len(plan.hosts))]
        self.bridge = f"{prefix}br"
        #: Namespaces created so far (``close`` deletes exactly these).
        self.created: list[str] = []

    # names of the hub-side veth ends (inside the hub namespace) and the far ends
    def hub_end(self, role: str) -> str:
        return f"{self.prefix}{role}"

    def far_end(self) -> str:
        return f"{self.prefix}e0"

    def build(self) -> Self:
        try:
            self._add_ns(self.hub)
            _ip(["-n", self.hub, "link", "add", "name", self.bridge, "type", "bridge"])
            _ip(["-n", self.hub, "link", "set", self.bridge, "mtu", str(self.mtu)])
            _ip(["-n", self.hub, "link", "set", self.bridge, "up"])
            # the registry's cap is on its own egress (its upload); S3 is uncapped by default
            self._attach(self.registry, "reg", self.plan.registry, own_cap=self.central_cap)
            self._attach(self.s3, "s3", self.plan.s3, own_cap=self.s3_cap)
            for i, (ns, addr) in enumerate(zip(self.hosts, self.plan.hosts, strict=True)):
                # a host's cap is on the hub end: what the bridge sends it = its download;
                # its upload cap on its own end (its NIC's egress, a sender's deep queue)
                self._attach(ns, f"h{i}", addr, hub_cap=self.host_cap, own_cap=self.host_up_cap)
            self._static_neighbours()
        except BaseException:
            self.close()
            raise
        return self

    def _static_neighbours(self) -> None:
        """Every namespace knows every other's MAC address (permanent neighbour entries).
        In a VPC the hypervisor answers ARP itself: resolving a neighbour never waits behind
        a host's traffic. Here ARP would cross the capped links like any packet: at N = 40
        with peers, requests and replies lost at full queues left neighbours FAILED for tens
        of seconds, so connects to a busy host failed for 30 s and more (curl from one host
        to another during a run), a stand-in's artefact no EC2 host has."""
        ends = [(self.registry, self.plan.registry), (self.s3, self.plan.s3)]
        ends += list(zip(self.hosts, self.plan.hosts, strict=True))
        far = self.far_end()
        macs = {}
        for ns, addr in ends:
            cp = _ip(["-n", ns, "-j", "link", "show", "dev", far])
            macs[addr] = json.loads(cp.stdout)[0]["address"]
        for ns, addr in ends:
            batch = "".join(
                f"neigh replace {other} lladdr {mac} dev {far} nud permanent\n"
                for other, mac in macs.items()
                if other != addr
            )
            cp = subprocess.run(
                ["ip", "-n", ns, "-batch", "-"],
                input=batch,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if cp.returncode != 0:
                raise RuntimeError(f"static neighbours in {ns}: {cp.stderr.strip()}")

    def _add_ns(self, ns: str) -> None:
        _ip(["netns", "add", ns])
        self.created.append(ns)
        _ip(["-n", ns, "link", "set", "lo", "up"])

    def _attach(
        self,
        ns: str,
        role: str,
        addr: str,
        *,
        hub_cap: Tbf | None = None,
        own_cap: Tbf | None = None,
    ) -> None:
        self._add_ns(ns)
        hub_end, far = self.hub_end(role), self.far_end()
        _ip(["-n", self.hub, "link", "add", "name", hub_end, "type", "veth",
             "peer", "name", far, "netns", ns])  # fmt: skip
        _ip(["-n", self.hub, "link", "set", hub_end, "mtu", str(self.mtu)])
        _ip(["-n", ns, "link", "set", far, "mtu", str(self.mtu)])
        _ip(["-n", self.hub, "link", "set", hub_end, "master", self.bridge])
        _ip(["-n", self.hub, "link", "set", hub_end, "up"])
        _ip(["-n", ns, "addr", "add", self.plan.cidr(addr), "dev", far])
        _ip(["-n", ns, "link", "set", far, "up"])
        if self.congestion_control:
            # A namespace may only default to the host's *allowed* algorithms (here reno and
            # bbr); a route's congctl may name any available one, so cubic goes on the route.
            route = [str(self.plan.subnet), "dev", far, "proto", "kernel", "scope", "link"]
            cc = ["src", addr, "congctl", self.congestion_control]
            _ip(["-n", ns, "route", "replace", *route, *cc])
        if hub_cap is not None:
            _cmd(["tc", "-n", self.hub, "qdisc", "add", "dev", hub_end, "root", *hub_cap.tc_args()])
        if own_cap is not None:
            _cmd(["tc", "-n", ns, "qdisc", "add", "dev", far, "root", "handle", "1:",
                  *own_cap.tc_args()])  # fmt: skip
            if own_cap.inner:
                _cmd(["tc", "-n", ns, "qdisc", "add", "dev", far, "parent", "1:1", own_cap.inner])

    def exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``ns`` (``ip netns exec`` execs it: the PID stays the same)."""
        if ns not in self.created:
            raise ValueError(f"{ns} is not a namespace of this topology")
        return ["ip", "netns", "exec", ns, *argv]

    def link_bytes(self, ns: str) -> tuple[int, int]:
        """(rx, tx) bytes of ``ns``'s link to the bridge, from the kernel's counters."""
        cp = _ip(["-n", ns, "-j", "-s", "link", "show", "dev", self.far_end()])
        stats = json.loads(cp.stdout)[0]["stats64"]
        return int(stats["rx"]["bytes"]), int(stats["tx"]["bytes"])

    def tcp_counters(self, ns: str) -> dict[str, int]:
        """TCP ``OutSegs`` and ``RetransSegs`` of ``ns`` (its own /proc/net/snmp view)."""
        cp = _cmd(self.exec_argv(ns, ["cat", "/proc/net/snmp"]))
        return tcp_counters(cp.stdout)

    def qdiscs(self) -> list[str]:
        """``tc qdisc show`` lines of the capped links (for the report)."""
        out = []
        for i in range(len(self.hosts)):
            cp = _cmd(["tc", "-n", self.hub, "qdisc", "show", "dev", self.hub_end(f"h{i}")])
            out.append(f"{self.hosts[i]} (hub end): {cp.stdout.strip()}")
        cp = _cmd(["tc", "-n", self.registry, "qdisc", "show", "dev", self.far_end()])
        out.append(f"{self.registry}: {cp.stdout.strip()}")
        return out

    def close(self) -> None:
        # Hosts first, the hub (and its bridge) last.
        for ns in reversed(self.created):
            delete_namespace(ns)
        self.created.clear()

    def __enter__(self) -> Self:
        return self.build()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
