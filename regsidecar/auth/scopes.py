"""Docker token scopes: what a client asks the token endpoint for, and what a challenge names.

A scope is ``TYPE[(CLASS)]:NAME:ACTION[,ACTION...]``; a request may carry several, as repeated
``scope`` parameters and/or separated by spaces inside one::

    repository:team/app:pull,push
    repository(plugin):vieux/sshfs:pull
    registry:catalog:*

>>> [str(s) for s in parse_scopes(["repository:team/app:push,pull registry:catalog:*"])]
['repository:team/app:pull,push', 'registry:catalog:*']
>>> format_scope("team/app", ["push"])
'repository:team/app:push'

Parsing is lenient the way token servers are: a scope that is malformed, names an invalid
repository or asks for no known action is dropped, and the rest are still answered (a client
gets a token granting less rather than an error).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from regsidecar.errors import NameInvalid
from regsidecar.oci.reference import parse_name

Action = Literal["pull", "push", "delete"]
ACTIONS: Final[tuple[Action, ...]] = ("pull", "push", "delete")
# "*" on a repository stands for every action; on registry:catalog it is the only action.
_KNOWN = frozenset({*ACTIONS, "*"})
# One request is answered for at most this many scopes, which bounds the token's size.
MAX_SCOPES: Final = 64

_TYPE_RE = re.compile(r"([a-z0-9]+)(?:\(([a-z0-9]+)\))?")


@dataclass(frozen=True, slots=True)
class Scope:
    """One requested resource and its actions (``"*"`` kept as asked)."""

    type: Literal["repository", "registry"]
    name: str
    actions: frozenset[str]
    resource_class: str = ""

    def __str__(self) -> str:
        kind = f"{self.type}({self.resource_class})" if self.resource_class else self.type
        return f"{kind}:{self.name}:{','.join(_ordered(self.actions))}"

    def expanded(self) -> frozenset[str]:
        """The actions with ``*`` spelled out (for a repository: pull, push and delete)."""
        if self.type == "repository" and "*" in self.actions:
            return frozenset(ACTIONS)
        return self.actions


def _ordered(actions: Iterable[str]) -> list[str]:
    order = {a: i for i, a in enumerate((*ACTIONS, "*"))}
    return sorted(set(actions), key=lambda a: order.get(a, len(order)))


def parse_scope(value: str) -> Scope | None:
    """One scope, or None if it is not one this registry can grant."""
    kind, sep, rest = value.partition(":")
    name, sep2, actions_text = rest.rpartition(":")
    if not sep or not sep2:
        return None
    m = _TYPE_RE.fullmatch(kind)
    if m is None:
        return None
    actions = frozenset(a for a in actions_text.split(",") if a in _KNOWN)
    if not actions:
        return None
    if m.group(1) == "registry":
        if name != "catalog" or m.group(2) or actions != {"*"}:
            return None
        return Scope("registry", "catalog", actions)
    if m.group(1) != "repository":
        return None
    try:
        parse_name(name)
    except NameInvalid:
        return None
    return Scope("repository", name, actions, m.group(2) or "")


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """Every grantable scope in ``values`` (query values, each possibly space-separated)."""
    out: list[Scope] = []
    for value in values:
        for item in value.split():
            scope = parse_scope(item)
            if scope is not None and scope not in out:
                out.append(scope)
            if len(out) >= MAX_SCOPES:
                return out
    return out


def format_scope(repository: str, actions: Iterable[str]) -> str:
    """The scope a challenge names: ``repository:NAME:ACTION,...``."""
    return f"repository:{repository}:{','.join(_ordered(actions))}"
