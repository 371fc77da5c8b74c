"""Static tokens: NAME:TOKEN lines, looked up in constant time, never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from regsidecar.auth.statictokens import StaticTokens
from regsidecar.errors import ConfigError

CI = "c" * 32
RELEASE = "r" * 16


def test_a_token_stands_for_its_name() -> None:
    tokens = StaticTokens.parse(f"# CI tokens\n\nci:{CI}\nrelease: {RELEASE}\n")
    assert tokens.lookup(CI) == "ci"
    assert tokens.lookup(RELEASE) == "release"
    assert tokens.names == {"ci", "release"}
    assert len(tokens) == 2


@pytest.mark.parametrize("guess", ["", "c", CI[:-1], CI + "c", CI.upper(), "ci"])
def test_anything_else_is_no_one(guess: str) -> None:
    assert StaticTokens.parse(f"ci:{CI}").lookup(guess) is None


def test_one_name_may_hold_several_tokens_for_rotation() -> None:
    tokens = StaticTokens.parse(f"ci:{CI}\nci:{RELEASE}")
    assert tokens.lookup(CI) == tokens.lookup(RELEASE) == "ci"


def test_a_token_may_contain_colons() -> None:
    token = "a:b:" + "x" * 16
    assert StaticTokens.parse(f"ci:{token}").lookup(token) == "ci"


def test_a_line_without_a_colon_is_refused_naming_the_line() -> None:
    with pytest.raises(ConfigError) as err:
        StaticTokens.parse(f"ci:{CI}\n{CI}\n", "/etc/tokens")
    assert err.value.key == "auth.tokens"
    assert err.value.message == "/etc/tokens:2: expected NAME:TOKEN"


def test_a_short_token_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError, match="shorter than 16") as err:
        StaticTokens.parse("ci:short-secret")
    assert "short-secret" not in str(err.value)


def test_a_token_used_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="used twice") as err:
        StaticTokens.parse(f"ci:{CI}\nrelease:{CI}")
    assert CI not in str(err.value)


def test_an_empty_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="expected NAME:TOKEN"):
        StaticTokens.parse(f":{CI}")


def test_load_reads_a_file_and_reports_an_unreadable_one(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"ci:{CI}\n")
    assert StaticTokens.load(str(path)).lookup(CI) == "ci"
    with pytest.raises(ConfigError, match="cannot read"):
        StaticTokens.load(str(tmp_path / "absent"))
