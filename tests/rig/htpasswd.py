"""Credentials for a sidecar that takes pushes: a bcrypt htpasswd file, static tokens and the
``auth``/``push`` config that names them.

``htpasswd -Bbn USER PASSWORD`` (apache2-utils) makes the entries when it is installed,
else the ``bcrypt`` module does: both give ``$2y$``/``$2b$`` hashes the sidecar accepts.

>>> cfg = PushAuth().write(tmp_path)  # doctest: +SKIP
>>> Sidecar(["--storage", str(root), "--config", str(cfg)]).start()  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .proc import run

#: The writer, a pull-only user and a static CI token, as the push tests use them.
WRITER = ("ci", "s3cret")
READER = ("reader", "r3ader")
RELEASE_TOKEN = ("release", "0123456789abcdef0123")


def htpasswd_line(user: str, password: str) -> str:
    """One ``user:$2y$...`` bcrypt entry (cost 5: fast to check, as ``htpasswd -B``)."""
    tool = shutil.which("htpasswd")
    if tool is not None:
        out = run([tool, "-Bbn", "-C", "5", user, password], timeout_s=30).stdout
        return out.strip()
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
    return f"{user}:{hashed}"


def write_htpasswd(path: Path, users: Mapping[str, str]) -> Path:
    path.write_text("".join(htpasswd_line(u, p) + "\n" for u, p in users.items()))
    return path


@dataclass
class PushAuth:
    """The ``auth`` and ``push`` sections of a sidecar config, and the files they name."""

    users: dict[str, str] = field(default_factory=lambda: dict([WRITER, READER]))
    tokens: dict[str, str] = field(default_factory=lambda: dict([RELEASE_TOKEN]))
    writers: list[str] = field(default_factory=lambda: [WRITER[0], RELEASE_TOKEN[0]])
    delete: bool = True
    #: e.g. ``[{"tags": "v*", "rule": "immutable"}]``
    protect: list[dict[str, str]] = field(default_factory=list)

    def config(self, directory: Path) -> dict[str, Any]:
        auth: dict[str, Any] = {"writers": self.writers}
        if self.users:
            auth["htpasswd"] = str(write_htpasswd(directory / "htpasswd", self.users))
        if self.tokens:
            tokens = directory / "tokens"
            tokens.write_text("".join(f"{n}:{t}\n" for n, t in self.tokens.items()))
            auth["tokens"] = str(tokens)
        push: dict[str, Any] = {"delete": self.delete}
        if self.protect:
            push["protect"] = self.protect
        return {"auth": auth, "push": push}

    def write(self, directory: Path, name: str = "regsidecar.yml") -> Path:
        """Write the files and the config (JSON, which is YAML) into ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / name
        path.write_text(json.dumps(self.config(directory), indent=2))
        return path


__all__ = [
    "READER",
    "RELEASE_TOKEN",
    "WRITER",
    "PushAuth",
    "htpasswd_line",
    "write_htpasswd",
]
