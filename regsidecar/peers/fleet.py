"""Build :class:`~regsidecar.peers.source.Peers` from the settings (membership providers, the
token, one client session for every peer)."""

from __future__ import annotations

from functools import partial

import aiohttp

from regsidecar.config import Settings, read_config_text
from regsidecar.errors import ConfigError
from regsidecar.metrics import Metrics
from regsidecar.peers.membership import (
    DnsMembers,
    Ec2Members,
    Membership,
    Provider,
    StaticMembers,
)
from regsidecar.peers.source import Peers
from regsidecar.pull.window import ConnectionWindow
from regsidecar.upstream import CircuitBreaker


def peer_token(settings: Settings) -> str | None:
    """The shared peer token: ``peers.token``, else the first line of ``peers.token_file``."""
    p = settings.peers
    if p.token is not None and p.token.get_secret_value():
        return p.token.get_secret_value()
    if p.token_file:
        token = read_config_text("peers.token_file", p.token_file).strip()
        if not token:
            raise ConfigError("peers.token_file", f"{p.token_file} is empty")
        return token
    return None


def providers(settings: Settings) -> list[Provider]:
    p = settings.peers
    out: list[Provider] = []
    if p.urls:
        out.append(StaticMembers(p.urls))
    if p.dns:
        out.append(DnsMembers(p.dns, p.port, p.scheme))
    if p.ec2_asg or p.ec2_filters:
        out.append(
            Ec2Members(
                asg=p.ec2_asg,
                filters=p.ec2_filters,
                port=p.port,
                scheme=p.scheme,
                region=p.ec2_region or settings.s3.region,
                endpoint_url=p.ec2_endpoint_url or None,
            )
        )
    return out


def membership(settings: Settings) -> Membership:
    p = settings.peers
    return Membership(
        providers(settings),
        listen=settings.peer_address,
        advertise=p.advertise,
        zone=p.zone,
        refresh_s=p.refresh_s,
    )


async def open_peers(settings: Settings, metrics: Metrics) -> Peers:
    """Peers with a first membership answer (a provider that fails now is asked again at
    the next refresh; until then the others' members are used)."""
    p, d = settings.peers, settings.download
    token = peer_token(settings)
    members = membership(settings)
    members.on_change = lambda found: metrics.peer_members.set(len(found))
    await members.refresh()
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(
            total=None,
            sock_connect=p.connect_timeout_s,
            sock_read=max(settings.s3.read_timeout_s, p.patience_s),
        ),
        connector=aiohttp.TCPConnector(limit=0),
        auto_decompress=False,
    )
    return Peers(
        members,
        p,
        session,
        token=token,
        window=partial(
            ConnectionWindow,
            d.max_connections,
            initial=d.connections_per_blob,
            floor=d.connections_per_blob,
        ),
        breaker=partial(CircuitBreaker, settings.breaker.failures, settings.breaker.cooldown_s),
        on_quarantine=metrics.peer_quarantines.inc,
    )
