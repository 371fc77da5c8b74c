"""Docker's token flow and direct credentials over a real aiohttp server on loopback."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from regsidecar.api.auth import TOKEN_PATH, require, token_endpoint
from regsidecar.api.keys import AUTH, IDENTITY, SETTINGS
from regsidecar.api.middleware import oci_errors
from regsidecar.auth import jwt
from regsidecar.auth.policy import ISSUER, KEY_FILE, Authenticator
from regsidecar.auth.scopes import Action
from regsidecar.config import AuthSettings, Settings

CI_TOKEN = "ci-" + "t" * 29
REPO = "team/app"
Client = TestClient[web.Request, web.Application]
MakeClient = Callable[[web.Application], Awaitable[Client]]


async def _base(request: web.Request) -> web.Response:
    await require(request, None, "pull")
    return web.json_response({})


async def _thing(request: web.Request) -> web.Response:
    actions: dict[str, Action] = {"GET": "pull", "PUT": "push", "DELETE": "delete"}
    identity = await require(request, request.match_info["name"], actions[request.method])
    assert request[IDENTITY] is identity
    return web.json_response({"name": identity.name, "via": identity.via})


def _app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[oci_errors])
    app[SETTINGS] = settings
    app[AUTH] = Authenticator.from_settings(settings)
    app.router.add_route("*", TOKEN_PATH, token_endpoint)
    app.router.add_get("/v2/", _base)
    app.router.add_get("/v2/_catalog", _base)  # the catalog asks what /v2/ asks
    app.router.add_route("*", "/v2/{name:.+}/thing", _thing)
    return app


def _settings(tmp_path: Path, **auth: Any) -> Settings:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(
        "".join(
            f"{user}:{bcrypt.hashpw(pw.encode(), bcrypt.gensalt(4)).decode()}\n"
            for user, pw in [("writer", "wpw"), ("reader", "rpw")]
        )
    )
    (tmp_path / "tokens").write_text(f"ci:{CI_TOKEN}\n")
    auth.setdefault("writers", ["writer", "ci"])
    return Settings(
        data_dir=str(tmp_path / "data"),
        auth=AuthSettings(htpasswd=str(htpasswd), tokens=str(tmp_path / "tokens"), **auth),
    )


@pytest.fixture
async def client(tmp_path: Path, aiohttp_client: MakeClient) -> Client:
    return await aiohttp_client(_app(_settings(tmp_path)))


def _challenge(response: aiohttp.ClientResponse) -> dict[str, str]:
    header = response.headers["WWW-Authenticate"]
    scheme, _, params = header.partition(" ")
    assert scheme == "Bearer"
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', params))


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _access(token: str) -> list[dict[str, Any]]:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    access: list[dict[str, Any]] = claims["access"]
    return access


async def _error(response: aiohttp.ClientResponse) -> str:
    body = await response.json()
    code: str = body["errors"][0]["code"]
    return code


async def _token(
    client: Client, scope: str = f"repository:{REPO}:pull,push", **headers: str
) -> str:
    response = await client.get(
        TOKEN_PATH, params={"service": "regsidecar", "scope": scope}, headers=headers
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["token"] == body["access_token"]
    token: str = body["token"]
    return token


async def test_anonymous_docker_flow_gets_a_pull_token_and_uses_it(client: Client) -> None:
    response = await client.get("/v2/")
    assert response.status == 401
    assert await _error(response) == "UNAUTHORIZED"
    challenge = _challenge(response)
    assert challenge == {
        "realm": f"http://{client.host}:{client.port}{TOKEN_PATH}",
        "service": "regsidecar",
    }
    # Fetched from the realm as given, as docker does.
    async with client.session.get(
        challenge["realm"],
        params={"service": challenge["service"], "scope": f"repository:{REPO}:pull,push"},
    ) as response:
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
    assert body["expires_in"] == 300
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["issued_at"])
    token = body["token"]
    assert _access(token) == [{"type": "repository", "name": REPO, "actions": ["pull"]}]

    assert (await client.get("/v2/", headers=_bearer(token))).status == 200
    response = await client.get(f"/v2/{REPO}/thing", headers=_bearer(token))
    assert await response.json() == {"name": None, "via": "token"}
    response = await client.put(f"/v2/{REPO}/thing", headers=_bearer(token))
    assert response.status == 401
    assert _challenge(response)["scope"] == f"repository:{REPO}:push"
    assert _challenge(response)["error"] == "insufficient_scope"
    # A repository the token does not name: anyone may pull it (anonymous_pull), so the
    # token does not take that away.
    assert (await client.get("/v2/other/thing", headers=_bearer(token))).status == 200


async def test_anonymous_pull_without_any_token_works_but_push_is_challenged(
    client: Client,
) -> None:
    assert (await client.get(f"/v2/{REPO}/thing")).status == 200
    response = await client.put(f"/v2/{REPO}/thing")
    assert response.status == 401
    challenge = _challenge(response)
    assert challenge["scope"] == f"repository:{REPO}:push"
    assert "error" not in challenge


async def test_a_writer_logging_in_at_the_token_endpoint_gets_push(client: Client) -> None:
    token = await _token(client, **_basic("writer", "wpw"))
    assert _access(token) == [{"type": "repository", "name": REPO, "actions": ["pull", "push"]}]
    response = await client.put(f"/v2/{REPO}/thing", headers=_bearer(token))
    assert response.status == 200
    assert await response.json() == {"name": "writer", "via": "token"}


async def test_a_reader_gets_pull_only_and_is_denied_push(client: Client) -> None:
    token = await _token(client, **_basic("reader", "rpw"))
    assert _access(token) == [{"type": "repository", "name": REPO, "actions": ["pull"]}]
    for headers in (_bearer(token), _basic("reader", "rpw")):
        response = await client.put(f"/v2/{REPO}/thing", headers=headers)
        assert response.status == 403
        assert await response.json() == {
            "errors": [{"code": "DENIED", "message": f"reader may not push {REPO}"}]
        }


async def test_a_bad_password_is_401_at_the_token_endpoint_and_at_the_api(
    client: Client,
) -> None:
    response = await client.get(TOKEN_PATH, headers=_basic("writer", "wrong"))
    assert response.status == 401
    assert await _error(response) == "UNAUTHORIZED"
    assert response.headers["WWW-Authenticate"] == 'Basic realm="regsidecar"'
    response = await client.get(f"/v2/{REPO}/thing", headers=_basic("writer", "wrong"))
    assert response.status == 401
    assert await _error(response) == "UNAUTHORIZED"
    assert _challenge(response)["service"] == "regsidecar"


async def test_a_static_token_works_as_bearer_and_as_a_basic_password(client: Client) -> None:
    for headers in (_bearer(CI_TOKEN), _basic("anything", CI_TOKEN)):
        response = await client.put(f"/v2/{REPO}/thing", headers=headers)
        assert response.status == 200
        assert await response.json() == {"name": "ci", "via": "static-token"}
    assert (await client.get("/v2/", headers=_bearer(CI_TOKEN))).status == 200
    token = await _token(client, **_basic("ci", CI_TOKEN))
    assert _access(token)[0]["actions"] == ["pull", "push"]


async def test_an_expired_token_is_401(tmp_path: Path, aiohttp_client: MakeClient) -> None:
    settings = _settings(tmp_path)
    client = await aiohttp_client(_app(settings))
    key = (tmp_path / "data" / KEY_FILE).read_bytes()
    access = [{"type": "repository", "name": REPO, "actions": ["pull", "push"]}]
    claims = jwt.make_claims(ISSUER, "writer", "regsidecar", access, ttl_s=60, now=time.time())
    fresh = jwt.sign(claims, key)
    assert (await client.put(f"/v2/{REPO}/thing", headers=_bearer(fresh))).status == 200
    claims = jwt.make_claims(
        ISSUER, "writer", "regsidecar", access, ttl_s=60, now=time.time() - 3600
    )
    response = await client.put(f"/v2/{REPO}/thing", headers=_bearer(jwt.sign(claims, key)))
    assert response.status == 401
    assert _challenge(response)["error"] == "invalid_token"
    forged = jwt.sign(claims | {"exp": time.time() + 60}, b"x" * 32)
    assert (await client.put(f"/v2/{REPO}/thing", headers=_bearer(forged))).status == 401


async def test_the_oauth2_password_grant(client: Client) -> None:
    form = {
        "grant_type": "password",
        "username": "writer",
        "password": "wpw",
        "service": "regsidecar",
        "scope": f"repository:{REPO}:pull,push repository:other:pull",
        "client_id": "containerd",
    }
    response = await client.post(TOKEN_PATH, data=form)
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert [a["name"] for a in _access(body["access_token"])] == [REPO, "other"]
    response = await client.post(TOKEN_PATH, data=form | {"password": "wrong"})
    assert response.status == 401
    assert await _error(response) == "UNAUTHORIZED"
    response = await client.post(TOKEN_PATH, data={"grant_type": "refresh_token"})
    assert response.status == 400
    response = await client.post(TOKEN_PATH, data={"grant_type": "password"})
    assert response.status == 400


async def test_the_token_endpoint_does_not_renew_its_own_tokens(client: Client) -> None:
    token = await _token(client, **_basic("writer", "wpw"))
    response = await client.get(TOKEN_PATH, headers=_bearer(token))
    assert response.status == 401


async def test_the_token_endpoint_serves_one_service(client: Client) -> None:
    response = await client.get(TOKEN_PATH, params={"service": "elsewhere"})
    assert response.status == 400


async def test_without_anonymous_pull_anonymous_callers_get_401_everywhere(
    tmp_path: Path, aiohttp_client: MakeClient
) -> None:
    """anonymous_pull off: no token for nobody (the token endpoint challenges for Basic),
    and /v2/, the catalog and every repository answer 401 to anonymous callers."""
    client = await aiohttp_client(_app(_settings(tmp_path, anonymous_pull=False)))
    response = await client.get(f"/v2/{REPO}/thing")
    assert response.status == 401
    assert _challenge(response)["scope"] == f"repository:{REPO}:pull"
    for path in ("/v2/", "/v2/_catalog"):
        response = await client.get(path)
        assert response.status == 401, path
        assert await _error(response) == "UNAUTHORIZED"
    response = await client.get(TOKEN_PATH, params={"scope": "registry:catalog:*"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    token = await _token(client, **_basic("reader", "rpw"))
    assert (await client.get("/v2/", headers=_bearer(token))).status == 200
    assert (await client.get(f"/v2/{REPO}/thing", headers=_bearer(token))).status == 200


async def test_a_token_issued_to_nobody_opens_nothing_once_anonymous_pull_is_off(
    tmp_path: Path, aiohttp_client: MakeClient
) -> None:
    """A token minted for an anonymous caller while anonymous pull was on (same secret):
    after the setting is turned off it no longer gets past /v2/ or the catalog."""
    on = await aiohttp_client(_app(_settings(tmp_path, anonymous_pull=True)))
    token = await _token(on)
    assert (await on.get("/v2/", headers=_bearer(token))).status == 200
    off = await aiohttp_client(_app(_settings(tmp_path, anonymous_pull=False)))
    for path in ("/v2/", "/v2/_catalog", f"/v2/{REPO}/thing"):
        assert (await off.get(path, headers=_bearer(token))).status == 401, path


async def test_with_auth_off_everyone_pulls_and_nobody_writes(
    tmp_path: Path, aiohttp_client: MakeClient
) -> None:
    client = await aiohttp_client(_app(Settings(data_dir=str(tmp_path))))
    assert (await client.get("/v2/")).status == 200
    response = await client.get(f"/v2/{REPO}/thing")
    assert await response.json() == {"name": None, "via": "anonymous"}
    for method in ("PUT", "DELETE"):
        response = await client.request(method, f"/v2/{REPO}/thing", headers=_bearer(CI_TOKEN))
        assert response.status == 405
        assert await _error(response) == "UNSUPPORTED"
    assert (await client.get(TOKEN_PATH)).status == 404
