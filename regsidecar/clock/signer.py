"""SigV4 signing for S3 with an injected clock.

botocore's signer always reads the local wall clock. S3 refuses a request whose signing time
is more than 15 minutes from its own, so the time used here comes from ``now`` (a callable the
skew estimator can correct) instead.

>>> signer = ClockedS3Signer(credentials, "us-east-1", now=time.time)  # doctest: +SKIP
>>> signer.sign("GET", "http://127.0.0.1:9000/bucket/key", {})  # doctest: +SKIP
>>> digest = hashlib.sha256(body).hexdigest()  # doctest: +SKIP
>>> signer.sign("PUT", url, headers, payload_sha256=digest)  # doctest: +SKIP

A request with a body is signed over the body's sha256, which the caller computes (a file is
hashed before it is streamed): S3 then refuses a body that does not match it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from botocore.auth import SIGV4_TIMESTAMP, S3SigV4Auth
from botocore.awsrequest import AWSRequest


class ClockedS3Signer:
    """Signs S3 requests (SigV4) at ``now()`` rather than at the local wall clock."""

    def __init__(self, credentials: Any, region: str, *, now: Callable[[], float]) -> None:
        self._credentials = credentials
        self._region = region
        self._now = now

    def sign(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        payload_sha256: str | None = None,
    ) -> dict[str, str]:
        """The given headers plus X-Amz-Date, the payload hash and Authorization.

        ``payload_sha256``: hex sha256 of the request body; without it the body is empty (GET,
        HEAD, DELETE) and its hash is botocore's own (of no bytes)."""
        frozen = self._credentials.get_frozen_credentials()
        request = AWSRequest(method=method, url=url, headers=dict(headers))
        # Any: the steps below are botocore's own signing helpers, which its stubs do not list.
        auth: Any = S3SigV4Auth(frozen, "s3", self._region)
        when = datetime.datetime.fromtimestamp(self._now(), datetime.UTC).replace(tzinfo=None)
        request.context["timestamp"] = when.strftime(SIGV4_TIMESTAMP)
        # The same steps as SigV4Auth.add_auth, with our timestamp instead of the wall clock.
        auth._modify_request_before_signing(request)
        if payload_sha256 is not None:
            # botocore has just set X-Amz-Content-SHA256 to the hash of request.body (empty
            # here: the body is streamed later); canonical_request signs the header's value.
            # The headers are an email Message: assigning adds, so delete first.
            del request.headers["X-Amz-Content-SHA256"]
            request.headers["X-Amz-Content-SHA256"] = payload_sha256
        canonical = auth.canonical_request(request)
        string_to_sign = auth.string_to_sign(request, canonical)
        signature = auth.signature(string_to_sign, request)
        auth._inject_signature_to_request(request, signature)
        return dict(request.headers.items())
