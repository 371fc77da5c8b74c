"""``regsidecar bench``: being written (this placeholder is replaced before the issue closes)."""

from __future__ import annotations

import argparse
import sys

from regsidecar.commands import SubParsers


def register(sub: SubParsers) -> None:
    p = sub.add_parser("bench", help="(not built yet)")
    p.set_defaults(run=run, needs_settings=False)


def run(args: argparse.Namespace) -> int:
    print("regsidecar: bench is not built yet", file=sys.stderr)
    return 2
