"""Static bearer tokens for CI and scripts: a file of ``NAME:TOKEN`` lines.

::

    # who:token (openssl rand -hex 32)
    ci:4f3c2a...
    release:9b1e77...

>>> tokens = StaticTokens.parse("ci:" + "x" * 32)
>>> tokens.lookup("x" * 32)
'ci'
>>> tokens.lookup("guess") is None
True

A token stands for its NAME (which ``auth.writers`` may list); one name may have several
tokens, so a token can be rotated without downtime. Tokens are kept only as SHA-256 digests
and a lookup compares the candidate's digest with every entry in constant time, without
stopping at a match: neither the position nor a prefix of a token leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from regsidecar.config import read_config_text
from regsidecar.errors import ConfigError

KEY: Final = "auth.tokens"
# 16 characters of a random hex string are 64 bits: the least worth calling a secret.
MIN_TOKEN_CHARS: Final = 16


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class StaticTokens:
    """Token digests and the names they stand for."""

    def __init__(self, entries: list[tuple[bytes, str]]) -> None:
        self._entries = entries

    @classmethod
    def load(cls, path: str) -> StaticTokens:
        return cls.parse(read_config_text(KEY, path), path)

    @classmethod
    def parse(cls, text: str, source: str = "tokens") -> StaticTokens:
        """``NAME:TOKEN`` lines; blank lines and ``#`` comments are skipped."""
        entries: list[tuple[bytes, str]] = []
        seen: set[bytes] = set()
        for number, raw in enumerate(text.split("\n"), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{source}:{number}"
            name, sep, token = line.partition(":")
            name, token = name.strip(), token.strip()
            if not sep or not name:
                raise ConfigError(KEY, f"{where}: expected NAME:TOKEN")
            if len(token) < MIN_TOKEN_CHARS:
                raise ConfigError(
                    KEY, f"{where}: the token of {name!r} is shorter than {MIN_TOKEN_CHARS}"
                )
            digest = _digest(token)
            if digest in seen:
                raise ConfigError(KEY, f"{where}: the token of {name!r} is used twice")
            seen.add(digest)
            entries.append((digest, name))
        return cls(entries)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for _, name in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, token: str) -> str | None:
        """The name ``token`` stands for, or None."""
        candidate = _digest(token)
        found: str | None = None
        for digest, name in self._entries:
            # Every entry is compared, match or not, so the time does not depend on where
            # (or whether) the token is in the file.
            if hmac.compare_digest(digest, candidate):
                found = name
        return found
