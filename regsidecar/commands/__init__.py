"""One module per ``regsidecar`` subcommand.

Each module has ``register(sub)``, which adds its parser(s) to the top-level subparsers and
sets ``run`` (``Callable[[argparse.Namespace], int]``) as a default. Parsers that read
:class:`~regsidecar.config.Settings` call :func:`regsidecar.cli.add_settings_flags`; the CLI
then loads them into ``args.settings`` before ``run``. A parser that builds its own settings
(or needs none) sets ``needs_settings=False``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING

# Order of the commands in ``regsidecar --help``.
NAMES = (
    "serve",
    "warm",
    "promote",
    "verify",
    "cache",
    "doctor",
    "prune",
    "install",
    "bench",
)

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    SubParsers = argparse._SubParsersAction


def modules() -> Iterator[ModuleType]:
    for name in NAMES:
        yield importlib.import_module(f"regsidecar.commands.{name}")
