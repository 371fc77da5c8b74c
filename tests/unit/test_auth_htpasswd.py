"""htpasswd files: bcrypt entries only, checked off the event loop, successes cached briefly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import bcrypt
import pytest

from regsidecar.auth.htpasswd import CACHE_TTL_S, Htpasswd
from regsidecar.errors import ConfigError

HTPASSWD_BIN = "/usr/bin/htpasswd"


def _hash(password: str, prefix: bytes = b"2b") -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4, prefix)).decode()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Records the hash of every bcrypt check made."""
    made: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        made.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return made


@pytest.mark.parametrize("prefix", [b"2a", b"2b"])
async def test_bcrypt_entries_verify(prefix: bytes) -> None:
    users = Htpasswd.parse(f"ci:{_hash('s3cret', prefix)}\n")
    assert await users.verify("ci", "s3cret")
    assert not await users.verify("ci", "S3cret")
    assert "ci" in users
    assert users.users == {"ci"}


@pytest.fixture
def binary_line() -> str:
    """``user:<hash of pass>`` as the real ``htpasswd -B`` writes it."""
    if shutil.which(HTPASSWD_BIN) is None:
        pytest.skip(f"{HTPASSWD_BIN} is not installed (apt-get install apache2-utils)")
    return subprocess.run(
        [HTPASSWD_BIN, "-Bbn", "user", "pass"], check=True, capture_output=True, text=True
    ).stdout


async def test_a_hash_made_by_the_real_htpasswd_binary_verifies(
    binary_line: str, tmp_path: Path
) -> None:
    """htpasswd -B writes $2y$ hashes; python's bcrypt must take them as they are."""
    assert binary_line.startswith("user:$2y$")
    path = tmp_path / "htpasswd"
    path.write_text(binary_line)
    users = Htpasswd.load(str(path))
    assert await users.verify("user", "pass")
    assert not await users.verify("user", "pas")


async def test_passwords_past_72_bytes_are_cut_as_htpasswd_cuts_them() -> None:
    users = Htpasswd.parse(f"u:{_hash('a' * 72)}")
    assert await users.verify("u", "a" * 80)


async def test_comments_blank_lines_and_crlf_are_accepted() -> None:
    text = f"# users\r\n\r\nci:{_hash('x')}\r\nrelease:{_hash('y')}\r\n"
    users = Htpasswd.parse(text)
    assert users.users == {"ci", "release"}
    assert await users.verify("release", "y")


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("ci:$apr1$abc$0123456789abcdef012345", "MD5 (apr1)"),
        ("ci:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
        ("ci:$6$salt$abcdef", "SHA-512-crypt"),
        ("ci:abXYZ0123456", "crypt or plain text"),
        ("ci:$2y$10$tooshort", "malformed bcrypt"),
        ("ci:$2y$03$" + "a" * 53, "malformed bcrypt"),  # cost below bcrypt's minimum
        ("ci:$2x$10$" + "a" * 53, "malformed bcrypt"),
    ],
)
def test_other_schemes_are_refused_naming_the_line_but_not_the_hash(line: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        Htpasswd.parse(f"# first\n{line}\n", "/etc/h")
    assert err.value.key == "auth.htpasswd"
    assert err.value.message.startswith("/etc/h:2: ")
    assert says in err.value.message
    assert line.partition(":")[2] not in str(err.value)


@pytest.mark.parametrize("line", ["no-colon", ":$2y$10$" + "a" * 53])
def test_a_malformed_line_is_refused(line: str) -> None:
    with pytest.raises(ConfigError, match=r"htpasswd:1: expected USER:HASH"):
        Htpasswd.parse(line)


def test_a_user_listed_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="appears twice"):
        Htpasswd.parse(f"ci:{_hash('a')}\nci:{_hash('b')}")


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Htpasswd.load(str(tmp_path / "absent"))


async def test_a_success_is_cached_for_a_minute_under_an_hmac(checks: list[bytes]) -> None:
    clock = Clock()
    users = Htpasswd.parse(f"ci:{_hash('s3cret')}", now=clock)
    assert await users.verify("ci", "s3cret")
    assert await users.verify("ci", "s3cret")
    assert len(checks) == 1
    # The cache holds digests only: neither the password nor the user name appears in it.
    keys = list(users._cache)
    assert len(keys) == 1 and len(keys[0]) == 32
    assert b"s3cret" not in keys[0] and b"ci" not in keys[0]
    clock.t += CACHE_TTL_S + 1
    assert await users.verify("ci", "s3cret")
    assert len(checks) == 2


async def test_failures_are_not_cached(checks: list[bytes]) -> None:
    users = Htpasswd.parse(f"ci:{_hash('s3cret')}")
    assert not await users.verify("ci", "wrong")
    assert not await users.verify("ci", "wrong")
    assert len(checks) == 2


async def test_the_cache_does_not_confuse_users(checks: list[bytes]) -> None:
    users = Htpasswd.parse(f"ci:{_hash('pw')}\nother:{_hash('zz')}")
    assert await users.verify("ci", "pw")
    assert not await users.verify("other", "pw")


async def test_an_unknown_user_still_costs_one_bcrypt_check(checks: list[bytes]) -> None:
    stored = _hash("s3cret")
    users = Htpasswd.parse(f"ci:{stored}")
    assert not await users.verify("nobody", "s3cret")
    assert len(checks) == 1
    # Against a dummy of the same cost, not against a real user's hash.
    assert checks[0] != stored.encode() and checks[0][:7] == stored.encode()[:7]
