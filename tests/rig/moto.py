"""A real moto S3 server as a subprocess, with an S3-side request counter."""

from __future__ import annotations

import http.client
import json
import re
import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ports import (
    LOOPBACK,
    assert_loopback,
    free_port,
    http_status,
    wait_until,
)
from .proc import ServerProcess, child_env, which
from .s3log import RequestCounter, S3Path

#: Dummy credentials moto accepts (it checks no signature unless auth is enabled).
ACCESS_KEY = "rigtestaccesskey"
SECRET_KEY = "rigtestsecretkey"
REGION = "us-east-1"

#: With ``auth=True``: the IAM user whose access key the rig creates, and its policy.
AUTH_USER = "rig-s3-user"
AUTH_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}

# werkzeug: 127.0.0.1 - - [21/Nov/2026 23:25:55] "GET /bucket/key HTTP/1.1" 200 -
# (the path is percent-decoded and may contain spaces; 4xx/5xx lines carry ANSI colours)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE = re.compile(r'\] "(?P<method>[A-Z]+) (?P<path>.*) HTTP/\d(?:\.\d)?" (?P<status>\d{3}) ')
_SYNC_PATH = "/moto-api/"


@dataclass(frozen=True)
class S3Request(S3Path):
    """One request as moto logged it: method, path (incl. query) and status."""

    method: str
    path: str
    status: int


class MotoServer(ServerProcess, RequestCounter):
    """``moto_server -H 127.0.0.1 -p PORT`` in a subprocess (context manager).

    ``requests()`` parses moto's request log; requests to ``/moto-api`` (the
    rig's own readiness/sync probes) are left out.

    ``auth=True``: moto checks SigV4 signatures (403 SignatureDoesNotMatch for a wrong
    secret, 403 for unsigned requests). At start the rig creates an IAM user
    (``AUTH_USER``, inline policy s3:* on *) and an access key while auth is still
    off, then ``POST /moto-api/reset-auth`` with body ``0`` turns it on. Use
    ``.access_key`` / ``.secret_key`` (``client()`` does). moto still never
    checks the request *time*: a skewed but correctly signed request succeeds.
    """

    log_label = "moto"

    def __init__(
        self, port: int | None = None, *, workdir: Path | None = None, auth: bool = False
    ) -> None:
        self.port = port or free_port()
        self.host = LOOPBACK
        super().__init__(workdir, prefix="rig-moto-", log_name="moto.log")
        self._lock = threading.Lock()
        self._log_offset = 0
        self._seen: list[S3Request] = []
        self._client: Any = None
        self.auth = auth
        #: Credentials ``client()`` signs with (an IAM user's key when ``auth``).
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ---------------------------------------------------------
    def start(self, deadline_s: float = 30.0) -> MotoServer:
        argv = [which("moto_server"), "-H", self.host, "-p", str(self.port)]
        # PYTHONUNBUFFERED: every log line reaches the file as soon as it is written.
        env = child_env({"PYTHONUNBUFFERED": "1"}, unset=["AWS_CA_BUNDLE"])
        self._start(
            argv,
            self.endpoint_url + _SYNC_PATH,
            env=env,
            deadline_s=deadline_s,
            then=self._enable_auth if self.auth else None,
        )
        return self

    def _enable_auth(self) -> None:
        """Create the IAM user + key (auth still off), then switch auth on."""
        import boto3

        iam = boto3.client(
            "iam",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        iam.create_user(UserName=AUTH_USER)
        iam.put_user_policy(
            UserName=AUTH_USER, PolicyName="s3-all", PolicyDocument=json.dumps(AUTH_POLICY)
        )
        key = iam.create_access_key(UserName=AUTH_USER)["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
        self._client = None
        status, body = _post(self.endpoint_url + "/moto-api/reset-auth", b"0")
        if status != 200:
            raise RuntimeError(f"moto reset-auth answered {status}: {body!r}")
        # The IAM calls above are the rig's own: keep them out of requests().
        self.sync()
        with self._lock:
            self._seen.clear()

    # -- S3 helpers --------------------------------------------------------
    def client(self) -> Any:
        """A boto3 S3 client for this server (dummy creds, us-east-1, path style; cached)."""
        if self._client is None:
            self._client = self.new_client()
        return self._client

    def new_client(self) -> Any:
        """A fresh boto3 S3 client for this server (``access_key``/``secret_key``)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """All keys in ``bucket`` under ``prefix`` (sorted)."""
        keys: list[str] = []
        for page in (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        ):
            keys.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(keys)

    def get(self, bucket: str, key: str) -> bytes:
        body: bytes = self.client().get_object(Bucket=bucket, Key=key)["Body"].read()
        return body

    # -- request counter ---------------------------------------------------
    def _consume_log(self) -> set[str]:
        """Parse complete new log lines into ``self._seen``; return the sync markers seen."""
        markers: set[str] = set()
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                chunk = f.read()
        except OSError:
            return markers
        end = chunk.rfind(b"\n")
        if end < 0:
            return markers
        self._log_offset += end + 1
        for raw in chunk[: end + 1].splitlines():
            m = _LINE.search(_ANSI.sub("", raw.decode("utf-8", "replace")))
            if m is None:
                continue
            if m["path"].startswith(_SYNC_PATH + "?rig-sync="):
                markers.add(m["path"])
            elif not m["path"].startswith("/moto-api"):
                self._seen.append(S3Request(m["method"], m["path"], int(m["status"])))
        return markers

    def sync(self, deadline_s: float = 10.0) -> None:
        """Make the parsed log complete up to now.

        werkzeug logs a request before it sends the response headers, so once a
        unique marker request has been answered *and* its line is in the file,
        every request answered before it is in the file too.
        """
        with self._lock:
            marker = f"{_SYNC_PATH}?rig-sync={uuid.uuid4().hex}"
            if http_status(self.endpoint_url + marker) is None:
                raise ConnectionError(f"moto at {self.endpoint_url} did not answer the sync probe")
            wait_until(
                lambda: marker in self._consume_log(),
                deadline_s,
                "moto request log sync",
                self._proc.proc if self._proc else None,
                self.log_path,
            )

    def requests(self, *, sync: bool = True, since: int = 0) -> list[S3Request]:
        """S3 requests moto has answered, oldest first (``since``: skip that many).

        Paths are as werkzeug logs them: percent-decoded, with the query string.
        Requests under /moto-api (the rig's readiness and sync probes) are left out.
        """
        if sync:
            self.sync()
        else:
            with self._lock:
                self._consume_log()
        return self._seen[since:]


def _post(url: str, body: bytes, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """POST ``body`` as text/plain to a loopback URL; (status, response body)."""
    u = urllib.parse.urlsplit(url)
    assert u.hostname is not None
    assert_loopback(u.hostname)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout_s)
    try:
        conn.request("POST", u.path, body=body, headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()
