"""`regsidecar cache verify` as a real process on a cache directory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.rig.ports import free_port


def _put(root: Path, data: bytes, *, corrupt: bool = False) -> Path:
    hex_ = hashlib.sha256(data).hexdigest()
    path = root / "cache" / "blobs" / "sha256" / hex_
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]) if corrupt else data)
    return path


def _verify(data_dir: Path) -> tuple[int, dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGSIDECAR_")}
    cp = subprocess.run(
        [
            sys.executable,
            "-m",
            "regsidecar",
            "cache",
            "verify",
            "--json",
            "--data-dir",
            str(data_dir),
            # Nobody listens there: the command works on the directory.
            "--listen",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    return cp.returncode, json.loads(cp.stdout.strip().splitlines()[-1])


def test_cache_verify_removes_only_corrupt_blobs(tmp_path: Path) -> None:
    good = _put(tmp_path, os.urandom(300_000))
    bad = _put(tmp_path, os.urandom(200_000), corrupt=True)
    rc, summary = _verify(tmp_path)
    assert rc == 1
    assert summary == {"checked": 2, "removed": [f"sha256:{bad.name}"], "where": "local"}
    assert good.exists() and not bad.exists()
    rc, summary = _verify(tmp_path)
    assert (rc, summary) == (0, {"checked": 1, "removed": [], "where": "local"})


def test_a_running_sidecars_cache_is_never_cleaned_behind_its_back(
    tmp_path: Path, moto: object, bucket: str, writer: object
) -> None:
    """A sidecar serving its ops endpoints on another ops_listen: `cache gc` and `cache
    verify` pointed at its pull listener get 404 there, find the data dir locked, and leave
    its files alone (exit 1, saying why); a second sidecar on the same data dir will not
    start."""
    from tests.conftest import s3_args
    from tests.sidecar import Sidecar

    data = os.urandom(200_000)
    digest = writer.blob("app", data)  # type: ignore[attr-defined]
    ops = f"127.0.0.1:{free_port()}"
    args = s3_args(moto.endpoint_url, bucket)  # type: ignore[attr-defined]
    env = {"REGSIDECAR_OPS_LISTEN": ops, "REGSIDECAR_CACHE_MIN_FREE_BYTES": "0"}
    with Sidecar(args, data_dir=tmp_path / "data", env=env) as sc:
        import urllib.request

        with urllib.request.urlopen(f"{sc.url}/v2/app/blobs/{digest}", timeout=30) as r:
            assert r.read() == data
        (cached,) = sc.cache_files()
        clean_env = {k: v for k, v in os.environ.items() if not k.startswith("REGSIDECAR_")}
        for action in (["gc"], ["verify"]):
            cp = subprocess.run(
                [sys.executable, "-m", "regsidecar", "cache", *action, "--data-dir",
                 str(sc.data_dir), "--listen", sc.host],
                capture_output=True, text=True, timeout=60, env=clean_env,
            )  # fmt: skip
            assert cp.returncode == 1, cp
            assert "did not answer" in cp.stderr and "left alone" in cp.stderr, cp.stderr
        assert cached.exists()
        second = Sidecar(args, data_dir=sc.data_dir, env=env)
        cp = subprocess.run(second.argv, capture_output=True, text=True, timeout=60, env=second.env)
        assert cp.returncode == 1, cp
        assert "in use by another sidecar" in cp.stdout + cp.stderr
