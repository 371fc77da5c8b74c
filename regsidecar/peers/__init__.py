"""Peer fetch: the sidecars of one fleet fetch each part of a blob from one another.

::

    membership.py   who the peers are: peers.urls, a DNS name, EC2 (DescribeInstances)
    ring.py         who fetches which part from whom: a rendezvous tree per part (pure)
    source.py       a peer's listener as a BlobSource; the fleet (routes, quarantine)
    listener.py     this host's peer listener: blobs by digest, token, bounded uploads
    fleet.py        Peers from the settings

The store (S3) stays the source of truth and the last resort: a part whose tree parent is
down, busy, slow or lying comes from the next ancestor, then from the store. Tags and
manifests never come from peers, and every blob is verified by its digest on arrival.
"""
