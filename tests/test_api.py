"""The pull API of a real sidecar process over a filesystem store: behaviour and bad input."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from regsidecar.demo import REPOSITORY, build_sample, write_sample
from regsidecar.oci import mediatypes
from regsidecar.storage import layout
from regsidecar.storage.filesystem import FilesystemDriver
from tests.s3tree import digest_of
from tests.sidecar import Sidecar

OCI_ALL = ", ".join(
    [
        mediatypes.OCI_INDEX,
        mediatypes.OCI_MANIFEST,
        mediatypes.DOCKER_LIST,
        mediatypes.DOCKER_SCHEMA2,
    ]
)
DOCKER_ONLY = mediatypes.DOCKER_SCHEMA2
SAMPLE = build_sample()
LAYER = SAMPLE.blobs[0]
TAGS = [f"t{i:02d}" for i in range(7)]


def _docker_image(fs: FilesystemDriver, repo: str) -> dict[str, str]:
    """A Docker manifest list (amd64 + arm64 schema 2 manifests), tagged 'multi'."""
    out = {}
    entries = []
    for arch in ("arm64", "amd64"):
        config = json.dumps({"architecture": arch, "os": "linux"}).encode()
        cd = digest_of(config)
        fs.put(layout.blob_data(cd), config)
        fs.put(layout.layer_link(repo, cd), cd.encode())
        m = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": mediatypes.DOCKER_SCHEMA2,
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "digest": cd,
                    "size": len(config),
                },
                "layers": [],
            }
        ).encode()
        md = digest_of(m)
        fs.put(layout.blob_data(md), m)
        fs.put(layout.revision_link(repo, md), md.encode())
        entries.append(
            {
                "mediaType": mediatypes.DOCKER_SCHEMA2,
                "digest": md,
                "size": len(m),
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
        out[arch] = md
    lst = json.dumps(
        {"schemaVersion": 2, "mediaType": mediatypes.DOCKER_LIST, "manifests": entries}
    ).encode()
    ld = digest_of(lst)
    fs.put(layout.blob_data(ld), lst)
    fs.put(layout.revision_link(repo, ld), ld.encode())
    fs.put(layout.tag_current_link(repo, "multi"), ld.encode())
    out["list"] = ld
    return out


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("api") / "registry"
    fs = FilesystemDriver(str(root))
    write_sample(fs)
    for tag in TAGS:
        fs.put(layout.tag_current_link(REPOSITORY, tag), SAMPLE.index.digest.encode())
    docker = _docker_image(fs, "docker/img")
    return root, docker


@pytest.fixture(scope="module")
def sidecar(tree: tuple[Path, dict[str, str]]) -> Iterator[Sidecar]:
    with Sidecar(["--storage", str(tree[0])]) as sc:
        yield sc


@pytest.fixture
async def http() -> aiohttp.ClientSession:
    async with aiohttp.ClientSession() as session:
        yield session  # type: ignore[misc]


async def test_base_endpoint(sidecar: Sidecar, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{sidecar.url}/v2/") as r:
        assert r.status == 200
        assert await r.json() == {}
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_manifest_by_tag_headers(
    sidecar: Sidecar, http: aiohttp.ClientSession, method: str
) -> None:
    """Content-Type is the stored media type; digest, length and ETag are set; HEAD has no body."""
    url = f"{sidecar.url}/v2/{REPOSITORY}/manifests/latest"
    async with http.request(method, url, headers={"Accept": OCI_ALL}) as r:
        body = await r.read()
        assert r.status == 200
        assert r.headers["Content-Type"] == mediatypes.OCI_INDEX
        assert r.headers["Docker-Content-Digest"] == SAMPLE.index.digest
        assert r.headers["ETag"] == f'"{SAMPLE.index.digest}"'
        assert int(r.headers["Content-Length"]) == len(SAMPLE.index.data)
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
        assert body == (SAMPLE.index.data if method == "GET" else b"")


async def test_manifest_by_digest_and_if_none_match(
    sidecar: Sidecar, http: aiohttp.ClientSession
) -> None:
    m = SAMPLE.manifests["arm64"]
    url = f"{sidecar.url}/v2/{REPOSITORY}/manifests/{m.digest}"
    async with http.get(url, headers={"Accept": OCI_ALL}) as r:
        assert r.status == 200
        assert await r.read() == m.data
    async with http.get(url, headers={"Accept": OCI_ALL, "If-None-Match": f'"{m.digest}"'}) as r:
        assert r.status == 304
        assert r.headers["Docker-Content-Digest"] == m.digest


async def test_oci_manifest_needs_oci_accept(sidecar: Sidecar, http: aiohttp.ClientSession) -> None:
    """As distribution: an OCI index is not served to a client that does not accept it."""
    async with http.get(
        f"{sidecar.url}/v2/{REPOSITORY}/manifests/latest", headers={"Accept": DOCKER_ONLY}
    ) as r:
        assert r.status == 404
        assert (await r.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"


async def test_docker_list_by_tag_for_a_client_without_list_support(
    sidecar: Sidecar, http: aiohttp.ClientSession, tree: tuple[Path, dict[str, str]]
) -> None:
    """As distribution: the linux/amd64 schema 2 entry is served instead of the list."""
    docker = tree[1]
    url = f"{sidecar.url}/v2/docker/img/manifests/multi"
    async with http.get(url, headers={"Accept": DOCKER_ONLY}) as r:
        assert r.status == 200
        assert r.headers["Docker-Content-Digest"] == docker["amd64"]
        assert r.headers["Content-Type"] == mediatypes.DOCKER_SCHEMA2
    async with http.get(url, headers={"Accept": f"{DOCKER_ONLY}, {mediatypes.DOCKER_LIST}"}) as r:
        assert r.status == 200
        assert r.headers["Docker-Content-Digest"] == docker["list"]
        assert r.headers["Content-Type"] == mediatypes.DOCKER_LIST
    async with http.get(url, headers={"Accept": "application/json"}) as r:
        assert r.status == 400
        assert (await r.json())["errors"][0]["code"] == "MANIFEST_INVALID"


async def test_manifest_of_another_repository_is_unknown(
    sidecar: Sidecar, http: aiohttp.ClientSession
) -> None:
    async with http.get(
        f"{sidecar.url}/v2/docker/img/manifests/{SAMPLE.index.digest}", headers={"Accept": OCI_ALL}
    ) as r:
        assert r.status == 404
        assert (await r.json())["errors"][0]["code"] == "MANIFEST_UNKNOWN"


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_blob(sidecar: Sidecar, http: aiohttp.ClientSession, method: str) -> None:
    async with http.request(method, f"{sidecar.url}/v2/{REPOSITORY}/blobs/{LAYER.digest}") as r:
        assert r.status == 200
        assert r.headers["Docker-Content-Digest"] == LAYER.digest
        assert int(r.headers["Content-Length"]) == len(LAYER.data)
        assert await r.read() == (LAYER.data if method == "GET" else b"")


@pytest.mark.parametrize(
    ("header", "status", "expect"),
    [
        ("bytes=0-9", 206, slice(0, 10)),
        ("bytes=10-", 206, slice(10, None)),
        ("bytes=-5", 206, slice(-5, None)),
        ("bytes=5-100000000", 206, slice(5, None)),
        # what the Range parser accepts (unit case, spaces) the file path serves the same way
        ("BYTES = 0 - 3", 206, slice(0, 4)),
        ("\tbytes=2-3 ", 206, slice(2, 4)),
    ],
)
async def test_blob_ranges(
    sidecar: Sidecar, http: aiohttp.ClientSession, header: str, status: int, expect: slice
) -> None:
    async with http.get(
        f"{sidecar.url}/v2/{REPOSITORY}/blobs/{LAYER.digest}", headers={"Range": header}
    ) as r:
        assert r.status == status
        want = LAYER.data[expect]
        assert await r.read() == want
        start = (
            LAYER.data.index(want)
            if expect.start is None or expect.start >= 0
            else len(LAYER.data) - 5
        )
        assert (
            r.headers["Content-Range"] == f"bytes {start}-{start + len(want) - 1}/{len(LAYER.data)}"
        )


async def test_tags_list_and_pagination(sidecar: Sidecar, http: aiohttp.ClientSession) -> None:
    url = f"{sidecar.url}/v2/{REPOSITORY}/tags/list"
    async with http.get(url) as r:
        assert await r.json() == {"name": REPOSITORY, "tags": sorted(["latest", *TAGS])}
    seen: list[str] = []
    next_url: str | None = f"{url}?n=3"
    pages = 0
    while next_url:
        async with http.get(next_url) as r:
            assert r.status == 200
            page = (await r.json())["tags"]
            assert len(page) <= 3
            seen += page
            link = r.headers.get("Link")
            next_url = f"{sidecar.url}{link.split(';')[0].strip('<>')}" if link else None
            pages += 1
    assert seen == sorted(["latest", *TAGS])
    assert pages == 3
    async with http.get(f"{url}?last=t05") as r:
        assert (await r.json())["tags"] == ["t06"]


# -- bad input: a table of raw requests (no client-side normalisation) -------------------

BAD = [
    # (method, raw path, extra headers, status, OCI code or None for a non-JSON answer)
    ("GET", "/v2/UPPER/manifests/latest", {}, 400, "NAME_INVALID"),
    ("GET", "/v2/%2e%2e/%2e%2e/manifests/latest", {}, 400, "NAME_INVALID"),
    ("GET", "/v2/a/%2e%2e/b/manifests/latest", {}, 400, "NAME_INVALID"),
    ("GET", "/v2/..%2f..%2fetc/manifests/latest", {}, 400, "NAME_INVALID"),
    ("GET", "/v2//etc/passwd/manifests/latest", {}, 400, "NAME_INVALID"),
    ("GET", "/v2/a%00b/manifests/latest", {}, 404, "UNSUPPORTED"),
    ("GET", "/v2/" + "a" * 300 + "/manifests/latest", {}, 400, "NAME_INVALID"),
    ("GET", "/v2/regsidecar/hello/manifests/-bad", {}, 400, "TAG_INVALID"),
    ("GET", "/v2/regsidecar/hello/manifests/" + "t" * 129, {}, 400, "TAG_INVALID"),
    ("GET", "/v2/regsidecar/hello/manifests/sha256:xyz", {}, 400, "DIGEST_INVALID"),
    ("GET", "/v2/regsidecar/hello/manifests/nosuchtag", {}, 404, "MANIFEST_UNKNOWN"),
    ("GET", "/v2/regsidecar/hello/manifests/sha256:" + "0" * 64, {}, 404, "MANIFEST_UNKNOWN"),
    (
        "GET",
        "/v2/regsidecar/hello/blobs/md5:d41d8cd98f00b204e9800998ecf8427e",
        {},
        400,
        "DIGEST_INVALID",
    ),
    ("GET", "/v2/regsidecar/hello/blobs/sha256:" + "A" * 64, {}, 400, "DIGEST_INVALID"),
    ("GET", "/v2/regsidecar/hello/blobs/sha256:" + "0" * 64, {}, 404, "BLOB_UNKNOWN"),
    ("GET", f"/v2/docker/img/blobs/{LAYER.digest}", {}, 404, "BLOB_UNKNOWN"),
    (
        "GET",
        f"/v2/regsidecar/hello/blobs/{LAYER.digest}",
        {"Range": "bytes=abc"},
        416,
        "RANGE_INVALID",
    ),
    (
        "GET",
        f"/v2/regsidecar/hello/blobs/{LAYER.digest}",
        {"Range": "bytes=0-1,5-6"},
        416,
        "RANGE_INVALID",
    ),
    (
        "GET",
        f"/v2/regsidecar/hello/blobs/{LAYER.digest}",
        {"Range": "bytes=99999999-"},
        416,
        "RANGE_INVALID",
    ),
    (
        "GET",
        f"/v2/regsidecar/hello/blobs/{LAYER.digest}",
        {"Range": "bytes=9-3"},
        416,
        "RANGE_INVALID",
    ),
    ("GET", "/v2/no/such/repo/tags/list", {}, 404, "NAME_UNKNOWN"),
    ("GET", "/v2/regsidecar/hello/tags/list?n=-1", {}, 400, "PAGINATION_NUMBER_INVALID"),
    ("GET", "/v2/regsidecar/hello/tags/list?n=abc", {}, 400, "PAGINATION_NUMBER_INVALID"),
    (
        "GET",
        "/v2/regsidecar/hello/tags/list?n=99999999999999999999",
        {},
        400,
        "PAGINATION_NUMBER_INVALID",
    ),
    ("PUT", "/v2/regsidecar/hello/manifests/latest", {}, 405, "UNSUPPORTED"),
    ("DELETE", f"/v2/regsidecar/hello/blobs/{LAYER.digest}", {}, 405, "UNSUPPORTED"),
    ("POST", "/v2/regsidecar/hello/blobs/uploads/", {}, 405, "UNSUPPORTED"),
    ("PATCH", "/v2/regsidecar/hello/blobs/uploads/1234", {}, 405, "UNSUPPORTED"),
    ("GET", "/v3/whatever", {}, 404, "UNSUPPORTED"),
    ("GET", "/v2/regsidecar/hello/unknown/thing", {}, 404, "UNSUPPORTED"),
    ("GET", "/v2/_catalog?n=-1", {}, 400, "PAGINATION_NUMBER_INVALID"),
    # Unicode digits str.isdigit() takes but int() refuses (superscript two, fullwidth one)
    ("GET", "/v2/regsidecar/hello/tags/list?n=%C2%B2", {}, 400, "PAGINATION_NUMBER_INVALID"),
    ("GET", "/v2/regsidecar/hello/tags/list?n=%EF%BC%91", {}, 400, "PAGINATION_NUMBER_INVALID"),
    ("GET", "/v2/_catalog?n=%C2%B2", {}, 400, "PAGINATION_NUMBER_INVALID"),
    ("GET", "/v2/", {"X-Huge": "x" * 20000}, 431, "UNSUPPORTED"),
    ("GET", "/v2/", {"X-Many": "y" * 8000, "X-More": "z" * 8000, "X-Much": "w" * 8000}, 200, None),
    ("GET / HTTP/1.1\r\nBad", "/", {}, 400, "UNSUPPORTED"),
    ("GET", "/v2/" + "a/" * 5000 + "manifests/x", {}, 431, "UNSUPPORTED"),
]


async def raw_request(
    host: str, port: int, method: str, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """Send exactly these bytes (no path normalisation) and read the answer."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if method in ("PUT", "POST", "PATCH"):
            head += "Content-Length: 0\r\n"
        writer.write((head + "\r\n").encode("latin-1"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    header_blob, _, body = data.partition(b"\r\n\r\n")
    lines = header_blob.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, hdrs, body


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    BAD,
    ids=[f"{m} {p[:48]} {list(h)}" for m, p, h, _, _ in BAD],
)
async def test_bad_input_gets_a_clear_oci_error(
    sidecar: Sidecar, method: str, path: str, headers: dict[str, str], status: int, code: str | None
) -> None:
    got_status, hdrs, body = await raw_request("127.0.0.1", sidecar.port, method, path, headers)
    assert got_status == status, body[:300]
    if code is not None:
        doc = json.loads(body)
        assert doc["errors"][0]["code"] == code
        assert doc["errors"][0]["message"]
        assert hdrs["content-type"].startswith("application/json")
        assert hdrs["docker-distribution-api-version"] == "registry/2.0"
    if status == 416 and "99999999" in headers.get("Range", ""):
        assert hdrs["content-range"] == f"bytes */{len(LAYER.data)}"


async def test_sidecar_survives_bad_input_without_a_traceback(
    sidecar: Sidecar, http: aiohttp.ClientSession
) -> None:
    """After the whole bad-input table, the sidecar still serves and logged no unhandled error."""
    for method, path, headers, _, _ in BAD:
        await raw_request("127.0.0.1", sidecar.port, method, path, headers)
    async with http.get(f"{sidecar.url}/v2/{REPOSITORY}/blobs/{LAYER.digest}") as r:
        assert await r.read() == LAYER.data
    logs = sidecar.logs()
    assert not [e for e in logs if e.get("level") == "error"], [
        e for e in logs if e.get("level") == "error"
    ][:3]
    assert not [e for e in logs if "Traceback" in json.dumps(e)]


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        (f"/v2/{REPOSITORY}/manifests/no-such-tag", 404, "MANIFEST_UNKNOWN"),
        (f"/v2/{REPOSITORY}/blobs/sha256:{'0' * 64}", 404, "BLOB_UNKNOWN"),
        (f"/v2/{REPOSITORY}/blobs/sha256:xyz", 400, "DIGEST_INVALID"),
        ("/v2/Bad_Name/manifests/latest", 400, "NAME_INVALID"),
    ],
)
async def test_head_errors_have_the_status_and_length_but_no_body(
    sidecar: Sidecar, http: aiohttp.ClientSession, path: str, status: int, code: str
) -> None:
    """A HEAD that fails gets the same status as the GET (never a 500), the Content-Length of
    the GET's OCI error body, and no body."""
    async with http.get(sidecar.url + path) as r:
        assert r.status == status
        body = await r.read()
        assert json.loads(body)["errors"][0]["code"] == code
    async with http.head(sidecar.url + path) as r:
        assert r.status == status
        assert int(r.headers["Content-Length"]) == len(body)
        assert await r.read() == b""


