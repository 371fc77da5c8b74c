"""HS256 tokens: what verifies, and every way a token is refused (time is injected)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from regsidecar.auth import jwt

KEY = b"k" * 32
NOW = 1_800_000_000.0


def _claims(**overrides: Any) -> dict[str, Any]:
    claims = jwt.make_claims(
        "regsidecar",
        "ci",
        "regsidecar",
        [{"type": "repository", "name": "a", "actions": ["pull"]}],
        ttl_s=300,
        now=NOW,
        jti=lambda: "id",
    )
    claims.update(overrides)
    return claims


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _verify(token: str, now: float = NOW, **kw: Any) -> dict[str, Any]:
    kw.setdefault("audience", "regsidecar")
    return jwt.verify(token, KEY, now=now, **kw)


def test_a_signed_token_verifies_and_carries_its_claims() -> None:
    claims = _verify(jwt.sign(_claims(), KEY), issuer="regsidecar")
    assert claims["sub"] == "ci"
    assert claims["access"] == [{"type": "repository", "name": "a", "actions": ["pull"]}]
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (NOW, NOW, NOW + 300)


def test_the_header_is_hs256_jwt() -> None:
    header = jwt.sign(_claims(), KEY).split(".")[0]
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == {"alg": "HS256", "typ": "JWT"}


def test_expiry_is_honoured_after_the_leeway() -> None:
    token = jwt.sign(_claims(), KEY)
    _verify(token, now=NOW + 300 + jwt.LEEWAY_S)  # within the leeway
    with pytest.raises(jwt.TokenError, match="expired"):
        _verify(token, now=NOW + 300 + jwt.LEEWAY_S + 1)


def test_not_before_is_honoured_with_the_leeway() -> None:
    token = jwt.sign(_claims(nbf=NOW + 100), KEY)
    _verify(token, now=NOW + 100 - jwt.LEEWAY_S)
    with pytest.raises(jwt.TokenError, match="not valid yet"):
        _verify(token, now=NOW + 100 - jwt.LEEWAY_S - 1)


def test_a_tampered_payload_fails_the_signature() -> None:
    header, _, signature = jwt.sign(_claims(), KEY).split(".")
    forged = _b64(_claims(sub="admin"))
    with pytest.raises(jwt.TokenError, match="signature"):
        _verify(f"{header}.{forged}.{signature}")


def test_another_key_fails_the_signature() -> None:
    with pytest.raises(jwt.TokenError, match="signature"):
        _verify(jwt.sign(_claims(), b"o" * 32))


@pytest.mark.parametrize("alg", ["none", "None", "HS512", "RS256", "hs256", ""])
def test_any_algorithm_but_hs256_is_refused(alg: str) -> None:
    _, payload, signature = jwt.sign(_claims(), KEY).split(".")
    header = _b64({"alg": alg, "typ": "JWT"})
    with pytest.raises(jwt.TokenError, match="algorithm"):
        _verify(f"{header}.{payload}.{signature}")
    with pytest.raises(jwt.TokenError):
        _verify(f"{header}.{payload}.")


def test_a_token_for_another_audience_is_refused() -> None:
    token = jwt.sign(_claims(aud="elsewhere"), KEY)
    with pytest.raises(jwt.TokenError, match="another service"):
        _verify(token)


def test_an_audience_list_is_accepted_if_it_names_the_service() -> None:
    _verify(jwt.sign(_claims(aud=["x", "regsidecar"]), KEY))


def test_another_issuer_is_refused_when_one_is_expected() -> None:
    with pytest.raises(jwt.TokenError, match="issuer"):
        _verify(jwt.sign(_claims(iss="other"), KEY), issuer="regsidecar")


@pytest.mark.parametrize("exp", [None, "soon", True])
def test_a_token_without_a_numeric_expiry_is_refused(exp: Any) -> None:
    claims = _claims(exp=exp)
    with pytest.raises(jwt.TokenError, match="exp"):
        _verify(jwt.sign(claims, KEY))


@pytest.mark.parametrize(
    "token",
    ["", "a.b", "a.b.c.d", "!!.e30.x", "é.é.é", "e30.e30.e30", "W10.e30.e30", "x" * 20000],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(jwt.TokenError):
        _verify(token)


def test_issued_at_is_rfc3339_utc() -> None:
    assert jwt.rfc3339(0) == "1970-01-01T00:00:00Z"
