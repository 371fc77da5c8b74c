"""The access rules, challenges, credentials and issued tokens of one Authenticator."""

from __future__ import annotations

import base64
import os
import stat
import time
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from regsidecar.auth import jwt
from regsidecar.auth.htpasswd import Htpasswd
from regsidecar.auth.policy import (
    ANONYMOUS,
    KEY_FILE,
    Authenticator,
    Identity,
    load_or_create_key,
    without_grants,
)
from regsidecar.auth.scopes import parse_scopes
from regsidecar.auth.statictokens import StaticTokens
from regsidecar.config import AuthSettings, Settings
from regsidecar.errors import ConfigError, Unauthorized

KEY = b"k" * 32
CI_TOKEN = "t" * 32
NOW = 1_800_000_000.0
HTPASSWD = "\n".join(
    f"{user}:{bcrypt.hashpw(pw, bcrypt.gensalt(4)).decode()}"
    for user, pw in [("writer", b"wpw"), ("reader", b"rpw")]
)


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


def _auth(clock: Clock | None = None, **settings: Any) -> Authenticator:
    settings.setdefault("writers", ["writer", "ci"])
    return Authenticator(
        AuthSettings(htpasswd="h", tokens="t", **settings),
        key=KEY,
        htpasswd=Htpasswd.parse(HTPASSWD),
        tokens=StaticTokens.parse(f"ci:{CI_TOKEN}"),
        now=clock or Clock(),
    )


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


WRITER = Identity("writer", "basic")
READER = Identity("reader", "basic")
ANON_TOKEN = Identity(None, "token", frozenset({("a", "pull")}))
WRITER_TOKEN = Identity("writer", "token", frozenset({("a", "pull"), ("a", "push")}))


@pytest.mark.parametrize(
    ("identity", "repository", "action", "anonymous_pull", "allowed"),
    [
        (ANONYMOUS, "a", "pull", True, True),
        (ANONYMOUS, "a", "pull", False, False),
        (ANONYMOUS, "a", "push", True, False),
        (ANONYMOUS, "a", "delete", True, False),
        (ANONYMOUS, None, "pull", True, True),
        (ANONYMOUS, None, "pull", False, False),
        (READER, "a", "pull", False, True),
        (READER, "a", "push", True, False),
        (READER, "a", "delete", True, False),
        (WRITER, "a", "push", True, True),
        (WRITER, "a", "delete", True, True),
        (WRITER, None, "push", True, True),
        (Identity("ci", "static-token"), "a", "push", True, True),
        (ANON_TOKEN, "a", "pull", True, True),
        (ANON_TOKEN, "a", "pull", False, False),  # anonymous_pull turned off since issue
        (ANON_TOKEN, "b", "pull", True, True),  # not granted, but anyone may pull
        (ANON_TOKEN, "b", "pull", False, False),  # not granted, and pulls need a login
        (Identity("reader", "token", frozenset({("a", "pull")})), "b", "pull", False, False),
        (Identity("reader", "token", frozenset({("a", "pull")})), "a", "pull", False, True),
        (ANON_TOKEN, None, "pull", True, True),
        (WRITER_TOKEN, "a", "push", True, True),
        (WRITER_TOKEN, "a", "delete", True, False),  # not granted
        (WRITER_TOKEN, "b", "push", True, False),
        (WRITER_TOKEN, None, "push", True, False),
        (Identity("reader", "token", frozenset({("a", "push")})), "a", "push", True, False),
    ],
)
def test_allows(
    identity: Identity, repository: str | None, action: Any, anonymous_pull: bool, allowed: bool
) -> None:
    auth = _auth(anonymous_pull=anonymous_pull)
    assert auth.allows(identity, repository, action) is allowed


def test_an_empty_writers_list_lets_every_name_write_but_not_anonymous() -> None:
    auth = _auth(writers=[])
    assert auth.allows(READER, "a", "push")
    assert not auth.allows(ANONYMOUS, "a", "push")


def test_without_grants_gives_the_full_rights_of_the_name() -> None:
    assert without_grants(WRITER_TOKEN) == Identity("writer", "token", None)


