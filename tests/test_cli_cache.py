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
