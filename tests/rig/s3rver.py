"""s3rver 3.7.1 (node) as a subprocess: an S3 API that enforces request-time skew.

What s3rver 3.7.1 checks (read from its ``lib/middleware/authentication.js``
and observed; see tests/test_rig_clock.py):

* the request time (``X-Amz-Date``, else ``Date``) must be within 15 min of its
  own clock, else **403 RequestTimeTooSkewed** -- checked *before* the access key;
* the access key must exist (``S3RVER``/``S3RVER`` only), else 403 InvalidAccessKeyId;
* a **SigV4 signature is not verified** (a wrong secret is accepted); SigV2 is;
* a request without any Authorization is served anonymously (no 403).

It lacks ListMultipartUploads, so a registry:2 cannot push to it: seed a bucket
with ``upload_tree`` from a filesystem-driver tree instead.

Every response (success or error) carries ``Date`` in IMF-fixdate form
(``Sun, 22 Nov 2026 00:08:46 GMT``, node's http default).
"""

from __future__ import annotations

import datetime
import http.client
import json
import shutil
import subprocess
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from .ports import LOOPBACK, assert_loopback, free_port, wait_tcp
from .proc import MissingBinary, ServerProcess, child_env, which
from .s3log import RequestCounter, S3Path

#: The only credentials s3rver knows.
ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"
REGION = "us-east-1"

#: s3rver's limit on |request time - server time|.
MAX_SKEW_S = 900

NODE_DIR = Path(__file__).resolve().parent / "node"
S3RVER_BIN = NODE_DIR / "node_modules" / ".bin" / "s3rver"
REQLOG_JS = NODE_DIR / "reqlog.js"


def s3rver_missing() -> str | None:
    """Why s3rver cannot run here (for a pytest skip), or None if it can."""
    if shutil.which("node") is None:
        return "node not installed (run tests/rig/install-deps.sh)"
    if not S3RVER_BIN.exists():
        return f"{S3RVER_BIN} missing (run tests/rig/install-deps.sh: npm ci in {NODE_DIR})"
    return None


@dataclass(frozen=True)
class S3rverRequest(S3Path):
    """One request s3rver answered, as ``reqlog.js`` logged it.

    ``path`` is the raw request target (percent-encoded, with the query);
    ``auth`` the Authorization scheme (``AWS4-HMAC-SHA256``) or None if unsigned.
    """

    method: str
    path: str
    status: int
    x_amz_date: str | None
    auth: str | None

    @property
    def path_only(self) -> str:
        return urllib.parse.unquote(self.path.split("?", 1)[0])


