"""Who is asking (:class:`Identity`) and what they may do (:class:`Authenticator`).

>>> auth = Authenticator.from_settings(settings)  # doctest: +SKIP
>>> who = await auth.identify(request.headers.get("Authorization"), realm=realm)  # doctest: +SKIP
>>> auth.allows(who, "team/app", "push")  # doctest: +SKIP
False

The rules::

    pull          anyone; anonymous clients only if auth.anonymous_pull
    push, delete  a named identity listed in auth.writers (an empty list: every name)
    issued token  only what it grants, and never more than its name may do today

Credentials come as ``Basic`` (an htpasswd user, or any user name with a static token as the
password), as ``Bearer`` with a static token, or as ``Bearer`` with a token the endpoint in
:mod:`regsidecar.api.auth` issued (Docker's token flow). Issued tokens are HS256 JWTs signed
with 32 random bytes kept at ``<data_dir>/auth/token.key`` (mode 0600), so they outlive a
restart. A token's name is checked against the files again when it is used: removing a user or
a writer takes effect at once, not when the token expires.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

from regsidecar.auth import jwt
from regsidecar.auth.htpasswd import Htpasswd
from regsidecar.auth.scopes import Action, Scope
from regsidecar.auth.statictokens import StaticTokens
from regsidecar.config import AuthSettings, Settings
from regsidecar.errors import ConfigError, Unauthorized

log = logging.getLogger(__name__)

ISSUER: Final = "regsidecar"
KEY_FILE: Final = os.path.join("auth", "token.key")
# User names are logged on failure; a client chooses them, so they are bounded.
_LOGGED_NAME_CHARS: Final = 100


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller of one request.

    ``name`` None is anonymous; ``grants`` None means the full rights of ``name``, a set holds
    the (repository, action) pairs an issued token grants.

    >>> Identity("ci", "static-token").name
    'ci'
    """

    name: str | None
    via: Literal["anonymous", "basic", "static-token", "token"]
    grants: frozenset[tuple[str, str]] | None = None


ANONYMOUS: Final = Identity(None, "anonymous")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def load_or_create_key(path: str) -> bytes:
    """The token signing key at ``path``, created (32 random bytes, mode 0600) if absent."""
    try:
        return _read_key(path)
    except FileNotFoundError:
        pass
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        tmp = f"{path}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(jwt.KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            # link() fails if the name exists: two sidecars starting together keep one key.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
        return _read_key(path)
    except OSError as exc:
        raise ConfigError("data_dir", f"cannot create {path}: {exc.strerror}") from exc


