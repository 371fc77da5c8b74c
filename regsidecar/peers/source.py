"""Another sidecar's peer listener as a blob source, and the fleet of them.

:class:`PeerSource` is a :class:`~regsidecar.pull.sources.BlobSource`: blob bytes by digest,
nothing else (tags and manifests always come from the store). :class:`Peers` holds one per
member and answers the fetch's one question, "whom do I ask for the part of this blob that
starts here?" (:meth:`Peers.route`): the part's ancestors in its rendezvous tree
(:mod:`regsidecar.peers.ring`), leaving out peers that are quarantined (they served bytes
that failed verification) or whose circuit is open (down, refusing, stalling).

A peer's answer carries ``X-Regsidecar-Verified: 1`` when it sent bytes of a blob it had
verified, ``0`` while it was still receiving them. A download that fails verification after
peers sent some of it holds them to account: a peer that claimed verified bytes is
quarantined at once; one that relayed bytes in flight (it may only have passed on another's
bad bytes, and will find out itself) gets a strike, and ``STRIKES`` strikes quarantine it.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp

from regsidecar.config import PeerSettings
from regsidecar.errors import Busy, NotFound, StorageError, UpstreamUnavailable
from regsidecar.oci.ranges import answers_range, range_header
from regsidecar.oci.reference import Digest
from regsidecar.peers.membership import Membership
from regsidecar.peers.ring import Member, ancestors, part_key
from regsidecar.pull.sources import BlobInfo
from regsidecar.pull.window import ConnectionWindow
from regsidecar.storage.base import CHUNK
from regsidecar.upstream import CircuitBreaker

log = logging.getLogger(__name__)

PEER_PATH = "/peer/v1"
VERIFIED_HEADER = "X-Regsidecar-Verified"
FROM_HEADER = "X-Regsidecar-Peer"  # the asking member's URL, for the server's log
# A random id per running sidecar: a listener that sees its own id answers 508, and the
# asker learns which member it is (a host listed under a name it cannot tell is its own).
INSTANCE_HEADER = "X-Regsidecar-Instance"
SELF_STATUS = 508
STRIKES = 3  # relayed bad bytes this often (within quarantine_s): quarantined


class PeerStream:
    """One response's bytes; ``verified`` is what the peer said about them (None until its
    headers are in)."""

    def __init__(self, chunks: Callable[[PeerStream], AsyncIterator[bytes]]) -> None:
        self.verified: bool | None = None
        self._chunks = chunks(self)

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        return await anext(self._chunks)

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]


class PeerSource:
    """Blob bytes from one peer's listener; ``name`` is the metrics label ("peer")."""

    name = "peer"

    def __init__(
        self,
        member: Member,
        session: aiohttp.ClientSession,
        *,
        token: str | None,
        me: str | None,
        breaker: CircuitBreaker,
        window: ConnectionWindow,
        instance: str = "",
        on_self: Callable[[str], None] | None = None,
    ) -> None:
        self.member = member
        self.url = member.url
        self._session = session
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        if me:
            self._headers[FROM_HEADER] = me
        if instance:
            self._headers[INSTANCE_HEADER] = instance
        self._on_self = on_self
        self.breaker = breaker
        self.window = window

    def _blob_url(self, digest: Digest) -> str:
        return f"{self.url}{PEER_PATH}/blobs/{digest}"

    def _check(self, resp: aiohttp.ClientResponse, what: str) -> None:
        if resp.status < 300:
            return
        if resp.status == 404:
            raise NotFound(what, f"peer {self.url}")
        if resp.status in (401, 403):
            raise StorageError(what, f"peer {self.url}: HTTP {resp.status} (peers.token?)")
        if resp.status == SELF_STATUS:
            if self._on_self is not None:
                self._on_self(self.url)
            raise StorageError(what, f"peer {self.url} is this host")
        if resp.status in (429, 503):
            raise Busy(what, f"peer {self.url}: HTTP {resp.status} (busy)")
        # 5xx: ask the next one.
        raise UpstreamUnavailable(what, f"peer {self.url}: HTTP {resp.status}")

    async def stat(self, repo: str, digest: Digest) -> BlobInfo:
        try:
            async with self._session.head(self._blob_url(digest), headers=self._headers) as resp:
                self._check(resp, str(digest))
                if resp.content_length is None:
                    raise UpstreamUnavailable(str(digest), f"peer {self.url}: no length")
                return BlobInfo(resp.content_length)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamUnavailable(str(digest), f"peer {self.url}: {exc}") from exc

    def open(self, repo: str, digest: Digest, start: int, end: int | None) -> PeerStream:
        return PeerStream(lambda stream: self._stream(digest, start, end, stream))

    async def _stream(
        self, digest: Digest, start: int, end: int | None, stream: PeerStream
    ) -> AsyncIterator[bytes]:
        what = str(digest)
        headers = {**self._headers, **range_header(start, end)}
        try:
            async with self._session.get(self._blob_url(digest), headers=headers) as resp:
                self._check(resp, what)
                if not answers_range(resp.status, resp.headers.get("Content-Range"), start, end):
                    raise UpstreamUnavailable(what, f"peer {self.url}: wrong range")
                stream.verified = resp.headers.get(VERIFIED_HEADER) == "1"
                async for chunk in resp.content.iter_chunked(CHUNK):
                    yield chunk
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamUnavailable(
                what, f"peer {self.url}: {type(exc).__name__}: {exc}"
            ) from exc

    async def manifest(self, repo: str, digest: Digest, max_bytes: int) -> bytes:
        raise NotFound(str(digest), "peers serve blobs only")

    async def ping(self, timeout_s: float = 2.0) -> str:
        """ "ok", or why this peer cannot be used (for doctor and /healthz)."""
        try:
            async with self._session.get(
                f"{self.url}{PEER_PATH}/",
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                if resp.status == 200:
                    return "ok"
                if resp.status in (401, 403):
                    return f"HTTP {resp.status}: the token is not accepted"
                return f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"unreachable: {type(exc).__name__}: {exc}".rstrip(": ")


@dataclass(slots=True)
class _Record:
    strikes: list[float] = field(default_factory=list)
    quarantined_until: float = 0.0


class Peers:
    """The fleet as this host sees it: membership, one source per member, quarantine."""

    def __init__(
        self,
        membership: Membership,
        settings: PeerSettings,
        session: aiohttp.ClientSession,
        *,
        token: str | None,
        window: Callable[[], ConnectionWindow],
        breaker: Callable[[], CircuitBreaker],
        now: Callable[[], float] = time.monotonic,
        on_quarantine: Callable[[], None] | None = None,
    ) -> None:
        self.membership = membership
        self.settings = settings
        self.session = session
        self._token = token
        self._window = window
        self._breaker = breaker
        self._now = now
        self._sources: dict[str, PeerSource] = {}
        self._records: dict[str, _Record] = {}
        self._avoid: dict[Digest, float] = {}  # digest -> until when it skips peers
        self._on_quarantine = on_quarantine
        # This host in the ring when membership does not list it (no peer listener): a
        # name of its own, so it ranks somewhere and fetches from the others.
        self._anonymous = Member(f"local://{socket.gethostname()}")
        self.instance = secrets.token_hex(8)

    @property
    def me(self) -> Member:
        return self.membership.me or self._anonymous

    def source(self, member: Member) -> PeerSource:
        src = self._sources.get(member.url)
        if src is None or src.member != member:
            me = self.membership.me
            src = PeerSource(
                member,
                self.session,
                token=self._token,
                me=me.url if me else None,
                breaker=self._breaker(),
                window=self._window(),
                instance=self.instance,
                on_self=self.learned_self,
            )
            self._sources[member.url] = src
        return src

    def sources(self) -> list[PeerSource]:
        return [self.source(m) for m in self.membership.others()]

    def learned_self(self, url: str) -> None:
        """A member's listener said it is this host: from now on it is ``me``."""
        m = self.membership
        if m.me is not None and m.me.url == url:
            return
        zone = next((x.zone for x in m.members if x.url == url), None)
        m.me = Member(url, m.zone or zone)
        log.info("this host is a listed peer (it asked itself)", extra={"peer": url})

    def quarantined(self, url: str) -> bool:
        rec = self._records.get(url)
        return rec is not None and rec.quarantined_until > self._now()

    def usable(self) -> list[Member]:
        """Members to build trees from: not quarantined, circuit not open."""
        out = []
        for m in self.membership.others():
            if self.quarantined(m.url):
                continue
            if self.source(m).breaker.state == "open":
                continue
            out.append(m)
        return out

    def route(self, digest: Digest, offset: int) -> list[PeerSource]:
        """The peers to ask for the part of ``digest`` at ``offset``, parent first; [] when
        this host is that part's root (it fetches from the store)."""
        chain = ancestors(
            self.usable(),
            self.me,
            part_key(str(digest), offset),
            fanout=self.settings.fanout,
            most=self.settings.tries,
        )
        return [self.source(m) for m in chain]

    def avoid(self, digest: Digest) -> None:
        """Fetch ``digest`` from the store only for a while (peers failed it once)."""
        now = self._now()
        self._avoid = {d: t for d, t in self._avoid.items() if t > now}
        self._avoid[digest] = now + self.settings.quarantine_s

    def avoided(self, digest: Digest) -> bool:
        until = self._avoid.get(digest)
        return until is not None and until > self._now()

    def quarantine(self, url: str, reason: str) -> None:
        rec = self._records.setdefault(url, _Record())
        rec.quarantined_until = self._now() + self.settings.quarantine_s
        rec.strikes.clear()
        log.error(
            "peer quarantined",
            extra={"peer": url, "reason": reason, "seconds": self.settings.quarantine_s},
        )
        if self._on_quarantine is not None:
            self._on_quarantine()

    def strike(self, url: str, reason: str) -> None:
        """One count against a peer that relayed bytes which failed verification."""
        rec = self._records.setdefault(url, _Record())
        now = self._now()
        rec.strikes = [t for t in rec.strikes if now - t < self.settings.quarantine_s]
        rec.strikes.append(now)
        log.warning("peer relayed bad bytes", extra={"peer": url, "strikes": len(rec.strikes)})
        if len(rec.strikes) >= STRIKES:
            self.quarantine(url, f"{reason} ({STRIKES} times)")

    def blame(self, served: dict[str, bool], reason: str) -> None:
        """After a download that peers helped failed verification: ``served`` maps each
        peer that sent bytes to whether it said they were verified."""
        for url, verified in served.items():
            if verified:
                self.quarantine(url, reason)
            else:
                self.strike(url, reason)

    def status(self) -> dict[str, object]:
        now = self._now()
        return {
            **self.membership.status(),
            "quarantined": sorted(
                url for url, r in self._records.items() if r.quarantined_until > now
            ),
            "circuits_open": sorted(
                url for url, s in self._sources.items() if s.breaker.state == "open"
            ),
        }

    async def close(self) -> None:
        await self.session.close()
