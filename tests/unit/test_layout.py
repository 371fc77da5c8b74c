"""Storage keys match distribution's registry:2 tree (registry/storage/paths.go) exactly."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from regsidecar.oci.reference import Digest, parse_digest
from regsidecar.storage import layout

HEX = "abcd" + "0123456789abcdef" * 3 + "012345678901"
DIGEST_STR = f"sha256:{HEX}"
DIGEST = parse_digest(DIGEST_STR)
HEX512 = "ef" + "0" * 126
DIGEST512 = Digest("sha512", HEX512)
V2 = "docker/registry/v2"


def test_root_is_distributions_v2_tree() -> None:
    assert layout.ROOT == V2


@pytest.mark.parametrize("digest", [DIGEST, DIGEST_STR], ids=["Digest", "str"])
@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (layout.blob_data, f"{V2}/blobs/sha256/ab/{HEX}/data"),
        (
            lambda d: layout.layer_link("library/alpine", d),
            f"{V2}/repositories/library/alpine/_layers/sha256/{HEX}/link",
        ),
        (
            lambda d: layout.revision_link("library/alpine", d),
            f"{V2}/repositories/library/alpine/_manifests/revisions/sha256/{HEX}/link",
        ),
        (
            lambda d: layout.tag_index_link("library/alpine", "3.20", d),
            f"{V2}/repositories/library/alpine/_manifests/tags/3.20/index/sha256/{HEX}/link",
        ),
    ],
    ids=["blob_data", "layer_link", "revision_link", "tag_index_link"],
)
def test_digest_keys_are_distribution_paths_for_digest_or_string(
    build: Callable[[Digest | str], str], expected: str, digest: Digest | str
) -> None:
    assert build(digest) == expected


def test_blob_data_fans_out_on_the_first_two_hex_characters() -> None:
    assert layout.blob_data(DIGEST512) == f"{V2}/blobs/sha512/ef/{HEX512}/data"
    assert layout.blob_data("sha256:" + "9f" + "0" * 62) == (
        f"{V2}/blobs/sha256/9f/9f{'0' * 62}/data"
    )


def test_module_docstring_example_holds() -> None:
    assert layout.blob_data("sha256:abcd") == "docker/registry/v2/blobs/sha256/ab/abcd/data"


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (
            lambda: layout.repository("alpine"),
            f"{V2}/repositories/alpine",
        ),
        (
            lambda: layout.repository("a/b/c"),
            f"{V2}/repositories/a/b/c",
        ),
        (
            layout.repositories_dir,
            f"{V2}/repositories",
        ),
        (
            lambda: layout.tags_dir("library/alpine"),
            f"{V2}/repositories/library/alpine/_manifests/tags",
        ),
        (
            lambda: layout.tag_current_link("library/alpine", "latest"),
            f"{V2}/repositories/library/alpine/_manifests/tags/latest/current/link",
        ),
        (
            lambda: layout.tag_current_link("a/b/c", "v1.0_rc-1"),
            f"{V2}/repositories/a/b/c/_manifests/tags/v1.0_rc-1/current/link",
        ),
        (
            lambda: layout.layer_link("a/b/c", DIGEST512),
            f"{V2}/repositories/a/b/c/_layers/sha512/{HEX512}/link",
        ),
        (
            lambda: layout.revision_link("x/manifests/blobs", DIGEST),
            f"{V2}/repositories/x/manifests/blobs/_manifests/revisions/sha256/{HEX}/link",
        ),
    ],
)
def test_repository_keys_nest_the_name_verbatim(build: Callable[[], str], expected: str) -> None:
    assert build() == expected


@pytest.mark.parametrize(
    "key",
    [
        layout.blob_data(DIGEST),
        layout.layer_link("a/b", DIGEST),
        layout.revision_link("a/b", DIGEST),
        layout.tag_current_link("a/b", "t"),
        layout.tag_index_link("a/b", "t", DIGEST),
        layout.tags_dir("a/b"),
        layout.repositories_dir(),
    ],
)
def test_keys_are_relative_and_clean(key: str) -> None:
    """No leading or trailing slash and no empty component: drivers join them as they are."""
    assert not key.startswith("/")
    assert not key.endswith("/")
    assert "//" not in key
    assert key.startswith(V2 + "/")


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", "docker/registry/v2/x"),
        ("/", "docker/registry/v2/x"),
        ("//", "docker/registry/v2/x"),
        ("root", "root/docker/registry/v2/x"),
        ("/root", "root/docker/registry/v2/x"),
        ("root/", "root/docker/registry/v2/x"),
        ("/root/", "root/docker/registry/v2/x"),
        ("a/b", "a/b/docker/registry/v2/x"),
        ("/a/b/", "a/b/docker/registry/v2/x"),
    ],
)
def test_with_prefix_joins_with_exactly_one_slash(prefix: str, expected: str) -> None:
    assert layout.with_prefix(prefix, "docker/registry/v2/x") == expected
