"""Cache directories for tests: blob files named by their sha256, with known LRU order."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

KiB = 1024


def write_blobs(data_dir: Path, sizes_kib: list[int]) -> list[Path]:
    """Files under ``DATA_DIR/cache/blobs/sha256/``, one per size, oldest access first (one
    minute apart, the newest an hour ago); distinct deterministic content."""
    root = data_dir / "cache" / "blobs" / "sha256"
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.time() - 3600 - 60 * len(sizes_kib)
    paths = []
    for n, size in enumerate(sizes_kib):
        seed = hashlib.sha256(f"{n}:{size}".encode()).digest()
        data = (seed * (size * KiB // 32 + 1))[: size * KiB]
        path = root / hashlib.sha256(data).hexdigest()
        path.write_bytes(data)
        os.utime(path, (t0 + 60 * n, t0 + 60 * n))
        paths.append(path)
    return paths
