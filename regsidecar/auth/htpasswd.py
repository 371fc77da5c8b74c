"""Users and bcrypt password hashes from an htpasswd file (``htpasswd -B``).

>>> users = Htpasswd.load("/etc/regsidecar/htpasswd")  # doctest: +SKIP
>>> await users.verify("ci", "s3cret")  # doctest: +SKIP
True

Only bcrypt entries (``$2y$``, ``$2b$``, ``$2a$``) are accepted: MD5 (``$apr1$``), SHA-1 and
crypt hashes are fast to brute-force, and a file holding one is refused at load time, naming
the line (never the hash). bcrypt is slow on purpose (about 100 ms at cost 10), so checks run
in a worker thread and a success is remembered for a minute, keyed by an HMAC under a
per-process random key: the cache never holds a password, nor anything a stolen memory image
could test guesses against offline without that key.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

import bcrypt
from cachetools import TTLCache

from regsidecar.config import read_config_text
from regsidecar.errors import ConfigError

KEY: Final = "auth.htpasswd"
CACHE_TTL_S: Final = 60.0
CACHE_SIZE: Final = 4096
# bcrypt reads only the first 72 bytes of a password; htpasswd hashes longer ones that way,
# while python's bcrypt refuses them, so they are cut the same way before checking.
BCRYPT_MAX_BYTES: Final = 72

_BCRYPT_RE = re.compile(r"\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}")
# Recognised only to say which scheme a refused line uses.
_SCHEMES = (
    ("$apr1$", "MD5 (apr1)"),
    ("$1$", "MD5-crypt"),
    ("$5$", "SHA-256-crypt"),
    ("$6$", "SHA-512-crypt"),
    ("{SHA}", "SHA-1"),
    ("$2", "a malformed bcrypt hash"),
)


def _scheme(hash_text: str) -> str:
    for prefix, name in _SCHEMES:
        if hash_text.startswith(prefix):
            return name
    return "crypt or plain text"


def _password_bytes(password: str) -> bytes:
    return password.encode("utf-8", "surrogateescape")[:BCRYPT_MAX_BYTES]


class Htpasswd:
    """The users of one htpasswd file. ``now`` is the cache's clock (tests move it)."""

    def __init__(
        self, hashes: dict[str, bytes], *, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._hashes = hashes
        self._cache: TTLCache[bytes, bool] = TTLCache(CACHE_SIZE, CACHE_TTL_S, timer=now)
        self._cache_key = secrets.token_bytes(32)
        # Unknown users are checked against this, so that a wrong name costs as long as a
        # wrong password and timing does not tell which names exist. Same cost as most entries.
        costs = Counter(int(h[4:6]) for h in hashes.values())
        cost = costs.most_common(1)[0][0] if costs else 10
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))

    @classmethod
    def load(cls, path: str, *, now: Callable[[], float] = time.monotonic) -> Htpasswd:
        return cls.parse(read_config_text(KEY, path), path, now=now)

    @classmethod
    def parse(
        cls, text: str, source: str = "htpasswd", *, now: Callable[[], float] = time.monotonic
    ) -> Htpasswd:
        """``USER:HASH`` lines; blank lines and ``#`` comments are skipped."""
        hashes: dict[str, bytes] = {}
        for number, raw in enumerate(text.split("\n"), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            where = f"{source}:{number}"
            user, sep, hash_text = line.partition(":")
            if not sep or not user:
                raise ConfigError(KEY, f"{where}: expected USER:HASH")
            if user in hashes:
                raise ConfigError(KEY, f"{where}: user {user!r} appears twice")
            m = _BCRYPT_RE.fullmatch(hash_text)
            if m is None or not 4 <= int(m.group(1)) <= 31:
                raise ConfigError(
                    KEY,
                    f"{where}: user {user!r} has {_scheme(hash_text)}; only bcrypt is "
                    "accepted (htpasswd -B)",
                )
            hashes[user] = hash_text.encode("ascii")
        return cls(hashes, now=now)

    @property
    def users(self) -> frozenset[str]:
        return frozenset(self._hashes)

    def __contains__(self, user: object) -> bool:
        return user in self._hashes

    def _cache_id(self, user: str, password: str) -> bytes:
        # Length-prefixed, so no (user, password) pair can collide with another.
        data = f"{len(user)}:{user}:{password}".encode("utf-8", "surrogateescape")
        return hmac.new(self._cache_key, data, hashlib.sha256).digest()

    async def verify(self, user: str, password: str) -> bool:
        """Whether ``password`` is ``user``'s. Unknown users cost one bcrypt check too."""
        cache_id = self._cache_id(user, password)
        if self._cache.get(cache_id):
            return True
        stored = self._hashes.get(user)
        candidate = _password_bytes(password)
        ok = await asyncio.to_thread(bcrypt.checkpw, candidate, stored or self._dummy)
        if ok and stored is not None:
            self._cache[cache_id] = True
            return True
        return False
