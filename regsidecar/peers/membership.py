"""Who the peers are: a static list, a DNS name, the instances of an EC2 group; refreshed.

Each provider answers one question, ``await provider.members()``; :class:`Membership` asks
all of them every ``refresh_s`` in the background (never on a request's path), keeps the
last answer that worked when one fails, and knows which member is this host::

    Membership ── StaticMembers   peers.urls
               ├─ DnsMembers      peers.dns: every A/AAAA address, port peers.port
               └─ Ec2Members      running instances of peers.ec2_asg / ec2_filters
                                  (DescribeInstances; private IP, availability zone)

>>> m = Membership([StaticMembers(["http://10.0.0.1:5001"])], advertise="http://10.0.0.1:5001")
>>> await m.refresh()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from yarl import URL

from regsidecar.peers.ring import Member

log = logging.getLogger(__name__)


class MembershipError(Exception):
    """A provider could not answer (DNS failure, EC2 API error)."""


class Provider(Protocol):
    name: str

    async def members(self) -> list[Member]: ...


def member_url(scheme: str, host: str, port: int) -> str:
    """``http://10.0.0.1:5001``, ``http://[fd00::1]:5001``."""
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"{scheme}://{host}:{port}"


class StaticMembers:
    name = "static"

    def __init__(self, urls: Sequence[str]) -> None:
        self._members = [Member(u.rstrip("/")) for u in urls]

    async def members(self) -> list[Member]:
        return list(self._members)


class DnsMembers:
    """Every address a name resolves to (a Route 53 multivalue or Cloud Map name, a
    headless service), each a member on ``port``."""

    name = "dns"

    def __init__(self, host: str, port: int, scheme: str = "http") -> None:
        self.host, self.port, self.scheme = host, port, scheme

    async def members(self) -> list[Member]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except (socket.gaierror, OSError) as exc:
            raise MembershipError(f"dns {self.host}: {exc}") from exc
        addresses = sorted({str(info[4][0]) for info in infos})
        return [Member(member_url(self.scheme, a, self.port)) for a in addresses]


class Ec2Members:
    """The running instances of an Auto Scaling group and/or matching filters, by private
    IP, with their availability zones. Needs ``ec2:DescribeInstances`` (deploy/iam/)."""

    name = "ec2"

    def __init__(
        self,
        *,
        asg: str = "",
        filters: Sequence[str] = (),
        port: int = 5001,
        scheme: str = "http",
        region: str | None = None,
        endpoint_url: str | None = None,
        client: Any = None,
    ) -> None:
        self.port, self.scheme = port, scheme
        self.filters = ec2_filters(asg, filters)
        self._region, self._endpoint = region, endpoint_url
        self._client = client

    def _describe(self) -> list[Member]:
        if self._client is None:
            import boto3  # the EC2 client only where EC2 membership is configured

            self._client = boto3.client(
                "ec2", region_name=self._region, endpoint_url=self._endpoint
            )
        found: dict[str, Member] = {}
        pages = self._client.get_paginator("describe_instances").paginate(Filters=self.filters)
        for page in pages:
            for reservation in page.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    ip = inst.get("PrivateIpAddress")
                    if not ip:
                        continue
                    zone = inst.get("Placement", {}).get("AvailabilityZone") or None
                    found[ip] = Member(member_url(self.scheme, ip, self.port), zone)
        return [found[ip] for ip in sorted(found)]

    async def members(self) -> list[Member]:
        try:
            return await asyncio.to_thread(self._describe)
        except Exception as exc:  # botocore's errors, credentials, endpoint trouble
            raise MembershipError(f"ec2: {type(exc).__name__}: {exc}") from exc


def ec2_filters(asg: str, extra: Sequence[str]) -> list[dict[str, Any]]:
    """DescribeInstances filters: running instances, of the group, matching ``NAME=V1|V2``.

    >>> for f in ec2_filters("web", ["tag:fleet=a|b"]): print(f["Name"], f["Values"])
    instance-state-name ['running']
    tag:aws:autoscaling:groupName ['web']
    tag:fleet ['a', 'b']
    """
    filters: list[dict[str, Any]] = [{"Name": "instance-state-name", "Values": ["running"]}]
    if asg:
        filters.append({"Name": "tag:aws:autoscaling:groupName", "Values": [asg]})
    for item in extra:
        name, _, values = item.partition("=")
        filters.append({"Name": name, "Values": values.split("|")})
    return filters


