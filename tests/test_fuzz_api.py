"""Property-based fuzzing of the HTTP API against real sidecars: whatever the request, no 5xx
and no traceback.

Two sidecars: read-only over the embedded default store, and one that takes pushes (auth on,
a directory store). Hypothesis draws requests from the registry's own vocabulary and beyond:
methods (known and not), paths built from API segments, repository names, references and
digests (valid, malformed, percent-encoded, dot segments, non-ASCII), query strings
(``n``, ``last``, ``digest``, ``mount``, ``from``, junk), and headers (``Range``, ``Accept``,
``Content-Type``, ``Authorization`` good and bad, junk), with a small body. Each is sent raw
over a socket (no client normalises the path) with ``Connection: close``.

Asserted for every request: a status line comes back, under 500; a body sent with an error
status is OCI JSON (``{"errors": [...]}``) unless the request was a HEAD. After the run: no
log line at error level and no traceback in either sidecar's log.

The suite runs ``REGSIDECAR_FUZZ_EXAMPLES`` examples per sidecar (default 150); a longer run:
``REGSIDECAR_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_api.py`` (``benchmarks/fuzz``).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.oci_client import READER, WRITER, Creds
from tests.rig.htpasswd import PushAuth
from tests.sidecar import Sidecar

pytestmark = pytest.mark.rig

EXAMPLES = int(os.environ.get("REGSIDECAR_FUZZ_EXAMPLES", "150"))
HEX = "0123456789abcdef"

names = st.sampled_from(
    ["regsidecar/hello", "app", "a/b/c", "A", "x" * 300, "..", "a//b", "a%2Fb", "ünï", "_x", ""]
)
digests = st.one_of(
    st.text(HEX, min_size=64, max_size=64).map(lambda h: f"sha256:{h}"),
    st.text(HEX, min_size=128, max_size=128).map(lambda h: f"sha512:{h}"),
    st.sampled_from(["sha256:", "sha256:xyz", "md5:abc", "sha256:" + "A" * 64, "sha256%3Aab"]),
)
references = st.one_of(
    digests,
    st.sampled_from(["latest", "v1", "-bad", "a" * 200, "%00", "..", "ünï", ""]),
    st.text(st.characters(codec="utf-8", exclude_characters="/?#\r\n"), max_size=20),
)
segment = st.one_of(
    names,
    references,
    st.sampled_from(
        ["v2", "manifests", "blobs", "uploads", "tags", "list", "_catalog", "referrers", "-"]
    ),
    st.sampled_from(["token", "promote", "cache", "stats", "gc", "healthz", "metrics", "%2e%2e"]),
)


@st.composite
def paths(draw: st.DrawFn) -> str:
    shape = draw(st.integers(0, 5))
    if shape == 0:
        parts = draw(st.lists(segment, max_size=8))
        return "/" + "/".join(parts)
    name, ref = draw(names), draw(references)
    return [
        f"/v2/{name}/manifests/{ref}",
        f"/v2/{name}/blobs/{ref}",
        f"/v2/{name}/blobs/uploads/{draw(st.uuids())}",
        f"/v2/{name}/tags/list",
        f"/v2/{name}/referrers/{ref}",
    ][shape - 1]


queries = st.lists(
    st.tuples(
        st.sampled_from(["n", "last", "digest", "mount", "from", "artifactType", "dry_run", "x"]),
        st.one_of(
            st.text(max_size=12),
            st.integers(-5, 10**12).map(str),
            digests,
            st.sampled_from(["\u00b2", "\uff11", "0x10", "-1", " 3"]),
        ),
    ),
    max_size=4,
)


header_values = {
    "Range": st.one_of(
        st.sampled_from(["bytes=0-0", "bytes=-1", "bytes=5-", "BYTES = 0 - 3", "bytes=9-1"]),
        st.text(max_size=20),
    ),
    "Accept": st.sampled_from(
        [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json",
            "*/*",
            "",
            "x" * 500,
        ]
    ),
    "Content-Type": st.sampled_from(
        ["application/vnd.oci.image.manifest.v1+json", "application/octet-stream", "text/plain"]
    ),
    "Authorization": st.one_of(
        st.sampled_from(
            [
                WRITER.encode(),
                READER.encode(),
                Creds("nobody", "x").encode(),
                "Bearer abc.def.ghi",
                "Bearer",
                "Basic !!!",
            ]
        ),
        st.text(max_size=30),
    ),
    "X-Junk": st.text(max_size=40),
}


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"]))
    path = draw(paths())
    query = draw(queries)
    if query:
        path += "?" + "&".join(f"{quote(k)}={quote(v)}" for k, v in query)
    body = draw(st.binary(max_size=256))
    headers = [("Host", "fuzz"), ("Connection", "close"), ("Content-Length", str(len(body)))]
    for name, strategy in header_values.items():
        if draw(st.booleans()):
            value = draw(strategy)
            # A header value cannot hold a line break: that is a different request.
            headers.append((name, value.replace("\r", " ").replace("\n", " ")))
    head = f"{method} {quote_path(path)} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers
    )
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + body


def quote_path(path: str) -> str:
    """Non-ASCII and spaces percent-encoded (a request line is ASCII); the rest as drawn."""
    return "".join(
        c if (0x21 <= ord(c) < 0x7F) else "".join(f"%{b:02X}" for b in c.encode()) for c in path
    )


def send(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes, str]:
    """(status, headers, body, method) of one raw request on a fresh connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(raw)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
    reply = b"".join(chunks)
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), (raw[:200], reply[:200])
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body, raw.split(b" ", 1)[0].decode()


def check(port: int, raw: bytes) -> None:
    status, headers, body, method = send(port, raw)
    assert status < 500, (status, raw[:300], body[:300])
    if status >= 400 and body and method != "HEAD":
        assert headers.get("content-type", "").startswith("application/json"), (raw[:300], body)
        doc = json.loads(body)
        assert isinstance(doc.get("errors"), list) and doc["errors"], (raw[:300], body)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Sidecar]]:
    base = tmp_path_factory.mktemp("fuzz")
    cfg = PushAuth(protect=[{"tags": "v*", "rule": "immutable"}]).write(base / "auth")
    with (
        Sidecar([], data_dir=base / "ro") as ro,
        Sidecar(
            ["--storage", str(base / "store"), "--config", str(cfg)], data_dir=base / "rw"
        ) as rw,
    ):
        yield {"read-only": ro, "push": rw}
        for sc in (ro, rw):
            bad = [
                e
                for e in sc.logs()
                if e.get("level") in ("error", "critical") or "Traceback" in json.dumps(e)
            ]
            assert bad == [], bad[:3]
            assert "Traceback" not in Path(sc.log_path).read_text(errors="replace")


@pytest.mark.timeout(max(600, EXAMPLES))
@pytest.mark.parametrize("which", ["read-only", "push"])
def test_no_request_gets_a_5xx_or_a_traceback(fuzzed: dict[str, Sidecar], which: str) -> None:
    port = fuzzed[which].port

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=EXAMPLES <= 150,  # the suite: the same requests each run; longer: new ones
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(requests())
    def run(raw: bytes) -> None:
        check(port, raw)

    run()
