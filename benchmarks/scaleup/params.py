"""What a sweep depends on: ``Params`` (every value goes into ``scaleup.json`` as
``params``), the scenarios, and the sidecar settings each scenario runs with.

Beyond the flags themselves, ``to_json`` records ``part_bytes``, ``s3`` (which S3
stand-in, and its per-connection cap), ``sidecar_env`` (scenario -> the
``REGSIDECAR_DOWNLOAD_*`` variables its sidecars got) and ``sidecar_download`` (scenario ->
every ``download.*`` setting they ran with, defaults included) and ``tbf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from benchmarks.scaleup.capped import describe_capped
from benchmarks.scaleup.netns import TBF_SENDER_LATENCY_MS, tbf_for

#: Every scenario, and the ones a sweep runs unless told (``single`` and the peer scenarios
#: only when asked for).
SCENARIOS = ("central", "sidecar", "single", "warmed", "peers", "peers-kill", "peers-liar")
DEFAULT_SCENARIOS = ("central", "sidecar", "warmed")
#: The scenarios whose hosts pull through their own sidecar.
SIDECAR_SCENARIOS = ("sidecar", "single", "warmed", "peers", "peers-kill", "peers-liar")
#: The scenarios whose sidecars fetch from each other (peer fetch on, every host listed).
PEER_SCENARIOS = ("peers", "peers-kill", "peers-liar")
#: The peer listener's port on every host (the liar's sidecar listens on the next one,
#: behind a proxy that flips a byte of every answer).
PEER_PORT = 5001
#: The queue of a host's upload cap (see run.py: short, so ACKs are not held behind uploads).
HOST_UP_LATENCY_MS = 200
MIB = 1024 * 1024
#: regsidecar's download settings (``download.*``) are these environment variables.
DOWNLOAD_ENV_PREFIX = "REGSIDECAR_DOWNLOAD_"


@dataclass(frozen=True)
class Params:
    """Everything a sweep depends on (all of it goes into ``scaleup.json``)."""

    ns: tuple[int, ...]
    scenarios: tuple[str, ...]
    image_bytes: int
    layers: int
    host_mbit: float
    central_mbit: float
    s3_mbit: float | None
    concurrency: int
    timeout_s: float
    image: str
    subnet: str
    start_parallel: int
    idle_wait_s: float
    mtu: int
    congestion_control: str
    #: Each S3 connection's cap in Mbit/s: the capped stand-in (nginx); None: moto, uncapped.
    s3_conn_mbit: float | None = None
    #: The sidecars' ``download.part_bytes`` in MiB (None: regsidecar's default).
    part_mib: float | None = None
    #: The sidecars' ``download.parallel_after_s`` (None: regsidecar's default).
    parallel_after_s: float | None = None
    #: Each host's upload cap in Mbit/s (its NIC's other direction; None: as host_mbit).
    #: Only peer fetch uploads much: without it a host could feed its peers without limit.
    host_up_mbit: float | None = None
    #: peers-kill: seconds into the pull when the first holder is killed (SIGKILL).
    kill_after_s: float = 15.0

    @property
    def uplink_mbit(self) -> float:
        return self.host_mbit if self.host_up_mbit is None else self.host_up_mbit

    @property
    def part_bytes(self) -> int | None:
        return None if self.part_mib is None else round(self.part_mib * MIB)

    def download_overrides(self, scenario: str) -> dict[str, Any]:
        """The ``download.*`` settings a sidecar of ``scenario`` gets besides the defaults."""
        over: dict[str, Any] = {}
        if self.part_bytes is not None:
            over["part_bytes"] = self.part_bytes
        if self.parallel_after_s is not None:
            over["parallel_after_s"] = self.parallel_after_s
        if scenario == "single":
            over["connections_per_blob"] = 1
        return over

    def sidecar_env(self, scenario: str) -> dict[str, str]:
        """The environment every sidecar of ``scenario`` starts with (beyond the AWS dummies).

        >>> Params.example(part_mib=1).sidecar_env("single")  # doctest: +NORMALIZE_WHITESPACE
        {'REGSIDECAR_DOWNLOAD_PART_BYTES': '1048576',
         'REGSIDECAR_DOWNLOAD_CONNECTIONS_PER_BLOB': '1'}
        """
        return {
            f"{DOWNLOAD_ENV_PREFIX}{k.upper()}": f"{v:g}" if isinstance(v, float) else str(v)
            for k, v in self.download_overrides(scenario).items()
        }

    def peer_env(self, scenario: str, hosts: Sequence[str], i: int) -> dict[str, str]:
        """The peer settings of host ``i`` of ``hosts`` (addresses) in a peer scenario; {}
        otherwise. Every host lists all of them; the liar (host 0 in ``peers-liar``) listens
        one port up, behind its corrupting proxy, and advertises the proxy's port.

        >>> env = Params.example().peer_env("peers-liar", ["10.213.0.10", "10.213.0.11"], 0)
        >>> env["REGSIDECAR_PEER_LISTEN"], env["REGSIDECAR_PEERS_ADVERTISE"]
        ('0.0.0.0:5002', 'http://10.213.0.10:5001')
        """
        if scenario not in PEER_SCENARIOS:
            return {}
        urls = [f"http://{a}:{PEER_PORT}" for a in hosts]
        liar = scenario == "peers-liar" and i == 0
        return {
            "REGSIDECAR_PEER_LISTEN": f"0.0.0.0:{PEER_PORT + 1 if liar else PEER_PORT}",
            "REGSIDECAR_PEERS_URLS": ",".join(urls),
            "REGSIDECAR_PEERS_ADVERTISE": urls[i],
        }

    def sidecar_download(self, scenario: str) -> dict[str, Any]:
        """Every ``download.*`` setting a sidecar of ``scenario`` runs with (defaults filled
        in from regsidecar's own config model; ValueError if one is out of its range)."""
        from pydantic import ValidationError

        from regsidecar.config import DownloadSettings

        try:
            d = DownloadSettings(**self.download_overrides(scenario))
        except ValidationError as exc:
            raise ValueError(str(exc)) from None
        return d.model_dump()

    @classmethod
    def example(cls, **changes: Any) -> Params:
        """The default sweep's parameters with ``changes`` (for docs and tests)."""
        base = cls(
            ns=(1, 5, 10, 20, 40), scenarios=DEFAULT_SCENARIOS, image_bytes=50 * MIB, layers=5,
            host_mbit=8.0, central_mbit=80.0, s3_mbit=None, concurrency=3, timeout_s=900.0,
            image="bench/app:v1", subnet="10.213.0.0/16", start_parallel=8, idle_wait_s=5.0,
            mtu=9000, congestion_control="cubic",
        )  # fmt: skip
        return replace(base, **changes)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ns"] = list(self.ns)
        d["scenarios"] = list(self.scenarios)
        d["part_bytes"] = self.part_bytes
        d["s3"] = (
            describe_capped(self.s3_conn_mbit)
            if self.s3_conn_mbit is not None
            else {"server": "moto", "conn_mbit": None}
        )
        sidecars = [s for s in self.scenarios if s in SIDECAR_SCENARIOS]
        d["sidecar_env"] = {s: self.sidecar_env(s) for s in sidecars}
        d["uplink_mbit"] = self.uplink_mbit
        d["sidecar_download"] = {s: self.sidecar_download(s) for s in sidecars}
        d["tbf"] = {
            "host": tbf_for(self.host_mbit).describe() + " (hub end of each host's veth)",
            "host_up": tbf_for(self.uplink_mbit, HOST_UP_LATENCY_MS).describe()
            + " (host end of each host's veth: its upload)",
            "central": tbf_for(self.central_mbit, TBF_SENDER_LATENCY_MS).describe()
            + " (registry's own veth egress)",
            "s3": tbf_for(self.s3_mbit, TBF_SENDER_LATENCY_MS).describe() + " (S3's own egress)"
            if self.s3_mbit
            else "none",
        }
        return d