class S3rver(ServerProcess, RequestCounter):
    """``node .../.bin/s3rver --address 127.0.0.1 --port PORT --directory TMP --silent``.

    Context manager. ``buckets`` are created at start (``--configure-bucket``).
    Data lives in a private temp dir (on disk), removed on stop.
    """

    log_label = "s3rver"

    def __init__(
        self,
        port: int | None = None,
        *,
        buckets: Iterable[str] = (),
        workdir: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.host = LOOPBACK
        self.buckets = list(buckets)
        super().__init__(workdir, prefix="rig-s3rver-", log_name="s3rver.log")
        self.data_dir = self.workdir / "data"
        self.reqlog_path = self.workdir / "requests.jsonl"
        self._extra_env = dict(env or {})
        self._client: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ---------------------------------------------------------
    def argv(self) -> list[str]:
        why = s3rver_missing()
        if why is not None:
            raise MissingBinary(why)
        argv = [
            which("node"),
            "--require",
            str(REQLOG_JS),
            str(S3RVER_BIN),
            "--address",
            self.host,
            "--port",
            str(self.port),
            "--directory",
            str(self.data_dir),
            "--no-vhost-buckets",
            "--silent",
        ]
        for b in self.buckets:
            argv += ["--configure-bucket", b]
        return argv

    def start(self, deadline_s: float = 30.0) -> S3rver:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = child_env({"RIG_S3RVER_REQLOG": str(self.reqlog_path), **self._extra_env})

        # s3rver listens only after --configure-bucket is done; a bare TCP
        # connect sends no request, so the request log stays clean.
        def ready(proc: subprocess.Popen[bytes]) -> None:
            wait_tcp(self.host, self.port, deadline_s, proc=proc, log=self.log_path)

        self._start(self.argv(), ready, env=env, deadline_s=deadline_s)
        return self

    # -- S3 helpers --------------------------------------------------------
    def client(self) -> Any:
        """A boto3 S3 client (S3RVER/S3RVER, us-east-1, path style; cached)."""
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                # plain bodies only: s3rver ignores aws-chunked framing/trailers
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def upload_tree(self, bucket: str, root_dir: str | Path, prefix: str = "") -> list[str]:
        """Copy every file under ``root_dir`` into ``bucket``; key = relative path
        (under ``prefix``). Returns the keys, sorted."""
        root = Path(root_dir)
        client = self.client()
        keys = []
        for path in sorted(root.rglob("*")):
            if path.is_file():
                key = path.relative_to(root).as_posix()
                key = f"{prefix.strip('/')}/{key}" if prefix.strip("/") else key
                client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
                keys.append(key)
        return keys

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        keys: list[str] = []
        paginator = self.client().get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(keys)

    def get(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    # -- request log -------------------------------------------------------
    def requests(self, since: int = 0) -> list[S3rverRequest]:
        """Requests s3rver has answered, oldest first (``since``: skip that many).

        Every request whose whole response a client has read is in it.
        """
        out: list[S3rverRequest] = []
        try:
            text = self.reqlog_path.read_text(errors="replace")
        except OSError:
            return out
        for line in text.splitlines():
            try:
                d = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            out.append(
                S3rverRequest(d["method"], d["path"], int(d["status"]), d["x_amz_date"], d["auth"])
            )
        return out[since:]


# -- raw signed requests (any S3 endpoint: s3rver, moto) ---------------------
def sign_headers(
    method: str,
    url: str,
    *,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    region: str = REGION,
    skew_s: float = 0.0,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> dict[str, str]:
    """SigV4 (S3 flavour) request headers for ``method url`` as signed by botocore
    at (now + ``skew_s``): X-Amz-Date, X-Amz-Content-SHA256, Authorization."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
    at = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    at += datetime.timedelta(seconds=skew_s)
    # add_auth() overwrites request.context["timestamp"] with get_current_datetime().
    with mock.patch("botocore.auth.get_current_datetime", lambda *a, **k: at):
        S3SigV4Auth(Credentials(access_key, secret_key), "s3", region).add_auth(req)
    return dict(req.headers.items())


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return None

    def xml(self, tag: str) -> str | None:
        """Text of the first ``<tag>`` in the body (S3 error documents are flat)."""
        text = self.body.decode("utf-8", "replace")
        start = text.find(f"<{tag}>")
        end = text.find(f"</{tag}>")
        return text[start + len(tag) + 2 : end] if 0 <= start < end else None


def raw_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    timeout_s: float = 10.0,
) -> RawResponse:
    """One plain-http request to a loopback URL, exactly these headers (no retries)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme != "http" or u.hostname is None:
        raise ValueError(f"only plain http URLs are supported: {url!r}")
    assert_loopback(u.hostname)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout_s)
    try:
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        conn.request(method, target, body=body or None, headers=dict(headers or {}))
        resp = conn.getresponse()
        return RawResponse(resp.status, dict(resp.getheaders()), resp.read())
    finally:
        conn.close()


def signed_request(
    method: str,
    url: str,
    *,
    access_key: str = ACCESS_KEY,
    secret_key: str = SECRET_KEY,
    region: str = REGION,
    skew_s: float = 0.0,
    body: bytes = b"",
) -> RawResponse:
    """``raw_request`` SigV4-signed at (now + ``skew_s``) with these credentials."""
    hdrs = sign_headers(
        method,
        url,
        access_key=access_key,
        secret_key=secret_key,
        region=region,
        skew_s=skew_s,
        body=body,
    )
    return raw_request(method, url, headers=hdrs, body=body)
