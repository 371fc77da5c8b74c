"""Who fetches which part of a blob from whom, computed alike on every host: no tracker.

Pure: no I/O. Rendezvous (highest random weight) hashing ranks the members for a key (a
blob's digest and the offset of one of its parts): each member scores ``hash(key, member)``
and the order is by score. The ranking is a heap-shaped tree of ``fanout`` children per
member: position 0 (the **root**) fetches the part from the store, position ``p`` from
position ``(p - 1) // fanout``::

    rank for (sha256:ab.., part at 0):  h7  h2  h9  h4  h1  h5  h3 ...
    tree, fanout 2:                     h7 ─┬─ h2 ─┬─ h4
                                            │      └─ h1
                                            └─ h9 ─┬─ h5
                                                   └─ h3

Each part of a blob has its own tree (the key holds the part's offset), so the hosts that
upload one part are leaves of another: every host's uplink carries about one copy of the
blob, and the depth (the hops a byte travels) is ``log_fanout(N)``. A member leaving moves
only the parts it held (rendezvous hashing's property); views that differ for a while (a
membership refresh in flight) cost at most a stall and a fetch from the store.

With zones, a host builds its tree from the members of its own zone under the part's global
root, so a part crosses zones once per zone: ``[root] + members of my zone, by rank``.

>>> members = [Member(f"http://10.0.0.{i}:5001") for i in range(1, 8)]
>>> me = members[3]
>>> chain = ancestors(members, me, "sha256:ab@0", fanout=2)
>>> chain == ancestors(list(reversed(members)), me, "sha256:ab@0", fanout=2)  # any order
True
>>> rank(members, "sha256:ab@0")[0] in (chain[-1:] or [me])  # the chain ends at the root
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Member:
    """One sidecar's peer listener: its base URL (also its identity) and its zone."""

    url: str
    zone: str | None = None


def score(key: str, member: Member) -> int:
    """The member's weight for ``key``: 64 bits of BLAKE2b over both."""
    h = hashlib.blake2b(f"{key}\x00{member.url}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def rank(members: Iterable[Member], key: str) -> list[Member]:
    """Members by descending weight for ``key`` (ties, which need a 64-bit collision, by URL)."""
    return sorted(set(members), key=lambda m: (-score(key, m), m.url))


def part_key(digest: str, offset: int) -> str:
    """The ring key of the part of ``digest`` that starts at ``offset``."""
    return f"{digest}@{offset}"


def tree(members: Sequence[Member], me: Member, key: str) -> list[Member]:
    """The ranked list this host's tree for ``key`` is built from (``me`` always in it)."""
    ranked = rank([*members, me], key)
    if me.zone is None:
        return ranked
    root = ranked[0]
    return [root, *(m for m in ranked[1:] if m.zone == me.zone)]


def ancestors(
    members: Sequence[Member], me: Member, key: str, *, fanout: int = 2, most: int = 0
) -> list[Member]:
    """The members to ask for ``key``'s bytes, parent first, up to the root (at most
    ``most`` of them; 0: all): ``[]`` when this host is the root and fetches from the store.

    >>> ancestors([], Member("http://a:5001"), "k")
    []
    """
    if fanout < 1:
        raise ValueError("fanout must be >= 1")
    order = tree(members, me, key)
    p = order.index(me)
    chain: list[Member] = []
    while p > 0 and (most <= 0 or len(chain) < most):
        p = (p - 1) // fanout
        chain.append(order[p])
    return chain


def children(members: Sequence[Member], me: Member, key: str, *, fanout: int = 2) -> int:
    """How many members fetch ``key`` from ``me`` in a consistent view (0 for a leaf)."""
    order = tree(members, me, key)
    p = order.index(me)
    first = p * fanout + 1
    return max(0, min(fanout, len(order) - first))


def depth(n: int, fanout: int) -> int:
    """Hops from the root to the deepest of ``n`` members in a tree of ``fanout``.

    >>> depth(1, 2), depth(3, 2), depth(4, 2), depth(2600, 2), depth(2600, 4)
    (0, 1, 2, 11, 6)
    """
    d, last, width = 0, 1, 1  # members in levels 0..d, width of level d
    while last < n:
        width *= fanout
        last += width
        d += 1
    return d
