"""Where blobs and names come from: one Protocol per role, one chooser over all of them.

::

    Chooser            the primary store first; the fallbacks in order when it is unavailable
      │                or its circuit is open; owns no I/O of its own
      ├── StoreSource      the bucket (S3) or directory, registry:2 layout; Range GETs
      └── RegistrySource   a fallback registry over the OCI API (a central registry)

A :class:`BlobSource` answers what a download needs: a blob's size (and its upload's part
size, when known) and a byte range of it; each carries its own circuit breaker and its own
:class:`~regsidecar.pull.window.ConnectionWindow`. An :class:`IndexSource` also answers what
only a registry's index knows: tags and repository links. Tags never come from anything but
an index source.

>>> chooser = Chooser(StoreSource(driver, w1), [RegistrySource(client, w2)])  # doctest: +SKIP
>>> digest = await chooser.ask("app:v1", lambda s: s.resolve("app", "v1"))  # doctest: +SKIP
>>> source = chooser.pick()  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from regsidecar.errors import NotFound, StorageError, UpstreamUnavailable
from regsidecar.oci.reference import Digest
from regsidecar.pull.parts import multipart_part_bytes
from regsidecar.pull.window import ConnectionWindow
from regsidecar.retry import RetryPolicy
from regsidecar.storage import layout
from regsidecar.storage.base import Driver
from regsidecar.storage.registry import RegistryReader
from regsidecar.upstream import CircuitBreaker, RegistryClient

log = logging.getLogger(__name__)
T = TypeVar("T")

# S3 eventual consistency: an object the repository links but the store does not show yet is
# asked for again for about 3 s before it counts as missing.
CONSISTENCY = RetryPolicy(max_attempts=5, base_delay_s=0.25, max_delay_s=1.0, deadline_s=3.0)


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A blob's size, and the part size it was uploaded in when the source can tell."""

    size: int
    part_bytes: int | None = None


class BlobSource(Protocol):
    """Blob bytes by digest. Errors: NotFound, UpstreamUnavailable (transient), StorageError."""

    name: str  # metrics label: "primary" or the fallback's host (configured, so bounded)
    breaker: CircuitBreaker
    window: ConnectionWindow

    async def stat(self, repo: str, digest: Digest) -> BlobInfo: ...

    def open(self, repo: str, digest: Digest, start: int, end: int | None) -> AsyncIterator[bytes]:
        """Bytes ``start..end`` (inclusive; None: to the end). Close it when done early."""
        ...

    async def manifest(self, repo: str, digest: Digest, max_bytes: int) -> bytes: ...


class IndexSource(BlobSource, Protocol):
    """A source that also knows tags and which repository links what."""

    async def resolve(self, repo: str, tag: str) -> Digest: ...

    async def has_manifest(self, repo: str, digest: Digest) -> bool: ...

    async def has_blob(self, repo: str, digest: Digest) -> bool: ...


async def consistent(call: Callable[[], Awaitable[T]], policy: RetryPolicy = CONSISTENCY) -> T:
    """``call()``, asked again briefly while it answers NotFound: the repository links the
    object, and S3 may not show a fresh object everywhere yet. Only NotFound answers count
    against the window: a slow answer is not "absent" (the call is bounded by the request's
    deadline and the driver's own retries)."""
    give_up = time.monotonic() + policy.deadline_s
    attempt = 0
    while True:
        try:
            return await call()
        except NotFound:
            attempt += 1
            delay = policy.backoff(attempt - 1)
            if attempt >= policy.max_attempts or time.monotonic() + delay > give_up:
                raise
            await asyncio.sleep(delay)


class StoreSource:
    """The store: a registry:2 tree in S3 or a directory. Blobs are read by digest (the
    repository's links are the index's business), with S3's consistency window allowed for."""

    name = "primary"

    def __init__(
        self,
        driver: Driver,
        window: ConnectionWindow,
        breaker: CircuitBreaker | None = None,
        *,
        consistency: RetryPolicy = CONSISTENCY,
    ) -> None:
        self.driver = driver
        self.reader = RegistryReader(driver)
        self.window = window
        self.breaker = breaker or CircuitBreaker()
        self._consistency = consistency

    async def stat(self, repo: str, digest: Digest) -> BlobInfo:
        info = await consistent(
            lambda: self.driver.stat(layout.blob_data(digest)), self._consistency
        )
        return BlobInfo(info.size, multipart_part_bytes(info.size, info.etag))

    def open(self, repo: str, digest: Digest, start: int, end: int | None) -> AsyncIterator[bytes]:
        return self.driver.stream(layout.blob_data(digest), start, end)

    async def manifest(self, repo: str, digest: Digest, max_bytes: int) -> bytes:
        key = layout.blob_data(digest)
        return await consistent(
            lambda: self.driver.get(key, max_bytes=max_bytes), self._consistency
        )

    async def resolve(self, repo: str, tag: str) -> Digest:
        return await self.reader.resolve_tag(repo, tag)

    async def has_manifest(self, repo: str, digest: Digest) -> bool:
        return await self.reader.has_manifest(repo, digest)

    async def has_blob(self, repo: str, digest: Digest) -> bool:
        return await self.reader.has_blob(repo, digest)


