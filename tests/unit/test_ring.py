"""Rendezvous trees per part (pure): the same answer on every host, balanced, stable."""

from __future__ import annotations

import collections

import pytest

from regsidecar.peers.ring import Member, ancestors, children, depth, part_key, rank, tree

DIGEST = "sha256:" + "ab" * 32
MiB = 1024 * 1024


def _fleet(n: int, zones: tuple[str, ...] = ()) -> list[Member]:
    return [
        Member(
            f"http://10.0.{i // 250}.{i % 250 + 1}:5001", zones[i % len(zones)] if zones else None
        )
        for i in range(n)
    ]


def _parent(members: list[Member], me: Member, key: str) -> Member | None:
    chain = ancestors(members, me, key, fanout=2, most=1)
    return chain[0] if chain else None


def test_every_host_computes_the_same_tree_whatever_order_it_lists_members_in() -> None:
    members = _fleet(40)
    key = part_key(DIGEST, 0)
    parents = {m.url: _parent(members, m, key) for m in members}
    shuffled = list(reversed(members))
    assert parents == {m.url: _parent(shuffled, m, key) for m in members}
    # One root, and each member has at most two children.
    assert sum(p is None for p in parents.values()) == 1
    counts = collections.Counter(p.url for p in parents.values() if p is not None)
    assert max(counts.values()) <= 2
    assert all(counts[m.url] == children(members, m, key) for m in members)


def test_following_parents_always_reaches_the_root_without_a_cycle() -> None:
    members = _fleet(100)
    key = part_key(DIGEST, 3 * MiB)
    root = rank(members, key)[0]
    for m in members:
        chain = ancestors(members, m, key, fanout=2)
        assert len(chain) <= depth(100, 2)
        assert (chain[-1] if chain else m) == root
        assert m not in chain and len(set(chain)) == len(chain)


def test_each_part_has_its_own_root_so_every_host_is_a_root_of_some() -> None:
    members = _fleet(40)
    roots = collections.Counter(rank(members, part_key(DIGEST, i * MiB))[0].url for i in range(400))
    assert len(roots) == 40  # every host is the root of some part
    assert max(roots.values()) < 30  # ~10 each; no host roots a large share


def test_uploads_spread_over_the_fleet_across_parts() -> None:
    """Over 64 parts, each of 40 hosts sends about one copy of the blob (each part is sent
    N-1 times over N hosts: 62.4 parts each on average); the busiest sends under 1.5 copies,
    and every host sends some (with one tree for the whole blob, half would send 2 copies
    and half none)."""
    members = _fleet(40)
    sent = collections.Counter()
    for i in range(64):
        key = part_key(DIGEST, i * MiB)
        for m in members:
            p = _parent(members, m, key)
            if p is not None:
                sent[p.url] += 1
    assert sum(sent.values()) == 64 * 39
    assert max(sent.values()) < 1.5 * 64
    assert min(sent[m.url] for m in members) > 0.5 * 64


def test_a_member_leaving_moves_only_its_own_subtrees_roots() -> None:
    members = _fleet(50)
    keys = [part_key(DIGEST, i * MiB) for i in range(200)]
    before = {k: rank(members, k)[0] for k in keys}
    gone = members[7]
    after = {k: rank([m for m in members if m != gone], k)[0] for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == gone for k in moved)


def test_with_zones_a_host_tree_holds_its_zone_under_the_global_root() -> None:
    members = _fleet(30, zones=("a", "b", "c"))
    key = part_key(DIGEST, 0)
    root = rank(members, key)[0]
    for m in members:
        order = tree(members, m, key)
        assert order[0] == root
        assert all(x.zone == m.zone for x in order[1:])
        chain = ancestors(members, m, key)
        assert all(x.zone == m.zone for x in chain[:-1])  # only the root may be elsewhere
        if chain:
            assert chain[-1] == root


def test_a_host_not_in_the_list_still_gets_a_chain_to_the_root() -> None:
    members = _fleet(10)
    outsider = Member("local://laptop")
    chain = ancestors(members, outsider, part_key(DIGEST, 0))
    assert outsider not in chain
    assert (chain[-1] if chain else outsider) == rank([*members, outsider], part_key(DIGEST, 0))[0]


def test_most_bounds_the_chain() -> None:
    members = _fleet(200)
    key = part_key(DIGEST, 0)
    deepest = max(members, key=lambda m: len(ancestors(members, m, key)))
    assert len(ancestors(members, deepest, key)) == depth(200, 2)
    assert len(ancestors(members, deepest, key, most=2)) == 2
    with pytest.raises(ValueError):
        ancestors(members, deepest, key, fanout=0)
