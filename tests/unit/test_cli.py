"""The CLI turns bad settings into one line on stderr and exit status 2; it never serves here."""

from __future__ import annotations

import argparse
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from regsidecar import __version__, cli, logs
from regsidecar.config import env_name

# Every serve flag, the settings key it sets and so the env var it documents.
FLAGS = [
    ("--listen", "listen"),
    ("--storage", "storage"),
    ("--s3-endpoint-url", "s3.endpoint_url"),
    ("--s3-region", "s3.region"),
    ("--s3-path-style", "s3.path_style"),
    ("--data-dir", "data_dir"),
    ("--cache-max-bytes", "cache.max_bytes"),
    ("--peer-listen", "peer_listen"),
    ("--peers", "peers.urls"),
    ("--log-level", "log.level"),
]


@pytest.fixture(autouse=True)
def no_server_no_logging_no_ambient_config(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail instead of serving, keep pytest's logging, and ignore the caller's REGSIDECAR_*."""

    async def serve(settings: object) -> None:
        raise AssertionError("a unit test reached cli's serve()")

    fake_app = types.ModuleType("regsidecar.api.app")
    fake_app.serve = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "regsidecar.api.app", fake_app)
    monkeypatch.setattr(logs, "setup", lambda level="info", stream=None: None)
    for var in [v for v in os.environ if v.startswith("REGSIDECAR_")]:
        monkeypatch.delenv(var)
    yield


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err.splitlines()


@pytest.mark.parametrize(
    ("argv", "key"),
    [
        (["serve", "--listen", "nonsense"], "listen"),
        (["serve", "--listen", "127.0.0.1:99999"], "listen"),
        (["serve", "--cache-max-bytes", "lots"], "cache.max_bytes"),
        (["serve", "--cache-max-bytes=-1GiB"], "cache.max_bytes"),
        (["serve", "--storage", "http://x"], "storage"),
        (["serve", "--storage", "s3://No_Such"], "storage"),
        (["serve", "--s3-endpoint-url", "ftp://x"], "s3.endpoint_url"),
        (["serve", "--log-level", "loud"], "log.level"),
        (["demo", "--listen", "nonsense"], "listen"),
        (["serve", "--listen", "bad\nvalue"], "listen"),
    ],
)
def test_invalid_flag_exits_2_with_one_line_naming_the_key(
    argv: list[str], key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, out, err = _run(argv, capsys)
    assert rc == 2
    assert out == ""
    assert len(err) == 1, err
    assert err[0].startswith(f"regsidecar: invalid config: {key}: ")


def test_flag_wins_over_a_bad_config_file_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file's listen is fine, the flag's is not: the error names listen, from the flag."""
    config = tmp_path / "c.yaml"
    config.write_text("listen: 127.0.0.1:6000\ncache:\n  max_bytes: 1GiB\n", encoding="utf-8")
    rc, _, err = _run(["serve", "--config", str(config), "--listen", "oops"], capsys)
    assert rc == 2
    assert err == [err[0]] and "listen: " in err[0] and "'oops'" in err[0]


def test_unknown_key_in_config_file_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("cache:\n  bogus: 1\n", encoding="utf-8")
    rc, _, err = _run(["serve", "--config", str(config)], capsys)
    assert rc == 2
    assert len(err) == 1
    assert err[0].startswith("regsidecar: invalid config: cache.bogus: unknown setting")


def test_missing_config_file_is_one_line_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = _run(["serve", "--config", str(tmp_path / "absent.yaml")], capsys)
    assert rc == 2
    assert len(err) == 1
    assert err[0].startswith("regsidecar: invalid config: --config: ")


def test_bad_yaml_config_file_is_one_line_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("listen: [\n", encoding="utf-8")
    rc, _, err = _run(["serve", "--config", str(config)], capsys)
    assert rc == 2
    assert err[0].startswith("regsidecar: invalid config: --config: ")
    assert len(err) == 1, err


def test_demo_refuses_s3_storage_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["demo", "--storage", "s3://some-bucket"], capsys)
    assert rc == 2
    assert out == ""
    assert len(err) == 1
    assert err[0].startswith("regsidecar: invalid config: storage: ")


def test_version_prints_the_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"regsidecar {__version__}\n"


def test_a_subcommand_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([])
    assert info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    choice: argparse.ArgumentParser = sub.choices[name]
    return choice


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_help_lists_every_flag_with_its_env_var(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for flag, key in [*FLAGS, ("--config", "config")]:
        assert flag in text
        assert env_name(key) in text
    # Each flag's own help names its own variable (not just somewhere on the page).
    for action in _subparser(command)._actions:
        if action.option_strings and action.dest != "help":
            assert action.help is not None
            assert env_name(action.dest) in action.help, action.option_strings


def test_every_parser_flag_is_in_the_expected_table() -> None:
    """A new flag must be added to FLAGS (and so be checked for its env var)."""
    dests = {a.dest for a in _subparser("serve")._actions if a.option_strings and a.dest != "help"}
    assert dests == {key for _, key in FLAGS} | {"config"}