def test_challenge_strings() -> None:
    auth = _auth()
    realm = "http://127.0.0.1:5000/-/token"
    assert auth.challenge(realm) == f'Bearer realm="{realm}",service="regsidecar"'
    assert auth.challenge(realm, "repository:a:push", "insufficient_scope") == (
        f'Bearer realm="{realm}",service="regsidecar",scope="repository:a:push",'
        'error="insufficient_scope"'
    )


def test_challenge_uses_the_configured_realm_and_quotes_values() -> None:
    auth = _auth(realm="https://reg.example/-/token", service='odd "name"')
    assert auth.challenge("http://ignored") == (
        'Bearer realm="https://reg.example/-/token",service="odd \\"name\\""'
    )


async def test_no_header_is_anonymous() -> None:
    assert await _auth().identify(None) is ANONYMOUS


@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC", "  Basic  "])
async def test_basic_credentials_of_an_htpasswd_user(scheme: str) -> None:
    header = _basic("writer", "wpw").replace("Basic ", scheme + "  ")
    assert await _auth().identify(header) == Identity("writer", "basic")


@pytest.mark.parametrize("user", ["ci", "anyone", "writer", ""])
async def test_a_static_token_as_a_basic_password_is_its_name_whatever_the_user(
    user: str,
) -> None:
    assert await _auth().identify(_basic(user, CI_TOKEN)) == Identity("ci", "static-token")


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", " BEARER "])
async def test_a_static_token_as_bearer(scheme: str) -> None:
    identity = await _auth().identify(f"{scheme}  {CI_TOKEN} ")
    assert identity == Identity("ci", "static-token")


@pytest.mark.parametrize(
    "header",
    [
        _basic("writer", "nope"),
        _basic("nobody", "wpw"),
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
        "Basic",
        "Bearer",
        "Bearer nope",
        "Bearer a.b.c",
        "Digest username=x",
        "",
        _basic("writer", "wpw").replace(" ", "\t"),
    ],
)
async def test_bad_credentials_are_unauthorized_with_the_challenge(header: str) -> None:
    with pytest.raises(Unauthorized) as err:
        await _auth().identify(header, realm="http://h/-/token")
    challenge = err.value.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="http://h/-/token",service="regsidecar"')


async def test_failures_log_the_user_name_but_never_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="regsidecar.auth.policy")
    with pytest.raises(Unauthorized):
        await _auth().identify(_basic("writer", "hunter2-secret"))
    with pytest.raises(Unauthorized):
        await _auth().identify("Bearer my-secret-token")
    records = [r for r in caplog.records if r.name == "regsidecar.auth.policy"]
    assert [getattr(r, "user", None) for r in records] == ["writer", None]
    text = " ".join(str(r.__dict__) for r in records)
    assert "hunter2" not in text and "my-secret-token" not in text


def _token_claims(auth: Authenticator, token: str) -> dict[str, Any]:
    return jwt.verify(token, KEY, audience="regsidecar", now=NOW)


