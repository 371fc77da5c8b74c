"""The HTTP side of auth: the token endpoint, and ``require`` for every API handler.

>>> app.router.add_route("*", TOKEN_PATH, token_endpoint)  # doctest: +SKIP
>>> identity = await require(request, "team/app", "push")  # doctest: +SKIP

Docker authenticates only when ``GET /v2/`` answers 401 with a challenge, and with a ``Basic``
challenge an anonymous ``docker pull`` fails outright. So the challenge is Docker's token flow
(as Docker Hub's), naming :data:`TOKEN_PATH` as the realm::

    GET /v2/                        401  WWW-Authenticate: Bearer realm="http://h/-/token",
                                                           service="regsidecar"
    GET /-/token?service=regsidecar&scope=repository:team/app:pull,push
        [Authorization: Basic ...]  200  {"token": "...", "expires_in": 300, ...}
    GET /v2/team/app/manifests/v1   Authorization: Bearer <token>

The endpoint hands anonymous clients tokens too (pull scopes only) when ``auth.anonymous_pull``
is on, and challenges them for credentials when it is off; it grants every client what it
asked for and may have. The API also takes ``Basic`` and
static ``Bearer`` tokens directly, for CI and curl.

With auth off (no ``auth.htpasswd``, no ``auth.tokens``) everyone may pull and nobody may
write: writes answer 405 UNSUPPORTED, as distribution's read-only mode does.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web
from multidict import MultiDict, MultiMapping

from regsidecar.api.keys import AUTH, IDENTITY, SETTINGS
from regsidecar.auth.policy import ANONYMOUS, Authenticator, Identity, without_grants
from regsidecar.auth.scopes import Action, format_scope, parse_scopes
from regsidecar.errors import Denied, Unauthorized, Unsupported

log = logging.getLogger(__name__)

TOKEN_PATH: Final = "/-/token"
READ_ONLY: Final = "this sidecar is read-only: set auth.htpasswd or auth.tokens to allow writers"
# RFC 6749 5.1: token responses must not be cached.
_NO_STORE: Final = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def realm(request: web.Request) -> str:
    """The token endpoint's URL as this client reaches it (``auth.realm`` if set)."""
    return request.app[SETTINGS].auth.realm or f"{request.scheme}://{request.host}{TOKEN_PATH}"


async def require(request: web.Request, repository: str | None, action: Action) -> Identity:
    """The caller's identity if it may ``action`` ``repository``; else 401, 403 or 405.

    ``repository`` None is the base route ``/v2/``: with auth on, any valid credentials or
    token get through, and a request without them gets the 401 challenge that tells Docker
    where to fetch a token."""
    auth = request.app.get(AUTH)
    if auth is None:
        if action != "pull":
            raise Unsupported(READ_ONLY)
        request[IDENTITY] = ANONYMOUS
        return ANONYMOUS
    where = realm(request)
    identity = await auth.identify(request.headers.get("Authorization"), realm=where)
    request[IDENTITY] = identity
    if repository is None:
        # Anonymous callers, and tokens issued to nobody, only get through where anonymous
        # pull is on (the base route and the catalog ask "who are you?").
        nobody = identity.via == "anonymous" or identity.name is None
        if identity.via == "anonymous" or (nobody and not auth.settings.anonymous_pull):
            raise Unauthorized(challenge=auth.challenge(where))
        return identity
    if auth.allows(identity, repository, action):
        return identity
    if identity.name is None or auth.allows(without_grants(identity), repository, action):
        # A fresh token could do it (or credentials would): tell the client which scope to
        # ask for. "insufficient_scope" when it did send a token.
        error = "insufficient_scope" if identity.via == "token" else None
        scope = format_scope(repository, [action])
        raise Unauthorized(challenge=auth.challenge(where, scope, error))
    log.info(
        "access denied",
        extra={"user": identity.name, "action": action, "repository": repository},
    )
    raise Denied(f"{identity.name} may not {action} {repository}")


async def token_endpoint(request: web.Request) -> web.Response:
    """``GET`` (Docker's token protocol) or ``POST`` (OAuth2 password grant) a token.

    ``account``, ``client_id`` and ``offline_token`` are accepted and not needed: the token's
    subject is who the credentials prove, and no refresh token is issued, so Docker keeps the
    user's credentials and logs in again when a token expires."""
    auth = request.app.get(AUTH)
    if auth is None:
        raise Unsupported("auth is off: this sidecar issues no tokens", status=404)
    params: MultiMapping[str]
    if request.method == "GET":
        params = request.query
    elif request.method == "POST":
        form = await request.post()
        params = MultiDict((k, v) for k, v in form.items() if isinstance(v, str))
    else:
        raise Unsupported(f"method {request.method} is not supported on {TOKEN_PATH}")
    service = params.get("service")
    if service is not None and service != auth.settings.service:
        raise Unsupported(f"this endpoint issues tokens for {auth.settings.service!r}", status=400)
    if request.method == "GET":
        identity = await _credentials(request, auth)
    else:
        identity = await _password_grant(auth, params)
    body = auth.issue(identity, parse_scopes(params.getall("scope", [])))
    log.debug("token issued", extra={"user": identity.name, "via": identity.via})
    return web.json_response(body, headers=_NO_STORE)


def _token_challenge(auth: Authenticator) -> str:
    # The endpoint itself takes a user name and password, so it challenges for Basic.
    service = auth.settings.service.replace("\\", "\\\\").replace('"', '\\"')
    return f'Basic realm="{service}"'


async def _credentials(request: web.Request, auth: Authenticator) -> Identity:
    """The caller of a GET: anonymous without credentials, else what they prove."""
    try:
        identity = await auth.identify(request.headers.get("Authorization"), realm=realm(request))
    except Unauthorized as err:
        raise Unauthorized(err.message, challenge=_token_challenge(auth)) from None
    if identity.via == "anonymous" and not auth.settings.anonymous_pull:
        raise Unauthorized(
            "anonymous pull is off: log in with a password or static token",
            challenge=_token_challenge(auth),
        )
    if identity.via == "token":
        # An issued token renewing itself would never expire; renewals log in again.
        raise Unauthorized(
            "an issued token cannot be exchanged; log in with a password or static token",
            challenge=_token_challenge(auth),
        )
    return identity


async def _password_grant(auth: Authenticator, form: MultiMapping[str]) -> Identity:
    grant = form.get("grant_type")
    if grant == "refresh_token":
        # No refresh tokens are issued, so none can be presented.
        raise Unsupported("refresh tokens are not issued here; use grant_type=password", status=400)
    if grant != "password":
        raise Unsupported("grant_type must be password", status=400)
    user, password = form.get("username"), form.get("password")
    if user is None or password is None:
        raise Unsupported("the password grant needs username and password", status=400)
    try:
        return await auth.login(user, password)
    except Unauthorized as err:
        raise Unauthorized(err.message, challenge=_token_challenge(auth)) from None