SECRET = "s3cretT0kenXYZ"  # a credential no log line may ever hold


async def raw_bytes(host: str, port: int, data: bytes) -> bytes:
    """Send exactly ``data`` and read what comes back (bounded)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), 5)
    finally:
        writer.close()


async def test_no_credential_or_query_string_reaches_the_log_whatever_the_input(
    sidecar: Sidecar,
) -> None:
    """Malformed requests that carry a known secret (a Bearer token with a stray CR, as read
    from a CRLF file; a Basic value and a query string with control characters; a secret
    in a header aiohttp refuses): each gets an OCI error, and the secret appears in no log
    line, nor the query string in the access lines."""
    basic = base64.b64encode(f"user:{SECRET}".encode()).decode()
    attacks = [
        f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\r\r\n\r\n",
        f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {basic}\x01\r\n\r\n",
        f"GET /v2/?access_token={SECRET}\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
        f"GET /v2/_catalog?token={SECRET} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        f"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-{SECRET}\x00: v\r\n\r\n",
        f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\nBad Line\r\n\r\n",
        f"GET /v2/{SECRET}\x7f/manifests/x HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for attack in attacks:
        answer = await raw_bytes("127.0.0.1", sidecar.port, attack.encode("latin-1"))
        assert answer.startswith(b"HTTP/1."), answer[:80]
        assert SECRET.encode() not in answer.split(b"\r\n\r\n", 1)[-1], "echoed in the body"
    await asyncio.sleep(0.3)  # access lines are batched
    text = sidecar.log_path.read_text(errors="replace")
    assert SECRET not in text, [line for line in text.splitlines() if SECRET in line][:3]
