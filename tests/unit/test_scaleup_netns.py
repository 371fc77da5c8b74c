"""Pure pieces of the scale-up topology: address plan, tbf parameters, route checks, names."""

from __future__ import annotations

import ipaddress

import pytest

from benchmarks.scaleup.netns import (
    NAME_ROOT,
    TBF_MIN_BURST,
    Topology,
    address_plan,
    overlapping_routes,
    run_prefix,
    stale_namespaces,
    tbf_for,
    tcp_counters,
)


def test_address_plan_puts_registry_s3_and_hosts_apart_in_the_subnet() -> None:
    plan = address_plan(40)
    assert plan.registry == "10.213.0.2"
    assert plan.s3 == "10.213.0.3"
    assert plan.hosts[0] == "10.213.0.10"
    assert plan.hosts[-1] == "10.213.0.49"
    everyone = [plan.registry, plan.s3, *plan.hosts]
    assert len(set(everyone)) == len(everyone)
    assert all(ipaddress.IPv4Address(a) in plan.subnet for a in everyone)
    assert plan.cidr(plan.s3) == "10.213.0.3/16"


def test_address_plan_crosses_octets_in_a_wide_subnet() -> None:
    plan = address_plan(300, "10.213.0.0/16")
    assert plan.hosts[246] == "10.213.1.0"
    assert plan.hosts[299] == "10.213.1.53"


def test_address_plan_refuses_a_subnet_too_small_or_public() -> None:
    with pytest.raises(ValueError, match="no room"):
        address_plan(250, "10.213.0.0/24")
    address_plan(244, "10.213.0.0/24")  # .10 .. .253: fits, .255 is broadcast
    with pytest.raises(ValueError, match="private"):
        address_plan(2, "8.8.0.0/16")
    with pytest.raises(ValueError):
        address_plan(0)


def test_tbf_burst_is_at_least_96_kib_and_10_ms_of_the_rate() -> None:
    small = tbf_for(16)
    assert small.rate_bit == 16_000_000
    assert small.burst_bytes == TBF_MIN_BURST  # 10 ms at 2 MB/s is only 20 kB
    assert small.latency_ms == 50
    big = tbf_for(1000)
    assert big.burst_bytes == 1_250_000  # 10 ms at 125 MB/s
    # at least rate/HZ for any HZ >= 100, and above a 64 KiB GSO packet
    for mbit in (1, 16, 160, 800, 10_000):
        t = tbf_for(mbit)
        assert t.burst_bytes >= t.rate_bit / 8 / 100
        assert t.burst_bytes > 65536 + 1500
    assert tbf_for(16).tc_args() == [
        "tbf",
        "rate",
        "16000000bit",
        "burst",
        str(TBF_MIN_BURST),
        "latency",
        "50ms",
    ]


@pytest.mark.parametrize("mbit", [0, -1, float("inf"), float("nan")])
def test_tbf_refuses_a_cap_that_is_not_a_positive_number(mbit: float) -> None:
    with pytest.raises(ValueError):
        tbf_for(mbit)


def test_a_route_or_address_inside_the_subnet_is_reported() -> None:
    routes = [
        {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
        {"dst": "192.0.2.0/24", "dev": "eth0"},
    ]
    addrs = [{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.2",
                                               "prefixlen": 24}]}]  # fmt: skip
    assert overlapping_routes("10.213.0.0/16", routes, addrs) == []
    assert overlapping_routes("192.0.2.0/28", routes, addrs) == [
        "route 192.0.2.0/24 dev eth0 table main",
        "address 192.0.2.2/24 on eth0",
    ]
    # a host route (no /len) and a wider route both count; IPv6 is ignored
    assert overlapping_routes("10.213.0.0/16", [{"dst": "10.213.7.7", "dev": "x"}], []) != []
    assert overlapping_routes("10.213.0.0/16", [{"dst": "10.0.0.0/8", "dev": "x"}], []) != []
    assert overlapping_routes("10.213.0.0/16", [{"dst": "fd00::/64", "dev": "x"}], []) == []


def test_only_namespaces_of_runs_that_are_gone_are_stale() -> None:
    names = ["rsb100-hub", "rsb100-h0", "rsb200-s3", "other", "rsbx-h0", "rsb300"]
    live = {200}
    assert stale_namespaces(names, lambda pid: pid in live) == ["rsb100-hub", "rsb100-h0"]


def test_run_prefix_and_interface_names_fit_the_kernel_limit() -> None:
    assert run_prefix(4194304) == f"{NAME_ROOT}4194304"
    topo = Topology(
        run_prefix(4194304), address_plan(200), host_cap=tbf_for(16), central_cap=tbf_for(160)
    )
    names = [topo.bridge, topo.far_end(), topo.hub_end("reg"), topo.hub_end("h199")]
    assert all(len(n) <= 15 for n in names)
    assert topo.hosts[199] == "rsb4194304-h199"
    with pytest.raises(ValueError, match="15 bytes"):
        Topology("rsb123456789", address_plan(200), host_cap=None, central_cap=None)
    with pytest.raises(ValueError, match="not a namespace"):
        topo.exec_argv("elsewhere", ["true"])  # nothing built yet: nothing to run in


def test_tcp_counters_read_out_and_retransmitted_segments() -> None:
    snmp = (
        "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
        "Tcp: RtoAlgorithm RtoMin OutSegs RetransSegs InErrs\nTcp: 1 200 1234 56 0\n"
    )
    assert tcp_counters(snmp) == {"out_segs": 1234, "retrans_segs": 56}
    with pytest.raises(ValueError):
        tcp_counters("Ip: a\nIp: 1\n")


def test_a_cap_on_a_senders_own_egress_gets_a_deep_queue() -> None:
    from benchmarks.scaleup.netns import TBF_SENDER_LATENCY_MS

    central = tbf_for(80, TBF_SENDER_LATENCY_MS)
    assert central.latency_ms == 2000
    assert central.tc_args()[-2:] == ["latency", "2000ms"]
    assert central.describe() == "tbf rate 80 Mbit/s burst 100000 B latency 2000 ms"


def test_without_root_the_simulation_says_why_it_cannot_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks.scaleup import netns

    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert netns.available() == "needs root (ip netns, tc)"
