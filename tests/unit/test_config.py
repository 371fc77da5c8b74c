"""Settings: defaults < YAML < REGSIDECAR_* env < overrides, and errors that name the key."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydantic
import pytest

from regsidecar.config import (
    OPTION_KEYS,
    Settings,
    default_data_dir,
    env_name,
    load_settings,
    parse_size,
)
from regsidecar.errors import ConfigError

GiB = 1024**3


def _load(yaml_text: str | None = None, tmp_path: Path | None = None, **kw: Any) -> Settings:
    """Load with an explicit (default empty) env so the real environment never leaks in."""
    kw.setdefault("env", {})
    config_file = None
    if yaml_text is not None:
        assert tmp_path is not None
        path = tmp_path / "regsidecar.yaml"
        path.write_text(yaml_text, encoding="utf-8")
        config_file = str(path)
    return load_settings(config_file, **kw)


def _config_error(**kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(**kw)
    return info.value


# -- defaults ---------------------------------------------------------------------------------


def test_defaults() -> None:
    s = _load()
    assert s.listen == "127.0.0.1:5000"
    assert (s.host, s.port) == ("127.0.0.1", 5000)
    assert s.storage == ""
    assert s.storage_kind == "filesystem"
    assert s.data_dir == default_data_dir()
    assert s.filesystem_root == os.path.join(s.data_dir, "registry")
    assert s.cache_dir == os.path.join(s.data_dir, "cache")
    assert (s.s3.region, s.s3.endpoint_url, s.s3.path_style) == (None, None, False)
    assert s.s3.connect_timeout_s > 0 and s.s3.read_timeout_s > 0
    assert s.cache.max_bytes == 10 * GiB
    assert s.cache.min_free_bytes == 1 * GiB
    assert s.cache.low_watermark == 0.9
    assert (s.cache.tag_ttl_s, s.cache.link_ttl_s) == (30.0, 300.0)
    assert s.log.level == "info"


def test_settings_are_frozen() -> None:
    s = _load()
    with pytest.raises(pydantic.ValidationError):
        s.listen = "0.0.0.0:1"  # type: ignore[misc]


def test_docstring_example_holds() -> None:
    assert load_settings(env={"REGSIDECAR_LISTEN": "127.0.0.1:5001"}).port == 5001


# -- env names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "var"),
    [
        ("listen", "REGSIDECAR_LISTEN"),
        ("data_dir", "REGSIDECAR_DATA_DIR"),
        ("storage", "REGSIDECAR_STORAGE"),
        ("s3.region", "REGSIDECAR_S3_REGION"),
        ("s3.endpoint_url", "REGSIDECAR_S3_ENDPOINT_URL"),
        ("s3.path_style", "REGSIDECAR_S3_PATH_STYLE"),
        ("cache.max_bytes", "REGSIDECAR_CACHE_MAX_BYTES"),
        ("cache.min_free_bytes", "REGSIDECAR_CACHE_MIN_FREE_BYTES"),
        ("cache.tag_ttl_s", "REGSIDECAR_CACHE_TAG_TTL_S"),
        ("log.level", "REGSIDECAR_LOG_LEVEL"),
    ],
)
def test_every_documented_key_is_an_option_with_its_env_var(key: str, var: str) -> None:
    assert key in OPTION_KEYS
    assert env_name(key) == var


def test_env_var_names_are_distinct() -> None:
    names = [env_name(k) for k in OPTION_KEYS]
    assert len(set(names)) == len(names)


# -- env --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("var", "value", "read", "expected"),
    [
        ("REGSIDECAR_LISTEN", "0.0.0.0:6000", lambda s: (s.host, s.port), ("0.0.0.0", 6000)),
        (
            "REGSIDECAR_STORAGE",
            "s3://my-bucket/pre",
            lambda s: (s.s3_bucket, s.s3_prefix),
            ("my-bucket", "pre"),
        ),
        (
            "REGSIDECAR_S3_ENDPOINT_URL",
            "http://127.0.0.1:9000",
            lambda s: s.s3.endpoint_url,
            "http://127.0.0.1:9000",
        ),
        ("REGSIDECAR_S3_PATH_STYLE", "true", lambda s: s.s3.path_style, True),
        ("REGSIDECAR_S3_REGION", "eu-west-1", lambda s: s.s3.region, "eu-west-1"),
        ("REGSIDECAR_CACHE_MAX_BYTES", "20GiB", lambda s: s.cache.max_bytes, 20 * GiB),
        ("REGSIDECAR_CACHE_TAG_TTL_S", "2.5", lambda s: s.cache.tag_ttl_s, 2.5),
        ("REGSIDECAR_LOG_LEVEL", "debug", lambda s: s.log.level, "debug"),
        (
            "REGSIDECAR_DATA_DIR",
            "/srv/rs",
            lambda s: (s.data_dir, s.cache_dir),
            ("/srv/rs", os.path.join("/srv/rs", "cache")),
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("REGSIDECAR_") else None,
)
def test_env_vars_set_their_option(
    var: str, value: str, read: Callable[[Settings], object], expected: object
) -> None:
    assert read(_load(env={var: value})) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("no", False)],
)
def test_path_style_env_accepts_common_booleans(value: str, expected: bool) -> None:
    assert _load(env={"REGSIDECAR_S3_PATH_STYLE": value}).s3.path_style is expected


def test_unrelated_env_vars_are_ignored() -> None:
    s = _load(env={"LISTEN": "nonsense", "REGSIDECAR_BOGUS": "x", "regsidecar_listen": "bad"})
    assert s.listen == "127.0.0.1:5000"


# -- YAML and precedence ----------------------------------------------------------------------


def test_yaml_file_sets_nested_options(tmp_path: Path) -> None:
    s = _load(
        "listen: 127.0.0.1:6000\n"
        "storage: s3://bucket/prefix/\n"
        "s3:\n"
        "  region: eu-west-1\n"
        "  endpoint_url: https://s3.example.com\n"
        "  path_style: true\n"
        "cache:\n"
        "  max_bytes: 20GiB\n"
        "  min_free_bytes: 500MB\n"
        "  low_watermark: 0.5\n"
        "log:\n"
        "  level: warning\n",
        tmp_path,
    )
    assert s.port == 6000
    assert (s.storage_kind, s.s3_bucket, s.s3_prefix) == ("s3", "bucket", "prefix")
    assert (s.s3.region, s.s3.endpoint_url, s.s3.path_style) == (
        "eu-west-1",
        "https://s3.example.com",
        True,
    )
    assert (s.cache.max_bytes, s.cache.min_free_bytes) == (20 * GiB, 500 * 10**6)
    assert s.cache.low_watermark == 0.5
    assert s.log.level == "warning"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_yaml_file_means_defaults(text: str, tmp_path: Path) -> None:
    assert _load(text, tmp_path) == _load()


def test_precedence_defaults_then_yaml_then_env_then_overrides(tmp_path: Path) -> None:
    yaml_text = "listen: 127.0.0.1:6001\ncache:\n  max_bytes: 1GiB\nlog:\n  level: error\n"
    env = {"REGSIDECAR_LISTEN": "127.0.0.1:6002", "REGSIDECAR_CACHE_MAX_BYTES": "2GiB"}
    overrides = {"listen": "127.0.0.1:6003"}

    assert _load().port == 5000
    assert _load(yaml_text, tmp_path).port == 6001
    s = _load(yaml_text, tmp_path, env=env)
    assert (s.port, s.cache.max_bytes, s.log.level) == (6002, 2 * GiB, "error")
    s = _load(yaml_text, tmp_path, env=env, overrides=overrides)
    assert (s.port, s.cache.max_bytes, s.log.level) == (6003, 2 * GiB, "error")


def test_env_merges_into_a_yaml_section_instead_of_replacing_it(tmp_path: Path) -> None:
    s = _load("s3:\n  region: eu-west-1\n", tmp_path, env={"REGSIDECAR_S3_PATH_STYLE": "1"})
    assert (s.s3.region, s.s3.path_style) == ("eu-west-1", True)


def test_none_overrides_do_not_hide_lower_layers() -> None:
    """The CLI passes None for every flag that was not given."""
    s = _load(
        env={"REGSIDECAR_LISTEN": "127.0.0.1:7000"},
        overrides={"listen": None, "s3.path_style": None, "cache.max_bytes": "3GiB"},
    )
    assert (s.port, s.s3.path_style, s.cache.max_bytes) == (7000, False, 3 * GiB)


# -- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1048576, 1048576),
        ("1048576", 1048576),
        ("0", 0),
        ("1B", 1),
        ("20GiB", 20 * GiB),
        ("20gib", 20 * GiB),
        ("20Gi", 20 * GiB),
        ("20G", 20 * 10**9),
        ("500MB", 500 * 10**6),
        ("500mb", 500 * 10**6),
        ("500MiB", 500 * 1024**2),
        ("1.5GiB", 3 * GiB // 2),
        ("0.5KiB", 512),
        ("2KB", 2000),
        ("2k", 2000),
        ("1TiB", 1024**4),
        ("1TB", 10**12),
        (" 10 MiB ", 10 * 1024**2),
    ],
)
def test_parse_size_understands_units(value: Any, expected: int) -> None:
    assert parse_size(value) == expected


@pytest.mark.parametrize(
    "value", ["", "lots", "GiB", "1.5.5GiB", "-1GiB", "1e3", "10XB", "1 0MB", "1,5GiB", True, False]
)
def test_parse_size_rejects_garbage(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_size(value)


@pytest.mark.parametrize(("value", "expected"), [("2.01GB", 2_010_000_000), ("2.03KB", 2030)])
def test_parse_size_decimal_sizes_are_exact(value: str, expected: int) -> None:
    assert parse_size(value) == expected


def test_size_settings_are_parsed_from_env_and_overrides() -> None:
    s = _load(
        env={"REGSIDECAR_CACHE_MAX_BYTES": "1.5GiB"},
        overrides={"cache.min_free_bytes": 12345},
    )
    assert (s.cache.max_bytes, s.cache.min_free_bytes) == (3 * GiB // 2, 12345)


# -- storage ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("storage", "bucket", "prefix"),
    [
        ("s3://bucket", "bucket", ""),
        ("s3://bucket/", "bucket", ""),
        ("s3://bucket/prefix", "bucket", "prefix"),
        ("s3://bucket/prefix/", "bucket", "prefix"),
        ("s3://my.bucket-1/a/b/c/", "my.bucket-1", "a/b/c"),
        ("s3://abc//x//", "abc", "x"),
    ],
)
def test_s3_storage_url_splits_into_bucket_and_prefix(
    storage: str, bucket: str, prefix: str
) -> None:
    s = _load(env={"REGSIDECAR_STORAGE": storage})
    assert s.storage_kind == "s3"
    assert (s.s3_bucket, s.s3_prefix) == (bucket, prefix)


@pytest.mark.parametrize("path", ["/srv/registry", "relative/dir", "./x", "C:\\registry"])
def test_directory_storage_is_the_filesystem_root(path: str) -> None:
    s = _load(overrides={"storage": path})
    assert s.storage_kind == "filesystem"
    assert s.filesystem_root == path


@pytest.mark.parametrize(
    "storage",
    [
        "http://x",
        "https://bucket/prefix",
        "file:///srv/registry",
        "S3://bucket",
        "gs://bucket",
        "s3://",
        "s3:///prefix",
        "s3://ab",
        "s3://Bucket",
        "s3://bucket_name",
        "s3://-bucket",
        "s3://bucket-",
        "s3://" + "a" * 64,
    ],
)
def test_bad_storage_values_name_the_storage_key(storage: str) -> None:
    err = _config_error(env={"REGSIDECAR_STORAGE": storage})
    assert err.key == "storage"


# -- errors name the dotted key ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        ({"env": {"REGSIDECAR_LISTEN": "nonsense"}}, "listen"),
        ({"env": {"REGSIDECAR_LISTEN": ":5000"}}, "listen"),
        ({"env": {"REGSIDECAR_LISTEN": "host:"}}, "listen"),
        ({"env": {"REGSIDECAR_LISTEN": "host:0"}}, "listen"),
        ({"env": {"REGSIDECAR_LISTEN": "host:65536"}}, "listen"),
        ({"env": {"REGSIDECAR_LISTEN": "host:-1"}}, "listen"),
        ({"env": {"REGSIDECAR_LISTEN": "5000"}}, "listen"),
        ({"env": {"REGSIDECAR_CACHE_MAX_BYTES": "lots"}}, "cache.max_bytes"),
        ({"env": {"REGSIDECAR_CACHE_MAX_BYTES": "-1"}}, "cache.max_bytes"),
        ({"overrides": {"cache.max_bytes": -1}}, "cache.max_bytes"),
        ({"env": {"REGSIDECAR_CACHE_MIN_FREE_BYTES": "x"}}, "cache.min_free_bytes"),
        ({"env": {"REGSIDECAR_CACHE_LOW_WATERMARK": "0"}}, "cache.low_watermark"),
        ({"env": {"REGSIDECAR_CACHE_LOW_WATERMARK": "1.5"}}, "cache.low_watermark"),
        ({"env": {"REGSIDECAR_CACHE_TAG_TTL_S": "-1"}}, "cache.tag_ttl_s"),
        ({"env": {"REGSIDECAR_S3_PATH_STYLE": "maybe"}}, "s3.path_style"),
        ({"env": {"REGSIDECAR_S3_ENDPOINT_URL": "ftp://x"}}, "s3.endpoint_url"),
        ({"env": {"REGSIDECAR_S3_ENDPOINT_URL": "http://"}}, "s3.endpoint_url"),
        ({"env": {"REGSIDECAR_S3_ENDPOINT_URL": "localhost:9000"}}, "s3.endpoint_url"),
        ({"env": {"REGSIDECAR_S3_MAX_CONNECTIONS": "0"}}, "s3.max_connections"),
        ({"env": {"REGSIDECAR_LOG_LEVEL": "loud"}}, "log.level"),
        ({"overrides": {"log.level": "INFO"}}, "log.level"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_dotted_key(
    kw: dict[str, Any], key: str
) -> None:
    err = _config_error(**kw)
    assert err.key == key
    assert str(err).startswith(f"{key}: ")
    assert "\n" not in str(err)


@pytest.mark.parametrize(
    ("yaml_text", "key"),
    [
        ("cache:\n  bogus: 1\n", "cache.bogus"),
        ("bogus: 1\n", "bogus"),
        ("s3:\n  secret_access_key: x\n", "s3.secret_access_key"),
        ("listen: 5000\n", "listen"),
        ("cache:\n  max_bytes: lots\n", "cache.max_bytes"),
        ("cache: 5\n", "cache"),
        ("log:\n  level: [a]\n", "log.level"),
    ],
)
def test_invalid_yaml_settings_name_the_dotted_key(
    yaml_text: str, key: str, tmp_path: Path
) -> None:
    err = _config_error(yaml_text=yaml_text, tmp_path=tmp_path)
    assert err.key == key


def test_unknown_yaml_key_says_unknown_setting(tmp_path: Path) -> None:
    err = _config_error(yaml_text="cache:\n  bogus: 1\n", tmp_path=tmp_path)
    assert err.message.startswith("unknown setting")


def test_env_into_a_non_mapping_yaml_section_names_the_section(tmp_path: Path) -> None:
    err = _config_error(
        yaml_text="cache: 5\n", tmp_path=tmp_path, env={"REGSIDECAR_CACHE_MAX_BYTES": "1GiB"}
    )
    assert err.key == "cache"


@pytest.mark.parametrize(
    "yaml_text",
    ["listen: [\n", "a: b: c\n", "\t- x\n", "- a\n- b\n", "just a string\n", "42\n"],
)
def test_bad_yaml_or_non_mapping_file_names_the_config_flag(yaml_text: str, tmp_path: Path) -> None:
    err = _config_error(yaml_text=yaml_text, tmp_path=tmp_path)
    assert err.key == "--config"


def test_missing_config_file_names_the_config_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(str(tmp_path / "absent.yaml"), env={})
    assert info.value.key == "--config"
    assert "absent.yaml" in info.value.message


def test_directory_as_config_file_names_the_config_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(str(tmp_path), env={})
    assert info.value.key == "--config"


def test_error_echo_of_a_long_value_is_bounded() -> None:
    err = _config_error(env={"REGSIDECAR_LISTEN": "x" * 10_000})
    assert err.key == "listen"
    assert len(str(err)) < 300