def is_local_address(host: str) -> bool:
    """Whether ``host`` (an IP literal) is an address of this machine: binding to it works."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((str(ip), 0))
        except OSError:
            return False
    return True


def find_self(
    members: Sequence[Member],
    listen: tuple[str, int] | None,
    *,
    local: Callable[[str], bool] = is_local_address,
) -> Member | None:
    """The member that is this host: same port as the peer listener, a local address (and
    the listener's own address when it listens on one)."""
    if listen is None:
        return None
    host, port = listen
    for m in members:
        url = URL(m.url)
        if url.port != port or url.host is None:
            continue
        if host not in ("0.0.0.0", "::", "") and url.host.strip("[]") != host:
            continue
        if local(url.host):
            return m
    return None


class Membership:
    """The current members, refreshed in the background from every provider."""

    def __init__(
        self,
        providers: Sequence[Provider],
        *,
        listen: tuple[str, int] | None = None,
        advertise: str = "",
        zone: str = "",
        refresh_s: float = 30.0,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.providers = list(providers)
        self.listen = listen
        self.advertise = advertise
        self.zone = zone or None
        self.refresh_s = refresh_s
        self._now = now
        self._by_provider: dict[str, list[Member]] = {}
        self.members: list[Member] = []
        self.me = Member(advertise, self.zone) if advertise else None
        self.refreshed_at: float | None = None
        self.errors: dict[str, str] = {}
        self.on_change: Callable[[list[Member]], None] | None = None

    async def refresh(self) -> list[Member]:
        """Ask every provider once; a provider that fails keeps its last answer."""
        for provider in self.providers:
            try:
                self._by_provider[provider.name] = await provider.members()
                self.errors.pop(provider.name, None)
            except MembershipError as exc:
                if self.errors.get(provider.name) != str(exc):
                    log.warning("peer membership refresh failed", extra={"error": str(exc)})
                self.errors[provider.name] = str(exc)
        merged: dict[str, Member] = {}
        for found in self._by_provider.values():
            for m in found:
                # A zone from any provider (EC2 knows it) wins over none.
                if m.url not in merged or merged[m.url].zone is None:
                    merged[m.url] = m
        members = [merged[u] for u in sorted(merged)]
        changed = members != self.members
        self.members = members
        self.refreshed_at = self._now()
        self._identify()
        if changed:
            log.info("peer members", extra={"members": len(members), "me": self.me and self.me.url})
            if self.on_change is not None:
                self.on_change(members)
        return members

    def _identify(self) -> None:
        listed = {m.url: m for m in self.members}
        if self.advertise:
            found = listed.get(self.advertise)
            zone = self.zone or (found.zone if found else None)
            self.me = Member(self.advertise, zone)
            return
        found = find_self(self.members, self.listen)
        if found is not None:
            self.me = Member(found.url, self.zone or found.zone)

    def others(self) -> list[Member]:
        me = self.me.url if self.me else None
        return [m for m in self.members if m.url != me]

    async def run(self) -> None:
        """Refresh every ``refresh_s`` (with 10 % jitter, so a fleet does not call the EC2
        API in step) until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_s * random.uniform(0.9, 1.1))
            try:
                await self.refresh()
            except Exception:  # a provider's failure is handled in refresh(): this is a bug
                log.exception("peer membership refresh crashed; keeping the last members")

    def status(self) -> dict[str, Any]:
        return {
            "members": len(self.members),
            "me": self.me.url if self.me else None,
            "zone": self.me.zone if self.me else self.zone,
            "providers": [p.name for p in self.providers],
            "errors": dict(self.errors),
            "refreshed_s_ago": (
                None if self.refreshed_at is None else round(self._now() - self.refreshed_at, 1)
            ),
        }
