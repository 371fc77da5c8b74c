"""What the rig's S3 servers (moto, s3rver) share about their request logs."""

from __future__ import annotations

from collections.abc import Sequence


class S3Path:
    """Path-style S3 accessors for a logged request record with a ``path`` (incl. query)."""

    path: str
    method: str
    status: int

    @property
    def path_only(self) -> str:
        """The path without the query string."""
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.path.split("?", 1)[1] if "?" in self.path else ""

    @property
    def bucket(self) -> str:
        return self.path_only.lstrip("/").split("/", 1)[0]

    @property
    def key(self) -> str:
        """Object key (path style: /BUCKET/KEY); '' for bucket-level requests."""
        parts = self.path_only.lstrip("/").split("/", 1)
        return parts[1] if len(parts) == 2 else ""


class RequestCounter:
    """``mark()`` / ``count()`` over a server's ``requests(since=)`` log."""

    def requests(self, *, since: int = 0) -> Sequence[S3Path]:
        raise NotImplementedError

    def mark(self) -> int:
        """Number of requests so far; pass it as ``since=`` to count only later ones."""
        return len(self.requests())

    def count(
        self,
        method: str | None = None,
        path_substring: str = "",
        *,
        key: str | None = None,
        status: int | None = None,
        since: int = 0,
    ) -> int:
        """How many logged requests match all of: method (None: any), a substring
        of the path *including* the query string, the exact object ``key``
        (object requests only, not e.g. a ``?prefix=KEY`` listing), ``status``.
        """
        return sum(
            1
            for r in self.requests(since=since)
            if (method is None or r.method == method.upper())
            and path_substring in r.path
            and (key is None or r.key == key)
            and (status is None or r.status == status)
        )
