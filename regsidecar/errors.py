"""The exception tree, and the OCI error codes it maps to.

::

    RegsidecarError
     ├── ConfigError                 bad settings; the CLI prints one line and exits 2
     ├── OCIError                    answered to a client as {"errors":[...]} with .status
     │    ├── NameInvalid            400 NAME_INVALID
     │    ├── NameUnknown            404 NAME_UNKNOWN
     │    ├── TagInvalid             400 TAG_INVALID
     │    ├── DigestInvalid          400 DIGEST_INVALID
     │    ├── ManifestUnknown        404 MANIFEST_UNKNOWN
     │    ├── ManifestInvalid        400 MANIFEST_INVALID
     │    ├── BlobUnknown            404 BLOB_UNKNOWN
     │    ├── BlobUploadUnknown      404 BLOB_UPLOAD_UNKNOWN
     │    ├── BlobUploadInvalid      400 BLOB_UPLOAD_INVALID
     │    ├── ManifestBlobUnknown    400 MANIFEST_BLOB_UNKNOWN
     │    ├── SizeInvalid            400 SIZE_INVALID
     │    ├── RangeInvalid           416 RANGE_INVALID (carries the blob size)
     │    ├── PaginationInvalid      400 PAGINATION_NUMBER_INVALID
     │    ├── Unsupported            405 UNSUPPORTED (404 for an unknown endpoint)
     │    ├── Unauthorized           401 UNAUTHORIZED (+ WWW-Authenticate)
     │    ├── Denied                 403 DENIED
     │    ├── Unavailable            503 UNAVAILABLE (+ Retry-After)
     │    └── TooManyRequests        429 TOOMANYREQUESTS (+ Retry-After)
     └── StorageError                raised by storage drivers; never reaches a handler
          ├── NotFound               the key does not exist
          ├── UpstreamUnavailable    transport failure, 5xx, throttling: worth a retry
          └── IntegrityError         bytes do not match their digest

Storage errors are translated into OCI errors by the service layer (``raise ... from exc``); the
JSON body is rendered in exactly one place, :mod:`regsidecar.api.middleware`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class RegsidecarError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(RegsidecarError):
    """Invalid configuration: ``key`` names the offending setting."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


class OCIError(RegsidecarError):
    """An error a client sees, in the distribution spec's JSON form."""

    code: ClassVar[str] = "UNKNOWN"
    status: int = 500
    default_message: ClassVar[str] = "unknown error"

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: Any = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.detail = detail
        if status is not None:
            self.status = status
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.detail is not None:
            err["detail"] = self.detail
        return {"errors": [err]}


class NameInvalid(OCIError):
    code = "NAME_INVALID"
    status = 400
    default_message = "invalid repository name"


class NameUnknown(OCIError):
    code = "NAME_UNKNOWN"
    status = 404
    default_message = "repository name not known to registry"


class TagInvalid(OCIError):
    code = "TAG_INVALID"
    status = 400
    default_message = "manifest tag did not match the tag grammar"


class DigestInvalid(OCIError):
    code = "DIGEST_INVALID"
    status = 400
    default_message = "provided digest did not match uploaded content"


class ManifestUnknown(OCIError):
    code = "MANIFEST_UNKNOWN"
    status = 404
    default_message = "manifest unknown"


class ManifestInvalid(OCIError):
    code = "MANIFEST_INVALID"
    status = 400
    default_message = "manifest invalid"


class BlobUnknown(OCIError):
    code = "BLOB_UNKNOWN"
    status = 404
    default_message = "blob unknown to registry"


class BlobUploadUnknown(OCIError):
    code = "BLOB_UPLOAD_UNKNOWN"
    status = 404
    default_message = "blob upload unknown to registry"


class BlobUploadInvalid(OCIError):
    code = "BLOB_UPLOAD_INVALID"
    status = 400
    default_message = "blob upload invalid"


class ManifestBlobUnknown(OCIError):
    code = "MANIFEST_BLOB_UNKNOWN"
    status = 400
    default_message = "manifest references a manifest or blob unknown to registry"


class SizeInvalid(OCIError):
    code = "SIZE_INVALID"
    status = 400
    default_message = "provided length did not match content length"


class RangeInvalid(OCIError):
    code = "RANGE_INVALID"
    status = 416
    default_message = "requested range not satisfiable"

    def __init__(self, size: int | None, message: str | None = None) -> None:
        headers = {"Content-Range": f"bytes */{size}"} if size is not None else None
        super().__init__(message, headers=headers)
        self.size = size


class PaginationInvalid(OCIError):
    code = "PAGINATION_NUMBER_INVALID"
    status = 400
    default_message = "invalid number of results requested"


class Unsupported(OCIError):
    code = "UNSUPPORTED"
    status = 405
    default_message = "the operation is unsupported"


class Unauthorized(OCIError):
    """401 with the challenge (``WWW-Authenticate``) that tells the client how to log in."""

    code = "UNAUTHORIZED"
    status = 401
    default_message = "authentication required"

    def __init__(
        self, message: str | None = None, *, challenge: str | None = None, detail: Any = None
    ) -> None:
        headers = {"WWW-Authenticate": challenge} if challenge else None
        super().__init__(message, detail=detail, headers=headers)


class Denied(OCIError):
    code = "DENIED"
    status = 403
    default_message = "requested access to the resource is denied"


class Unavailable(OCIError):
    code = "UNAVAILABLE"
    status = 503
    default_message = "service unavailable"

    def __init__(self, message: str | None = None, *, retry_after: int = 5, detail: Any = None):
        super().__init__(message, detail=detail, headers={"Retry-After": str(retry_after)})

    @classmethod
    def from_storage(cls, exc: StorageError) -> Unavailable:
        """The store failed (after retries): tell the client, with the reason, to come back."""
        return cls("the image store is unavailable", detail={"reason": str(exc)})


class TooManyRequests(OCIError):
    code = "TOOMANYREQUESTS"
    status = 429
    default_message = "too many requests"

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class StorageError(RegsidecarError):
    """A storage driver failed; ``key`` is the object concerned."""

    def __init__(self, key: str, message: str = "") -> None:
        super().__init__(f"{key}: {message}" if message else key)
        self.key = key


class NotFound(StorageError):
    """The key does not exist in the store."""


class AlreadyExists(StorageError):
    """A create-only write found the key there already (S3 412 to If-None-Match: *)."""


class UpstreamUnavailable(StorageError):
    """The store could not be reached or failed transiently (5xx, reset, timeout)."""


class Busy(UpstreamUnavailable):
    """The source is there but refuses more now (429, every slot taken): ask another."""


class IntegrityError(StorageError):
    """Bytes read from the store do not hash to the digest they are stored under."""