class RegistrySource:
    """A fallback registry over the OCI API; its own access rules apply to every answer."""

    def __init__(self, client: RegistryClient, window: ConnectionWindow) -> None:
        self.client = client
        self.name = client.name
        self.breaker = client.breaker
        self.window = window

    async def stat(self, repo: str, digest: Digest) -> BlobInfo:
        return BlobInfo(await self.client.blob_size(repo, digest))

    def open(self, repo: str, digest: Digest, start: int, end: int | None) -> AsyncIterator[bytes]:
        return self.client.blob_stream(repo, digest, start, end)

    async def manifest(self, repo: str, digest: Digest, max_bytes: int) -> bytes:
        return await self.client.manifest(repo, digest, max_bytes)

    async def resolve(self, repo: str, tag: str) -> Digest:
        return await self.client.resolve(repo, tag)

    async def has_manifest(self, repo: str, digest: Digest) -> bool:
        return await self.client.has_manifest(repo, digest)

    async def has_blob(self, repo: str, digest: Digest) -> bool:
        return await self.client.has_blob(repo, digest)


class Chooser:
    """Which source answers now. The primary is the source of truth: its NotFound is final;
    only when it is unavailable (after its retries) or its circuit is open are the fallbacks
    asked, in order, each skipped while its own circuit is open."""

    def __init__(self, primary: IndexSource, fallbacks: Sequence[IndexSource] = ()) -> None:
        self.primary = primary
        self.fallbacks = list(fallbacks)

    @property
    def sources(self) -> list[IndexSource]:
        return [self.primary, *self.fallbacks]

    def state(self) -> dict[str, str]:
        return {s.name: s.breaker.state for s in self.sources}

    async def ask(self, what: str, call: Callable[[IndexSource], Awaitable[T]]) -> T:
        """``call`` on the primary, or on the first fallback that answers."""
        primary = self.primary
        if primary.breaker.allow() or not self.fallbacks:
            try:
                result = await call(primary)
            except NotFound:
                primary.breaker.success()
                raise
            except StorageError:
                primary.breaker.failure()
                if not self.fallbacks:
                    raise
            else:
                primary.breaker.success()
                return result
        return await self._fallback(what, call)

    async def _fallback(self, what: str, call: Callable[[IndexSource], Awaitable[T]]) -> T:
        """The first answer of a fallback that works: NotFound only if every reachable one
        says so; UpstreamUnavailable if none could be asked."""
        errors: list[str] = []
        not_found = False
        for source in self.fallbacks:
            if not source.breaker.allow():
                errors.append(f"{source.name}: circuit open")
                continue
            try:
                result = await call(source)
            except NotFound:
                source.breaker.success()
                not_found = True
                continue
            except StorageError as exc:
                source.breaker.failure()
                errors.append(str(exc))
                continue
            source.breaker.success()
            log.info(
                "served from a fallback upstream", extra={"upstream": source.name, "ref": what}
            )
            return result
        if not_found:
            raise NotFound(what, "not in any fallback upstream")
        raise UpstreamUnavailable(what, "; ".join(errors) or "no fallback upstream")

    def current(self) -> BlobSource:
        """The source the next byte range would come from, without asking a breaker for a
        probe (for sizing a download's connections)."""
        if self.primary.breaker.state == "closed" or not self.fallbacks:
            return self.primary
        for source in self.fallbacks:
            if source.breaker.state == "closed":
                return source
        return self.primary

    def pick(self, what: str) -> BlobSource:
        """The source to open the next byte range from: the primary while its circuit lets
        a request through, else the first fallback whose circuit does. Record the outcome
        on its breaker."""
        if self.primary.breaker.allow() or not self.fallbacks:
            return self.primary
        for source in self.fallbacks:
            if source.breaker.allow():
                return source
        raise UpstreamUnavailable(what, "every source's circuit is open")