def _read_key(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        key = f.read(jwt.KEY_BYTES + 1)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Whoever can read the key can mint tokens with push rights.
        raise ConfigError("data_dir", f"{path} is readable by others: chmod 600 it")
    if len(key) != jwt.KEY_BYTES:
        raise ConfigError("data_dir", f"{path} is not a {jwt.KEY_BYTES}-byte key; remove it")
    return key


class Authenticator:
    """Checks credentials, decides access, and issues tokens for one sidecar.

    >>> auth = Authenticator(AuthSettings(tokens="t"), tokens=StaticTokens.parse("ci:" + "x" * 16),
    ...                      key=bytes(32))
    >>> auth.allows(Identity("ci", "static-token"), "team/app", "push")
    True
    """

    def __init__(
        self,
        settings: AuthSettings,
        *,
        key: bytes,
        htpasswd: Htpasswd | None = None,
        tokens: StaticTokens | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._key = key
        self._htpasswd = htpasswd
        self._tokens = tokens
        self._now = now
        self._writers = frozenset(settings.writers)
        users = htpasswd.users if htpasswd else frozenset()
        self._names = users | (tokens.names if tokens else frozenset())

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator | None:
        """None when neither ``auth.htpasswd`` nor ``auth.tokens`` is set (read-only)."""
        auth = settings.auth
        if not auth.enabled:
            return None
        htpasswd = Htpasswd.load(auth.htpasswd) if auth.htpasswd else None
        tokens = StaticTokens.load(auth.tokens) if auth.tokens else None
        key = load_or_create_key(os.path.join(settings.data_dir, KEY_FILE))
        authenticator = cls(auth, key=key, htpasswd=htpasswd, tokens=tokens)
        unknown = authenticator._writers - authenticator.names
        if unknown:
            log.warning("auth.writers names no user or token", extra={"names": sorted(unknown)})
        return authenticator

    @property
    def names(self) -> frozenset[str]:
        """Every name an identity can have: htpasswd users and static token names."""
        return self._names

    # -- who ------------------------------------------------------------------------------------

    async def identify(self, authorization: str | None, *, realm: str = "") -> Identity:
        """The identity an ``Authorization`` header proves; no header is anonymous.

        Bad credentials raise :class:`Unauthorized`, carrying the challenge for ``realm``
        (``auth.realm`` if set, else the ``realm`` given)."""
        if authorization is None:
            return ANONYMOUS
        scheme, _, credentials = authorization.strip().partition(" ")
        credentials = credentials.strip()
        scheme = scheme.lower()
        if scheme == "basic":
            return await self._basic(credentials, realm)
        if scheme == "bearer":
            return self._bearer(credentials, realm)
        log.info("authentication failed", extra={"reason": "unsupported scheme"})
        raise self._unauthorized("unsupported authorization scheme", realm)

    async def _basic(self, credentials: str, realm: str) -> Identity:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            log.info("authentication failed", extra={"reason": "malformed basic credentials"})
            raise self._unauthorized("malformed basic credentials", realm) from None
        user, sep, password = decoded.partition(":")
        if not sep:
            log.info("authentication failed", extra={"reason": "malformed basic credentials"})
            raise self._unauthorized("malformed basic credentials", realm)
        return await self.login(user, password, realm=realm)

    async def login(self, user: str, password: str, *, realm: str = "") -> Identity:
        """The identity a user name and password prove (the password may be a static token,
        whatever the user name); else :class:`Unauthorized`."""
        # A static token first: it is cheap, and a CI job sending one as a password on every
        # request should not pay a bcrypt check (~100 ms) each time.
        name = self._tokens.lookup(password) if self._tokens is not None else None
        if name is not None:
            return Identity(name, "static-token")
        if user and self._htpasswd is not None and await self._htpasswd.verify(user, password):
            return Identity(user, "basic")
        log.info(
            "authentication failed",
            extra={"user": user[:_LOGGED_NAME_CHARS], "reason": "bad user name or password"},
        )
        raise self._unauthorized("bad user name or password", realm)

    def _bearer(self, token: str, realm: str) -> Identity:
        name = self._tokens.lookup(token) if self._tokens is not None and token else None
        if name is not None:
            return Identity(name, "static-token")
        try:
            claims = jwt.verify(
                token,
                self._key,
                audience=self.settings.service,
                issuer=ISSUER,
                now=self._now(),
            )
            identity = self._token_identity(claims)
        except jwt.TokenError as exc:
            log.info("authentication failed", extra={"reason": str(exc)})
            raise self._unauthorized(str(exc), realm, error="invalid_token") from None
        return identity

    def _token_identity(self, claims: dict[str, Any]) -> Identity:
        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise jwt.TokenError("token has no subject")
        if sub and sub not in self.names:
            raise jwt.TokenError("token for a name that no longer exists")
        grants: set[tuple[str, str]] = set()
        access = claims.get("access")
        for entry in access if isinstance(access, list) else []:
            if not isinstance(entry, dict) or entry.get("type") != "repository":
                continue
            name, actions = entry.get("name"), entry.get("actions")
            if isinstance(name, str) and isinstance(actions, list):
                grants.update((name, a) for a in actions if a in ("pull", "push", "delete"))
        return Identity(sub or None, "token", frozenset(grants))

    def _unauthorized(self, message: str, realm: str, *, error: str | None = None) -> Unauthorized:
        return Unauthorized(message, challenge=self.challenge(realm, error=error))

    # -- what -----------------------------------------------------------------------------------

    def allows(self, identity: Identity, repository: str | None, action: Action) -> bool:
        """Whether ``identity`` may ``action`` ``repository`` (None: the registry as a whole,
        which an issued token never holds push or delete on)."""
        if action == "pull":
            # A token never holds less than no token at all: with anonymous pulls on, every
            # caller may pull (a mount's ``from`` outside the token's scope included).
            if self.settings.anonymous_pull:
                return True
            if identity.name is None:
                return False
            if identity.grants is not None and repository is not None:
                return (repository, "pull") in identity.grants
            return True
        if identity.name is None:
            return False
        if self._writers and identity.name not in self._writers:
            return False
        if identity.grants is not None:
            return repository is not None and (repository, action) in identity.grants
        return True

    def may_pull_everything(self, identity: Identity) -> bool:
        """Whether ``identity`` may pull every repository: anonymous pulls on, or a user or
        static token (a token issued for a scope holds only that scope)."""
        if self.settings.anonymous_pull:
            return True
        return identity.name is not None and identity.grants is None

    def may_write_somewhere(self, identity: Identity) -> bool:
        """Whether ``identity`` could push to any repository at all: a writer, or a token
        that grants push somewhere (what a caller must be before its request body is read)."""
        if identity.name is None:
            return False
        if self._writers and identity.name not in self._writers:
            return False
        if identity.grants is not None:
            return any(action == "push" for _, action in identity.grants)
        return True

    def challenge(self, realm: str, scope: str | None = None, error: str | None = None) -> str:
        """``WWW-Authenticate`` for Docker's token flow; ``auth.realm`` overrides ``realm``."""
        parts = [
            f"realm={_quote(self.settings.realm or realm)}",
            f"service={_quote(self.settings.service)}",
        ]
        if scope:
            parts.append(f"scope={_quote(scope)}")
        if error:
            parts.append(f"error={_quote(error)}")
        return "Bearer " + ",".join(parts)

    def issue(self, identity: Identity, requested_scopes: Iterable[Scope]) -> dict[str, Any]:
        """A token granting what was asked and is allowed, as the token endpoint answers it."""
        access: dict[tuple[str, str, str], list[str]] = {}
        for scope in requested_scopes:
            if scope.type == "registry":
                # Listing the registry is a read of the registry as a whole.
                granted = ["*"] if self.allows(identity, None, "pull") else []
            else:
                granted = [
                    a for a in ("pull", "push", "delete")
                    if a in scope.expanded() and self.allows(identity, scope.name, a)
                ]  # fmt: skip
            if granted:
                entry = access.setdefault((scope.type, scope.name, scope.resource_class), [])
                entry.extend(a for a in granted if a not in entry)
        now = self._now()
        ttl = self.settings.token_ttl_s
        claims = jwt.make_claims(
            ISSUER,
            identity.name or "",
            self.settings.service,
            [
                {"type": kind, "name": name, "actions": actions}
                | ({"class": resource_class} if resource_class else {})
                for (kind, name, resource_class), actions in access.items()
            ],
            ttl_s=ttl,
            now=now,
        )
        token = jwt.sign(claims, self._key)
        return {
            "token": token,
            "access_token": token,
            "expires_in": int(ttl),
            "issued_at": jwt.rfc3339(now),
        }


def without_grants(identity: Identity) -> Identity:
    """The identity with the full rights of its name (what a fresh token could hold)."""
    return dataclasses.replace(identity, grants=None)
