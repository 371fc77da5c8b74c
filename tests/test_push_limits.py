"""Writers are bounded per identity, and a mount gives no blob the caller could not pull.

A real sidecar taking pushes over a directory store, anonymous pulls off. ``ci`` (Basic) and
``release`` (a static token) are writers. Before: a writer opened 3,000 sessions in 1.3 s,
each kept 24 h, and a token scoped to one repository mounted any blob of the store by its
digest (POST ?mount= without from).
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from tests.oci_client import Client, Creds, Resp, random_bytes
from tests.rig.htpasswd import RELEASE_TOKEN, WRITER, PushAuth
from tests.sidecar import Sidecar

pytestmark = pytest.mark.rig
KiB = 1024


def _site(tmp_path: Path, env: dict[str, str]) -> Sidecar:
    auth = PushAuth()
    path = tmp_path / "regsidecar.yml"
    (tmp_path / "auth-files").mkdir(exist_ok=True)
    cfg = auth.config(tmp_path / "auth-files")
    cfg["auth"]["anonymous_pull"] = False
    path.write_text(json.dumps(cfg))
    return Sidecar(["--storage", str(tmp_path / "store"), "--config", str(path)], env=env)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _open(
    client: Client, repo: str, headers: dict[str, str] | None = None
) -> tuple[int, Resp]:
    r = await client.request(
        "POST",
        f"/v2/{repo}/blobs/uploads/",
        headers={"Content-Length": "0"},
        raw_headers=headers,
        auth=None if headers else "default",
    )
    return r.status, r


async def test_each_writer_has_its_own_bound_on_open_sessions_and_staged_bytes(
    tmp_path: Path,
) -> None:
    env = {"REGSIDECAR_PUSH_MAX_OPEN_UPLOADS": "5", "REGSIDECAR_PUSH_MAX_STAGED_BYTES": "1MiB"}
    with _site(tmp_path, env) as sc:
        async with aiohttp.ClientSession() as session:
            ci = Client(session, sc.url)
            release = _bearer(RELEASE_TOKEN[1])
            opened = [await _open(ci, "app") for _ in range(5)]
            assert [s for s, _ in opened] == [202] * 5
            status, refused = await _open(ci, "app")
            assert status == 429
            assert refused.error_codes() == ["TOOMANYREQUESTS"]
            assert "Retry-After" in refused.headers
            # Another writer is not held back by ci's sessions.
            assert (await _open(ci, "app", release))[0] == 202
            # Cancelling one frees a slot.
            r = await ci.request("DELETE", opened[0][1].location)
            assert r.status == 204
            assert (await _open(ci, "app"))[0] == 202
            # Bytes: 600 KiB staged in one session, 600 more in another pass the 1 MiB bound.
            a, b = opened[1][1].location, opened[2][1].location
            chunk = random_bytes(600 * KiB)
            r = await ci.request(
                "PATCH",
                a,
                data=chunk,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert r.status == 202
            r = await ci.request(
                "PATCH",
                b,
                data=chunk,
                headers={"Content-Type": "application/octet-stream"},
            )
            assert r.status == 429
            assert r.error_codes() == ["TOOMANYREQUESTS"]
            # The other writer stages its own bytes.
            status, mine = await _open(ci, "app", release)
            r = await ci.request(
                "PATCH",
                mine.location,
                data=chunk,
                headers={"Content-Type": "application/octet-stream", **release},
                auth=None,
            )
            assert r.status == 202


async def test_a_mount_gives_only_a_blob_the_caller_may_pull(tmp_path: Path) -> None:
    with _site(tmp_path, {}) as sc:
        async with aiohttp.ClientSession() as session:
            ci = Client(session, sc.url)
            secret = random_bytes(2 * KiB)
            digest = await ci.push_blob("secret", secret)
            # A token for push and pull on "app" only (docker's token flow, ci's password).
            r = await ci.request(
                "GET",
                "/-/token",
                params=[("service", "regsidecar"), ("scope", "repository:app:pull,push")],
                raw_headers={"Authorization": Creds(*WRITER).encode()},
                auth=None,
            )
            assert r.status == 200, r.body
            scoped = _bearer(json.loads(r.body)["token"])
            for params in ([("mount", digest)], [("mount", digest), ("from", "secret")]):
                r = await ci.request(
                    "POST",
                    "/v2/app/blobs/uploads/",
                    params=params,
                    headers={"Content-Length": "0"},
                    raw_headers=scoped,
                    auth=None,
                )
                assert r.status == 202, (params, r.status, r.body[:200])
            r = await ci.request("GET", f"/v2/app/blobs/{digest}", raw_headers=scoped, auth=None)
            assert r.status == 404
            # ci itself may pull everything: its mount without from links the blob (201).
            r = await ci.request(
                "POST",
                "/v2/app/blobs/uploads/",
                params=[("mount", digest)],
                headers={"Content-Length": "0"},
            )
            assert r.status == 201
            assert (await ci.request("GET", f"/v2/app/blobs/{digest}")).body == secret
