"""One suite for the CacheControl Protocol, run against both implementations: LocalCache (the
directory of a stopped sidecar) and SidecarCache (a running sidecar's /-/cache endpoints).

Each case starts from the same cache directory: blobs named by their sha256 with increasing
access times, so least-recently-used order is known.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from regsidecar.cache.control import (
    CacheControl,
    CacheControlError,
    LocalCache,
    SidecarCache,
    open_control,
)
from regsidecar.config import Settings, load_settings
from regsidecar.datadir import read_control_token
from tests.cachefiles import write_blobs
from tests.rig.moto import MotoServer
from tests.rig.ports import free_port
from tests.sidecar import Sidecar

KiB = 1024
pytestmark = pytest.mark.rig


def _fill(data_dir: Path, sizes_kib: list[int]) -> list[str]:
    """Blobs, oldest access first; their digests in that order."""
    return [f"sha256:{p.name}" for p in write_blobs(data_dir, sizes_kib)]


ENV = {
    "REGSIDECAR_CACHE_MAX_BYTES": "1000KiB",
    "REGSIDECAR_CACHE_LOW_WATERMARK": "0.5",
    "REGSIDECAR_CACHE_MIN_FREE_BYTES": "0",
}


@pytest.fixture(params=["local", "sidecar"])
def control(
    request: pytest.FixtureRequest, tmp_path: Path, moto: MotoServer, bucket: str
) -> Iterator[tuple[CacheControl, Path, list[str]]]:
    digests = _fill(tmp_path, [100] * 8)  # 800 KiB: under max, over the low watermark
    if request.param == "local":
        settings = load_settings(
            None,
            env={**ENV, "REGSIDECAR_DATA_DIR": str(tmp_path)},
            overrides={"listen": f"127.0.0.1:{free_port()}"},  # nobody there
        )
        yield LocalCache(settings), tmp_path, digests
        return
    args = ["--storage", f"s3://{bucket}", "--s3-endpoint-url", moto.endpoint_url]
    with Sidecar([*args, "--s3-path-style"], data_dir=tmp_path, env=ENV) as sc:
        yield SidecarCache(sc.url, token=read_control_token(str(tmp_path))), tmp_path, digests


def _files(data_dir: Path) -> set[str]:
    return {f"sha256:{p.name}" for p in (data_dir / "cache" / "blobs" / "sha256").iterdir()}


def test_stats_report_entries_bytes_and_limits(
    control: tuple[CacheControl, Path, list[str]],
) -> None:
    ctl, data_dir, _ = control
    s = ctl.stats()
    assert s["root"] == str(data_dir / "cache")
    assert (s["entries"], s["bytes"]) == (8, 800 * KiB)
    assert (s["max_bytes"], s["low_watermark_bytes"]) == (1000 * KiB, 500 * KiB)
    assert s["min_free_bytes"] == 0 and s["free_bytes"] > 0


def test_gc_dry_run_lists_least_recently_used_and_removes_nothing(
    control: tuple[CacheControl, Path, list[str]],
) -> None:
    ctl, data_dir, digests = control
    report = ctl.gc(dry_run=True)
    assert report["dry_run"] is True
    assert [r["digest"] for r in report["removed"]] == digests[:3]  # 800 -> 500 KiB
    assert report["bytes_freed"] == 300 * KiB
    assert (report["entries"], report["bytes"]) == (5, 500 * KiB)
    assert _files(data_dir) == set(digests)
    assert ctl.stats()["entries"] == 8


def test_gc_trims_to_the_low_watermark_oldest_first(
    control: tuple[CacheControl, Path, list[str]],
) -> None:
    ctl, data_dir, digests = control
    report = ctl.gc()
    assert [r["digest"] for r in report["removed"]] == digests[:3]
    assert _files(data_dir) == set(digests[3:])
    assert (ctl.stats()["entries"], ctl.stats()["bytes"]) == (5, 500 * KiB)
    assert ctl.gc()["removed"] == []  # already at the watermark


def test_verify_removes_exactly_the_corrupt_blob(
    control: tuple[CacheControl, Path, list[str]],
) -> None:
    ctl, data_dir, digests = control
    bad = data_dir / "cache" / "blobs" / "sha256" / digests[5].split(":")[1]
    data = bytearray(bad.read_bytes())
    data[0] ^= 1
    bad.write_bytes(bytes(data))
    assert ctl.verify() == {"checked": 8, "removed": [digests[5]]}
    assert _files(data_dir) == set(digests) - {digests[5]}
    assert ctl.stats()["entries"] == 7


def test_open_control_picks_the_running_sidecar_else_the_directory(
    tmp_path: Path, moto: MotoServer, bucket: str
) -> None:
    _fill(tmp_path, [10])
    args = ["--storage", f"s3://{bucket}", "--s3-endpoint-url", moto.endpoint_url]
    with Sidecar([*args, "--s3-path-style"], data_dir=tmp_path, env=ENV) as sc:
        settings = Settings(listen=sc.host, data_dir=str(tmp_path), storage=f"s3://{bucket}")
        assert open_control(settings).where == "sidecar"
    assert open_control(settings).where == "local"


def test_cache_administration_wants_the_control_token_only_the_data_dir_holds(
    tmp_path: Path, moto: MotoServer, bucket: str
) -> None:
    """/-/cache/* answer a loopback client only with the token in DATA_DIR/control.token
    (mode 0600, new at each start): without it, or with an old one, 401 and an OCI error,
    and nothing is removed; the CLI's way in (open_control) reads it and gets through."""
    digests = _fill(tmp_path, [100] * 8)
    token_file = tmp_path / "control.token"
    args = ["--storage", f"s3://{bucket}", "--s3-endpoint-url", moto.endpoint_url]
    with Sidecar([*args, "--s3-path-style"], data_dir=tmp_path, env=ENV) as sc:
        first = read_control_token(str(tmp_path))
        assert first and len(first) == 64
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        for token in (None, "0" * 64):
            with pytest.raises(CacheControlError, match=r"HTTP 401: .*control token"):
                SidecarCache(sc.url, token=token).gc()
        assert _files(tmp_path) == set(digests)
        settings = Settings(listen=sc.host, data_dir=str(tmp_path))
        ctl = open_control(settings)
        assert ctl.where == "sidecar"
        assert len(ctl.gc()["removed"]) == 3
    with Sidecar([*args, "--s3-path-style"], data_dir=tmp_path, env=ENV) as sc:
        assert read_control_token(str(tmp_path)) != first
        with pytest.raises(CacheControlError, match="HTTP 401"):
            SidecarCache(sc.url, token=first).stats()