def test_issue_grants_what_was_asked_and_is_allowed() -> None:
    auth = _auth()
    scopes = parse_scopes(["repository:a:pull,push", "repository:b:*", "registry:catalog:*"])
    body = auth.issue(READER, scopes)
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert body["issued_at"] == jwt.rfc3339(NOW)
    claims = _token_claims(auth, body["token"])
    assert claims["sub"] == "reader"
    assert claims["access"] == [
        {"type": "repository", "name": "a", "actions": ["pull"]},
        {"type": "repository", "name": "b", "actions": ["pull"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    writer = _token_claims(auth, auth.issue(WRITER, scopes)["token"])
    assert writer["access"][:2] == [
        {"type": "repository", "name": "a", "actions": ["pull", "push"]},
        {"type": "repository", "name": "b", "actions": ["pull", "push", "delete"]},
    ]


def test_anonymous_tokens_grant_pull_only_and_nothing_without_anonymous_pull() -> None:
    scopes = parse_scopes(["repository:a:pull,push"])
    claims = _token_claims(_auth(), _auth().issue(ANONYMOUS, scopes)["token"])
    assert claims["sub"] == ""
    assert claims["access"] == [{"type": "repository", "name": "a", "actions": ["pull"]}]
    closed = _auth(anonymous_pull=False)
    assert _token_claims(closed, closed.issue(ANONYMOUS, scopes)["token"])["access"] == []


def test_a_resource_class_is_carried_into_the_token() -> None:
    auth = _auth()
    token = auth.issue(WRITER, parse_scopes(["repository(plugin):a:pull"]))["token"]
    assert _token_claims(auth, token)["access"] == [
        {"type": "repository", "name": "a", "actions": ["pull"], "class": "plugin"}
    ]


async def test_an_issued_token_identifies_with_its_grants_until_it_expires() -> None:
    clock = Clock()
    auth = _auth(clock)
    token = auth.issue(WRITER, parse_scopes(["repository:a:pull,push"]))["token"]
    identity = await auth.identify(f"Bearer {token}")
    assert identity == Identity("writer", "token", frozenset({("a", "pull"), ("a", "push")}))
    clock.t += 300 + jwt.LEEWAY_S + 1
    with pytest.raises(Unauthorized) as err:
        await auth.identify(f"Bearer {token}")
    assert 'error="invalid_token"' in err.value.headers["WWW-Authenticate"]


async def test_an_anonymous_token_identifies_as_no_one() -> None:
    auth = _auth()
    token = auth.issue(ANONYMOUS, parse_scopes(["repository:a:pull"]))["token"]
    assert await auth.identify(f"Bearer {token}") == ANON_TOKEN


async def test_a_token_of_a_name_no_longer_in_the_files_is_refused() -> None:
    auth = _auth()
    token = auth.issue(Identity("gone", "basic"), [])["token"]
    with pytest.raises(Unauthorized):
        await auth.identify(f"Bearer {token}")


async def test_a_token_for_another_service_is_refused() -> None:
    token = _auth(service="other").issue(WRITER, [])["token"]
    with pytest.raises(Unauthorized):
        await _auth().identify(f"Bearer {token}")


def test_the_signing_key_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = str(tmp_path / KEY_FILE)
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert load_or_create_key(path) == key
    assert os.listdir(os.path.dirname(path)) == ["token.key"]


def test_a_key_readable_by_others_or_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    path.write_bytes(b"k" * 32)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_key(str(path))
    path.write_bytes(b"short")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="32-byte key"):
        load_or_create_key(str(path))


def test_from_settings_is_none_when_auth_is_off(tmp_path: Path) -> None:
    assert Authenticator.from_settings(Settings(data_dir=str(tmp_path))) is None
    assert not (tmp_path / "auth").exists()


def test_from_settings_reads_both_files_and_keeps_the_key(tmp_path: Path) -> None:
    (tmp_path / "htpasswd").write_text(HTPASSWD)
    (tmp_path / "tokens").write_text(f"ci:{CI_TOKEN}\n")
    settings = Settings(
        data_dir=str(tmp_path / "data"),
        auth=AuthSettings(htpasswd=str(tmp_path / "htpasswd"), tokens=str(tmp_path / "tokens")),
    )
    auth = Authenticator.from_settings(settings)
    assert auth is not None
    assert auth.names == {"writer", "reader", "ci"}
    token = auth.issue(WRITER, [])["token"]
    again = Authenticator.from_settings(settings)
    assert again is not None
    # Same key after a restart: the token still verifies.
    key = (tmp_path / "data" / KEY_FILE).read_bytes()
    jwt.verify(token, key, audience="regsidecar", now=time.time())


def test_from_settings_reports_an_unreadable_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), auth=AuthSettings(tokens=str(tmp_path / "absent")))
    with pytest.raises(ConfigError, match=r"auth\.tokens: cannot read"):
        Authenticator.from_settings(settings)


def test_from_settings_warns_of_writers_that_name_no_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "tokens").write_text(f"ci:{CI_TOKEN}\n")
    settings = Settings(
        data_dir=str(tmp_path),
        auth=AuthSettings(tokens=str(tmp_path / "tokens"), writers=["ci", "typo"]),
    )
    Authenticator.from_settings(settings)
    assert any(getattr(r, "names", None) == ["typo"] for r in caplog.records)
