"""Flags of ``python -m benchmarks.scaleup``: defaults, --quick, explicit flags, refusals."""

from __future__ import annotations

import pytest

from benchmarks.scaleup.__main__ import build_parser, resolve
from benchmarks.scaleup.run import MIB, Params
from benchmarks.scaleup.seed import layer_sizes


def parse(*argv: str) -> Params:
    return resolve(build_parser().parse_args(list(argv)))


def test_defaults_are_the_full_sweep() -> None:
    p = parse()
    assert p.ns == (1, 5, 10, 20, 40)
    assert p.scenarios == ("central", "sidecar", "warmed")
    assert p.image_bytes == 50 * MIB
    assert p.layers == 5
    assert p.host_mbit == 8.0
    assert p.central_mbit == 80.0
    assert p.s3_mbit is None
    assert p.concurrency == 3
    assert p.timeout_s == 900.0
    assert p.mtu == 9000
    assert p.subnet == "10.213.0.0/16"


def test_quick_is_a_small_smoke_run_and_explicit_flags_win() -> None:
    p = parse("--quick")
    assert (p.ns, p.image_bytes, p.layers) == ((2,), 2 * MIB, 2)
    assert p.host_mbit == 400.0
    assert p.timeout_s == 60.0
    p = parse("--quick", "--ns", "3", "--host-mbit", "50", "--scenarios", "sidecar")
    assert (p.ns, p.host_mbit, p.scenarios) == ((3,), 50.0, ("sidecar",))


def test_every_parameter_goes_into_the_json() -> None:
    j = parse("--s3-mbit", "1000").to_json()
    for key in ("image_bytes", "layers", "host_mbit", "central_mbit", "s3_mbit", "ns"):
        assert key in j
    assert j["ns"] == [1, 5, 10, 20, 40]
    assert j["tbf"]["host"].startswith("tbf rate 8 Mbit/s burst 98304 B latency 50 ms")
    assert j["tbf"]["central"].startswith("tbf rate 80 Mbit/s burst 100000 B latency 2000 ms")
    assert j["tbf"]["s3"].startswith("tbf rate 1000 Mbit/s")


@pytest.mark.parametrize(
    "argv",
    [
        ["--ns", "0"],
        ["--ns", "1,x"],
        ["--ns", "1000"],
        ["--scenarios", "central,nope"],
        ["--host-mbit", "0"],
        ["--central-mbit", "-5"],
        ["--s3-mbit", "0"],
        ["--image-mib", "0.000001", "--layers", "5"],
        ["--layers", "0"],
        ["--concurrency", "0"],
        ["--mtu", "100"],
        ["--image", "no-tag"],
    ],
)
def test_bad_flags_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)


def test_layers_split_the_image_evenly() -> None:
    assert layer_sizes(10, 3) == [4, 3, 3]
    assert sum(layer_sizes(50 * MIB, 5)) == 50 * MIB
    with pytest.raises(ValueError):
        layer_sizes(2, 3)
