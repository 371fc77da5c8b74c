"""Authentication and authorization: who a request comes from and what it may do.

>>> from regsidecar.auth import Authenticator, Identity
>>> auth = Authenticator.from_settings(settings)  # doctest: +SKIP

:mod:`~regsidecar.auth.policy` holds the rules; :mod:`~regsidecar.auth.htpasswd` and
:mod:`~regsidecar.auth.statictokens` read the credential files; :mod:`~regsidecar.auth.jwt`
and :mod:`~regsidecar.auth.scopes` are the pure parts of Docker's token flow. The HTTP side
(token endpoint, ``require``) is :mod:`regsidecar.api.auth`.
"""

from regsidecar.auth.policy import ANONYMOUS, Authenticator, Identity

__all__ = ["ANONYMOUS", "Authenticator", "Identity"]
