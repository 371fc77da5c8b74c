"""Request paths to typed distribution routes, or the OCI error a client should see."""

from __future__ import annotations

import pytest

from regsidecar.errors import DigestInvalid, NameInvalid, OCIError, TagInvalid, Unsupported
from regsidecar.oci.reference import Digest, Reference
from regsidecar.oci.routes import Route, parse_path

HEX = "e" * 64
DIGEST = f"sha256:{HEX}"
D = Digest("sha256", HEX)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/", Route("base")),
        ("/v2", Route("base")),
        ("/v2/_catalog", Route("catalog")),
        # manifests
        ("/v2/alpine/manifests/latest", Route("manifest", "alpine", Reference(tag="latest"))),
        (
            "/v2/library/alpine/manifests/3.20",
            Route("manifest", "library/alpine", Reference(tag="3.20")),
        ),
        (
            "/v2/a/b/c/d/manifests/v1_x",
            Route("manifest", "a/b/c/d", Reference(tag="v1_x")),
        ),
        (f"/v2/alpine/manifests/{DIGEST}", Route("manifest", "alpine", Reference(digest=D))),
        (
            f"/v2/library/alpine/manifests/{DIGEST}",
            Route("manifest", "library/alpine", Reference(digest=D)),
        ),
        # blobs
        (f"/v2/alpine/blobs/{DIGEST}", Route("blob", "alpine", digest=D)),
        (f"/v2/x/y/z/blobs/{DIGEST}", Route("blob", "x/y/z", digest=D)),
        # tags
        ("/v2/alpine/tags/list", Route("tags", "alpine")),
        ("/v2/library/alpine/tags/list", Route("tags", "library/alpine")),
        # uploads
        ("/v2/alpine/blobs/uploads/", Route("upload", "alpine")),
        ("/v2/alpine/blobs/uploads", Route("upload", "alpine")),
        (
            "/v2/library/alpine/blobs/uploads/0a1b-2c3d",
            Route("upload", "library/alpine", upload="0a1b-2c3d"),
        ),
        # referrers
        (f"/v2/alpine/referrers/{DIGEST}", Route("referrers", "alpine", digest=D)),
        (f"/v2/a/b/referrers/{DIGEST}", Route("referrers", "a/b", digest=D)),
    ],
)
def test_valid_paths_parse_into_routes(path: str, expected: Route) -> None:
    assert parse_path(path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # The rightmost route marker wins; earlier ones are part of the name.
        ("/v2/a/blobs/b/manifests/latest", Route("manifest", "a/blobs/b", Reference(tag="latest"))),
        ("/v2/manifests/manifests/t", Route("manifest", "manifests", Reference(tag="t"))),
        ("/v2/blobs/manifests/blobs", Route("manifest", "blobs", Reference(tag="blobs"))),
        ("/v2/a/manifests/manifests/x", Route("manifest", "a/manifests", Reference(tag="x"))),
        (f"/v2/a/manifests/b/blobs/{DIGEST}", Route("blob", "a/manifests/b", digest=D)),
        (f"/v2/tags/list/blobs/{DIGEST}", Route("blob", "tags/list", digest=D)),
        ("/v2/a/manifests/tags/list", Route("tags", "a/manifests")),
        ("/v2/a/blobs/uploads/tags/list", Route("tags", "a/blobs/uploads")),
        ("/v2/a/blobs/uploads/manifests/t", Route("manifest", "a/blobs/uploads", Reference("t"))),
        (f"/v2/x/blobs/uploads/blobs/{DIGEST}", Route("blob", "x/blobs/uploads", digest=D)),
        ("/v2/referrers/manifests/latest", Route("manifest", "referrers", Reference("latest"))),
        ("/v2/_catalog/manifests/latest", None),  # "_catalog" is not a valid name
        ("/v2/v2/manifests/v2", Route("manifest", "v2", Reference(tag="v2"))),
    ],
)
def test_names_may_contain_route_words_as_components(path: str, expected: Route | None) -> None:
    if expected is None:
        with pytest.raises(NameInvalid):
            parse_path(path)
    else:
        assert parse_path(path) == expected


