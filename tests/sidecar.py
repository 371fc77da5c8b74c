"""Run the real ``regsidecar`` CLI as a subprocess on a loopback port, stop it by PID."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.rig.ports import free_port, wait_http
from tests.rig.proc import LoggedProcess, child_env


class Sidecar:
    """``python -m regsidecar serve ...`` with a private data dir and log file.

    >>> with Sidecar(["--storage", str(tree)]) as sc:  # doctest: +SKIP
    ...     urllib.request.urlopen(sc.url + "/v2/")
    """

    def __init__(
        self,
        args: list[str],
        *,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        command: str = "serve",
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._own_dir = data_dir is None
        self.data_dir = (
            Path(tempfile.mkdtemp(prefix="regsidecar-test-")) if data_dir is None else data_dir
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"sidecar-{self.port}.log"
        self.argv = [
            sys.executable,
            "-m",
            "regsidecar",
            command,
            "--listen",
            self.host,
            "--data-dir",
            str(self.data_dir),
            *args,
        ]
        base = {
            "AWS_ACCESS_KEY_ID": "rigtestaccesskey",
            "AWS_SECRET_ACCESS_KEY": "rigtestsecretkey",
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONUNBUFFERED": "1",
        }
        self.env = child_env({**base, **(env or {})}, unset=["AWS_PROFILE"])
        self._proc: LoggedProcess | None = None

    def start(self, deadline_s: float = 30.0) -> Sidecar:
        self._proc = LoggedProcess(self.argv, self.log_path, env=self.env, cwd=self.data_dir)
        try:
            wait_http(
                self.url + "/v2/", deadline_s, ok={200}, proc=self._proc.proc, log=self.log_path
            )
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.stop()
            self._proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self._proc is not None:
            self._proc.proc.kill()
            self._proc.proc.wait(10)
            self._proc.stop()
            self._proc = None

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            import shutil

            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Sidecar:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def cache_files(self) -> list[Path]:
        root = self.data_dir / "cache" / "blobs"
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

    def temp_files(self) -> list[Path]:
        root = self.data_dir / "cache" / "tmp"
        return sorted(root.iterdir()) if root.exists() else []


def wait_for(predicate: Any, deadline_s: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)
