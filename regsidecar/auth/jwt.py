"""HS256 JSON Web Tokens, as the token endpoint issues them and every API request presents them.

Pure: the key is passed in and the time is injected; reading or creating the key file is
:mod:`regsidecar.auth.policy`'s business.

>>> key = bytes(32)
>>> claims = make_claims("regsidecar", "ci", "regsidecar", [], ttl_s=300, now=1_800_000_000)
>>> verify(sign(claims, key), key, audience="regsidecar", now=1_800_000_100)["sub"]
'ci'

Only ``HS256`` is accepted, compared exactly: a token whose header says ``none`` or anything
else is refused before its signature is looked at, so no header can choose how it is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

ALGORITHM: Final = "HS256"
HEADER: Final = {"alg": ALGORITHM, "typ": "JWT"}
# Clocks of the sidecar and of whoever checks the token differ a little; so may a restart's.
LEEWAY_S: Final = 30.0
# Far above any token this registry issues (64 scopes); anything longer is not worth parsing.
MAX_TOKEN_BYTES: Final = 16 * 1024
KEY_BYTES: Final = 32

_B64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class TokenError(Exception):
    """The token is not one this registry accepts; the message says why (never the token)."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(part: str) -> bytes:
    raw = part.encode("ascii")
    if not raw or not set(raw) <= _B64URL:
        raise TokenError("malformed token")
    try:
        return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenError("malformed token") from exc


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise TokenError("malformed token") from exc
    if not isinstance(value, dict):
        raise TokenError("malformed token")
    return value


def _mac(key: bytes, signing_input: bytes) -> bytes:
    return hmac.new(key, signing_input, hashlib.sha256).digest()


def sign(claims: Mapping[str, Any], key: bytes) -> str:
    """``header.payload.signature``, compact JSON, base64url without padding."""
    header = _b64encode(json.dumps(HEADER, separators=(",", ":")).encode())
    payload = _b64encode(json.dumps(dict(claims), separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    return f"{header}.{payload}.{_b64encode(_mac(key, signing_input))}"


def make_claims(
    issuer: str,
    subject: str,
    audience: str,
    access: Sequence[Mapping[str, Any]],
    *,
    ttl_s: float,
    now: float,
    jti: Callable[[], str] = lambda: secrets.token_urlsafe(16),
) -> dict[str, Any]:
    """The registered claims plus Docker's ``access`` list; ``subject`` "" is anonymous."""
    issued = int(now)
    return {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "exp": issued + int(ttl_s),
        "nbf": issued,
        "iat": issued,
        "jti": jti(),
        "access": [dict(a) for a in access],
    }


def _number(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenError(f"token has no valid {name!r} claim")
    return float(value)


def verify(
    token: str,
    key: bytes,
    *,
    audience: str,
    now: float,
    issuer: str | None = None,
    leeway_s: float = LEEWAY_S,
) -> dict[str, Any]:
    """The claims of a token this key signed for ``audience``, valid at ``now``; else
    :class:`TokenError`."""
    if len(token) > MAX_TOKEN_BYTES:
        raise TokenError("token too long")
    if not token.isascii():
        raise TokenError("malformed token")
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed token")
    header = _json_object(_b64decode(parts[0]))
    if header.get("alg") != ALGORITHM:
        raise TokenError("unsupported token algorithm")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    if not hmac.compare_digest(_mac(key, signing_input), _b64decode(parts[2])):
        raise TokenError("bad token signature")
    claims = _json_object(_b64decode(parts[1]))
    exp = _number(claims, "exp", required=True)
    assert exp is not None
    if now > exp + leeway_s:
        raise TokenError("token expired")
    nbf = _number(claims, "nbf", required=False)
    if nbf is not None and now + leeway_s < nbf:
        raise TokenError("token not valid yet")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise TokenError("token is for another service")
    if issuer is not None and claims.get("iss") != issuer:
        raise TokenError("token from another issuer")
    return claims


def rfc3339(when: float) -> str:
    """``2027-01-15T08:00:00Z``: the form of the token response's ``issued_at``."""
    return datetime.fromtimestamp(int(when), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