@pytest.mark.parametrize(
    ("path", "error", "code", "status"),
    [
        # names that would escape or are not in the grammar
        ("/v2/../x/manifests/t", NameInvalid, "NAME_INVALID", 400),
        ("/v2/a/../../manifests/t", NameInvalid, "NAME_INVALID", 400),
        ("/v2/a/./b/manifests/t", NameInvalid, "NAME_INVALID", 400),
        ("/v2//a/manifests/t", NameInvalid, "NAME_INVALID", 400),
        ("/v2/a//b/manifests/t", NameInvalid, "NAME_INVALID", 400),
        ("/v2/a/b//manifests/t", NameInvalid, "NAME_INVALID", 400),
        ("/v2/Alpine/manifests/t", NameInvalid, "NAME_INVALID", 400),
        ("/v2/a b/manifests/t", NameInvalid, "NAME_INVALID", 400),
        ("/v2/a\nb/manifests/t", NameInvalid, "NAME_INVALID", 400),
        ("/v2/caf\u00e9/manifests/t", NameInvalid, "NAME_INVALID", 400),
        ("/v2//manifests/t", NameInvalid, "NAME_INVALID", 400),
        ("/v2/" + "a" * 256 + "/manifests/t", NameInvalid, "NAME_INVALID", 400),
        (f"/v2/../blobs/{DIGEST}", NameInvalid, "NAME_INVALID", 400),
        ("/v2/../tags/list", NameInvalid, "NAME_INVALID", 400),
        ("/v2//tags/list", NameInvalid, "NAME_INVALID", 400),
        ("/v2/../blobs/uploads/", NameInvalid, "NAME_INVALID", 400),
        (f"/v2/A/referrers/{DIGEST}", NameInvalid, "NAME_INVALID", 400),
        # bad references
        ("/v2/a/manifests/-latest", TagInvalid, "TAG_INVALID", 400),
        ("/v2/a/manifests/.x", TagInvalid, "TAG_INVALID", 400),
        ("/v2/a/manifests/" + "t" * 129, TagInvalid, "TAG_INVALID", 400),
        ("/v2/a/manifests/t\n", TagInvalid, "TAG_INVALID", 400),
        ("/v2/a/manifests/sha256:abc", DigestInvalid, "DIGEST_INVALID", 400),
        ("/v2/a/manifests/" + DIGEST.upper(), DigestInvalid, "DIGEST_INVALID", 400),
        ("/v2/a/blobs/latest", DigestInvalid, "DIGEST_INVALID", 400),
        ("/v2/a/blobs/md5:" + "a" * 32, DigestInvalid, "DIGEST_INVALID", 400),
        ("/v2/a/referrers/latest", DigestInvalid, "DIGEST_INVALID", 400),
        # unknown endpoints and garbage: 404 UNSUPPORTED
        ("/v2/a/manifests/", Unsupported, "UNSUPPORTED", 404),
        ("/v2/a/manifests", Unsupported, "UNSUPPORTED", 404),
        ("/v2/a/manifests/t/", Unsupported, "UNSUPPORTED", 404),
        ("/v2/a/blobs/", Unsupported, "UNSUPPORTED", 404),
        (f"/v2/a/blobs/{DIGEST}/", Unsupported, "UNSUPPORTED", 404),
        ("/v2/a/tags/list/", Unsupported, "UNSUPPORTED", 404),
        ("/v2/tags/list", Unsupported, "UNSUPPORTED", 404),
        ("/v2/a", Unsupported, "UNSUPPORTED", 404),
        ("/v2/a/b", Unsupported, "UNSUPPORTED", 404),
        ("/v2/_catalog/", Unsupported, "UNSUPPORTED", 404),
        ("/v2/a/x\x00/manifests/t", Unsupported, "UNSUPPORTED", 404),
        ("/v2/\x00", Unsupported, "UNSUPPORTED", 404),
        ("\x00/v2/", Unsupported, "UNSUPPORTED", 404),
        ("/v3/a/manifests/t", Unsupported, "UNSUPPORTED", 404),
        ("/v1/_ping", Unsupported, "UNSUPPORTED", 404),
        ("/v2x/a/manifests/t", Unsupported, "UNSUPPORTED", 404),
        ("/V2/a/manifests/t", Unsupported, "UNSUPPORTED", 404),
        ("v2/a/manifests/t", Unsupported, "UNSUPPORTED", 404),
        ("/", Unsupported, "UNSUPPORTED", 404),
        ("", Unsupported, "UNSUPPORTED", 404),
        ("//v2/", Unsupported, "UNSUPPORTED", 404),
    ],
)
def test_bad_paths_raise_the_matching_oci_error(
    path: str, error: type[OCIError], code: str, status: int
) -> None:
    with pytest.raises(error) as info:
        parse_path(path)
    assert (info.value.code, info.value.status) == (code, status)


def test_unknown_endpoint_status_does_not_leak_into_the_class_default() -> None:
    """Unsupported is 405 by default; the router's 404 is per instance."""
    with pytest.raises(Unsupported):
        parse_path("/v3/")
    assert Unsupported().status == 405


def test_module_docstring_example_holds() -> None:
    assert parse_path("/v2/library/alpine/manifests/3.20").kind == "manifest"
