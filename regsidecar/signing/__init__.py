"""Serve only what CI signed: sigstore simple-signing signatures checked per repository.

::

    payload.py    the signed payload: strict parsing, ECDSA P-256 / Ed25519 verification
    identity.py   Docker references and containers-policy.json's signedIdentity rules

(Work in progress: the policy, signature discovery and the pull path's enforcement follow.)
"""
