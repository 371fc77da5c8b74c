"""OCI errors: the spec's JSON body, HTTP status and headers of every class."""

from __future__ import annotations

import json

import pytest

from regsidecar import errors
from regsidecar.errors import (
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    ConfigError,
    Denied,
    DigestInvalid,
    IntegrityError,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    NotFound,
    OCIError,
    PaginationInvalid,
    RangeInvalid,
    RegsidecarError,
    SizeInvalid,
    StorageError,
    TagInvalid,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unsupported,
    UpstreamUnavailable,
)

# (class, code, status) as in distribution's registry/api/errcode and the OCI spec.
TABLE: list[tuple[type[OCIError], str, int]] = [
    (NameInvalid, "NAME_INVALID", 400),
    (NameUnknown, "NAME_UNKNOWN", 404),
    (TagInvalid, "TAG_INVALID", 400),
    (DigestInvalid, "DIGEST_INVALID", 400),
    (ManifestUnknown, "MANIFEST_UNKNOWN", 404),
    (ManifestInvalid, "MANIFEST_INVALID", 400),
    (BlobUnknown, "BLOB_UNKNOWN", 404),
    (BlobUploadUnknown, "BLOB_UPLOAD_UNKNOWN", 404),
    (BlobUploadInvalid, "BLOB_UPLOAD_INVALID", 400),
    (ManifestBlobUnknown, "MANIFEST_BLOB_UNKNOWN", 400),
    (SizeInvalid, "SIZE_INVALID", 400),
    (Unauthorized, "UNAUTHORIZED", 401),
    (PaginationInvalid, "PAGINATION_NUMBER_INVALID", 400),
    (Unsupported, "UNSUPPORTED", 405),
    (Denied, "DENIED", 403),
    (Unavailable, "UNAVAILABLE", 503),
    (TooManyRequests, "TOOMANYREQUESTS", 429),
]


def _make(cls: type[OCIError]) -> OCIError:
    return RangeInvalid(10) if cls is RangeInvalid else cls()


def test_table_covers_every_oci_error_subclass() -> None:
    subclasses = {
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, OCIError) and obj is not OCIError
    }
    assert subclasses == {cls for cls, _, _ in TABLE} | {RangeInvalid}


@pytest.mark.parametrize(("cls", "code", "status"), TABLE, ids=[c.__name__ for c, _, _ in TABLE])
def test_code_status_and_default_body(cls: type[OCIError], code: str, status: int) -> None:
    err = cls()
    assert (err.code, err.status) == (code, status)
    assert err.message == cls.default_message
    assert err.message  # never an empty message
    assert str(err) == err.message
    assert err.body() == {"errors": [{"code": code, "message": cls.default_message}]}
    assert isinstance(err, OCIError)
    assert isinstance(err, RegsidecarError)


def test_range_invalid_is_416_and_carries_content_range() -> None:
    err = RangeInvalid(1234)
    assert (err.code, err.status, err.size) == ("RANGE_INVALID", 416, 1234)
    assert err.headers == {"Content-Range": "bytes */1234"}
    assert err.body() == {
        "errors": [{"code": "RANGE_INVALID", "message": "requested range not satisfiable"}]
    }


def test_range_invalid_with_a_message_and_no_size_has_no_content_range() -> None:
    err = RangeInvalid(None, "bad")
    assert err.headers == {}
    assert err.message == "bad"
    assert err.size is None


def test_range_invalid_for_an_empty_object_says_zero() -> None:
    assert RangeInvalid(0).headers == {"Content-Range": "bytes */0"}


@pytest.mark.parametrize(
    ("err", "seconds"),
    [
        (Unavailable(), "5"),
        (Unavailable(retry_after=30), "30"),
        (TooManyRequests(), "1"),
        (TooManyRequests(retry_after=60), "60"),
    ],
)
def test_retryable_errors_carry_retry_after(err: OCIError, seconds: str) -> None:
    assert err.headers == {"Retry-After": seconds}


def test_unavailable_keeps_message_and_detail() -> None:
    err = Unavailable("bucket unreachable", detail={"reason": "timeout"}, retry_after=2)
    assert err.body() == {
        "errors": [
            {
                "code": "UNAVAILABLE",
                "message": "bucket unreachable",
                "detail": {"reason": "timeout"},
            }
        ]
    }
    assert err.headers["Retry-After"] == "2"


@pytest.mark.parametrize("cls", [c for c, _, _ in TABLE if c not in (Unavailable, TooManyRequests)])
def test_errors_without_retry_semantics_have_no_headers(cls: type[OCIError]) -> None:
    assert cls().headers == {}


@pytest.mark.parametrize(
    "detail",
    [{"name": "x"}, ["a", 1], "text", 0, False, {}],
    ids=["dict", "list", "str", "zero", "false", "empty-dict"],
)
def test_detail_is_included_whenever_it_is_not_none(detail: object) -> None:
    body = BlobUnknown("gone", detail=detail).body()
    assert body == {"errors": [{"code": "BLOB_UNKNOWN", "message": "gone", "detail": detail}]}


def test_detail_none_is_left_out() -> None:
    assert "detail" not in NameUnknown(detail=None).body()["errors"][0]


def test_empty_message_falls_back_to_the_default() -> None:
    assert ManifestUnknown("").message == "manifest unknown"


@pytest.mark.parametrize("cls", [c for c, _, _ in TABLE] + [RangeInvalid])
def test_bodies_serialise_to_json_objects(cls: type[OCIError]) -> None:
    doc = json.loads(json.dumps(_make(cls).body()))
    assert list(doc) == ["errors"]
    assert len(doc["errors"]) == 1
    assert set(doc["errors"][0]) == {"code", "message"}


def test_status_override_is_per_instance() -> None:
    """The router answers Unsupported with 404 without changing the class's 405."""
    assert Unsupported("unknown endpoint", status=404).status == 404
    assert Unsupported().status == 405


def test_headers_are_copied_not_shared() -> None:
    given = {"X-A": "1"}
    err = NameInvalid(headers=given)
    err.headers["X-B"] = "2"
    assert given == {"X-A": "1"}
    assert NameInvalid().headers == {}


def test_base_oci_error_is_unknown_500() -> None:
    err = OCIError()
    assert (err.code, err.status) == ("UNKNOWN", 500)
    assert err.body() == {"errors": [{"code": "UNKNOWN", "message": "unknown error"}]}


def test_config_error_names_its_key() -> None:
    err = ConfigError("cache.max_bytes", "too big")
    assert (err.key, err.message, str(err)) == (
        "cache.max_bytes",
        "too big",
        "cache.max_bytes: too big",
    )
    assert str(ConfigError("", "plain")) == "plain"
    assert isinstance(err, RegsidecarError)
    assert not isinstance(err, OCIError)


@pytest.mark.parametrize("cls", [StorageError, NotFound, UpstreamUnavailable, IntegrityError])
def test_storage_errors_name_their_key_and_are_not_oci_errors(cls: type[StorageError]) -> None:
    err = cls("docker/registry/v2/x", "boom")
    assert (err.key, str(err)) == ("docker/registry/v2/x", "docker/registry/v2/x: boom")
    assert str(cls("k")) == "k"
    assert isinstance(err, StorageError)
    assert not isinstance(err, OCIError)
