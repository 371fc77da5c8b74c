"""Manifest media types: detection from stored JSON, Accept parsing, distribution's negotiation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from regsidecar.errors import ManifestInvalid, ManifestUnknown
from regsidecar.oci import mediatypes as mt
from regsidecar.oci.mediatypes import (
    DOCKER_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    DOCKER_SCHEMA2,
    OCI_INDEX,
    OCI_MANIFEST,
    ManifestInfo,
    Negotiation,
    accepted,
    check_substitute,
    detect,
    negotiate,
)

D_AMD64 = "sha256:" + "a" * 64
D_ARM64 = "sha256:" + "b" * 64
D_CONFIG = "sha256:" + "c" * 64
D_LAYER = "sha256:" + "d" * 64


def _j(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def _platform(digest: str, os_: str, arch: str, media_type: str = DOCKER_SCHEMA2) -> dict[str, Any]:
    return {
        "mediaType": media_type,
        "digest": digest,
        "size": 100,
        "platform": {"os": os_, "architecture": arch},
    }


_CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": D_CONFIG, "size": 1}
_LAYER = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D_LAYER, "size": 2}


# -- detect -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"schemaVersion": 2, "mediaType": DOCKER_SCHEMA2, "config": _CONFIG, "layers": []},
            DOCKER_SCHEMA2,
        ),
        (
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": _CONFIG, "layers": [_LAYER]},
            OCI_MANIFEST,
        ),
        ({"schemaVersion": 2, "config": _CONFIG, "layers": [_LAYER]}, OCI_MANIFEST),
        ({"schemaVersion": 2, "layers": [_LAYER]}, OCI_MANIFEST),
        ({"schemaVersion": 2, "config": _CONFIG}, OCI_MANIFEST),
        # An empty or non-string mediaType is ignored and the shape decides.
        ({"schemaVersion": 2, "mediaType": "", "config": _CONFIG, "layers": []}, OCI_MANIFEST),
        ({"schemaVersion": 2, "mediaType": 7, "config": _CONFIG, "layers": []}, OCI_MANIFEST),
        ({"schemaVersion": 1, "name": "a", "tag": "t", "fsLayers": []}, DOCKER_SCHEMA1),
        (
            {"schemaVersion": 1, "name": "a", "fsLayers": [], "signatures": [{}]},
            DOCKER_SCHEMA1_SIGNED,
        ),
        # An explicit, unfamiliar mediaType is reported as it is (artifacts, Helm charts...).
        ({"mediaType": "application/vnd.example+json"}, "application/vnd.example+json"),
    ],
)
def test_detect_reads_or_infers_image_manifest_types(doc: dict[str, Any], expected: str) -> None:
    info = detect(_j(doc))
    assert info == ManifestInfo(expected, ())


def test_detect_docker_manifest_list_with_its_entries() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [
            _platform(D_AMD64, "linux", "amd64"),
            _platform(D_ARM64, "linux", "arm64"),
        ],
    }
    assert detect(_j(doc)) == ManifestInfo(
        DOCKER_LIST, ((D_AMD64, "linux", "amd64"), (D_ARM64, "linux", "arm64"))
    )


@pytest.mark.parametrize("with_media_type", [True, False])
def test_detect_oci_index_with_or_without_media_type(with_media_type: bool) -> None:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "manifests": [_platform(D_ARM64, "linux", "arm64", OCI_MANIFEST)],
    }
    if with_media_type:
        doc["mediaType"] = OCI_INDEX
    assert detect(_j(doc)) == ManifestInfo(OCI_INDEX, ((D_ARM64, "linux", "arm64"),))


def test_detect_index_entries_tolerate_missing_platform_and_skip_non_objects() -> None:
    doc = {
        "mediaType": OCI_INDEX,
        "manifests": [
            {"digest": D_AMD64},
            {"digest": D_ARM64, "platform": "linux/arm64"},
            "junk",
            42,
            {"platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }
    assert detect(_j(doc)).entries == (
        (D_AMD64, "", ""),
        (D_ARM64, "", ""),
        ("", "linux", "amd64"),
    )


@pytest.mark.parametrize("manifests", [None, "x", {}, 3])
def test_detect_index_with_a_non_list_manifests_field_has_no_entries(manifests: Any) -> None:
    assert detect(_j({"mediaType": DOCKER_LIST, "manifests": manifests})) == ManifestInfo(
        DOCKER_LIST, ()
    )


def test_detect_image_manifest_never_reports_entries() -> None:
    doc = {"mediaType": OCI_MANIFEST, "manifests": [_platform(D_AMD64, "linux", "amd64")]}
    assert detect(_j(doc)).entries == ()


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"{",
        b"\xff\xfe\x00garbage",
        b"\x80",
        b"[]",
        b"[1, 2]",
        b'"a string"',
        b"42",
        b"null",
        b"true",
        b"{}",
        b'{"schemaVersion": 2}',
        b'{"schemaVersion": 2, "mediaType": null}',
    ],
)
def test_detect_rejects_non_json_non_objects_and_shapeless_objects(payload: bytes) -> None:
    with pytest.raises(ManifestInvalid) as info:
        detect(payload)
    assert (info.value.code, info.value.status) == ("MANIFEST_INVALID", 400)


@pytest.mark.parametrize("payload", [b"[" * 100_000, b'{"a":' * 100_000], ids=["arrays", "objects"])
def test_detect_rejects_deeply_nested_json_as_manifest_invalid(payload: bytes) -> None:
    assert len(payload) < mt.MAX_MANIFEST_BYTES
    with pytest.raises(ManifestInvalid):
        detect(payload)


# -- accepted ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([], set()),
        ([""], set()),
        ([" , ,"], set()),
        ([OCI_MANIFEST], {OCI_MANIFEST}),
        ([f"{OCI_MANIFEST}, {OCI_INDEX}"], {OCI_MANIFEST, OCI_INDEX}),
        ([f"{OCI_MANIFEST},{OCI_INDEX}"], {OCI_MANIFEST, OCI_INDEX}),
        ([OCI_MANIFEST, DOCKER_LIST], {OCI_MANIFEST, DOCKER_LIST}),
        ([f"  {DOCKER_SCHEMA2}  "], {DOCKER_SCHEMA2}),
        ([f"{DOCKER_SCHEMA2};q=0.5"], {DOCKER_SCHEMA2}),
        ([f"{DOCKER_SCHEMA2} ; q=0.9, {DOCKER_LIST};q=0.1"], {DOCKER_SCHEMA2, DOCKER_LIST}),
        # q-values are ignored, as distribution ignores them: q=0 still counts.
        ([f"{OCI_INDEX};q=0"], {OCI_INDEX}),
        ([OCI_INDEX.upper()], {OCI_INDEX}),
        (["Application/Vnd.OCI.Image.Manifest.v1+JSON"], {OCI_MANIFEST}),
        (["*/*"], {"*/*"}),
        ([OCI_MANIFEST, OCI_MANIFEST], {OCI_MANIFEST}),
    ],
)
def test_accepted_collects_media_types_from_every_header(
    headers: list[str], expected: set[str]
) -> None:
    assert accepted(headers) == frozenset(expected)


def test_accepted_takes_any_iterable() -> None:
    assert accepted(iter([OCI_MANIFEST])) == {OCI_MANIFEST}


# -- negotiate --------------------------------------------------------------------------------

ALL = frozenset({DOCKER_SCHEMA2, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX})
DOCKER_ONLY = frozenset({DOCKER_SCHEMA2, DOCKER_LIST})
SCHEMA2_ONLY = frozenset({DOCKER_SCHEMA2})
NONE: frozenset[str] = frozenset()

LIST = ManifestInfo(DOCKER_LIST, ((D_ARM64, "linux", "arm64"), (D_AMD64, "linux", "amd64")))


@pytest.mark.parametrize("by_tag", [True, False])
@pytest.mark.parametrize(
    ("info", "accepts"),
    [
        (ManifestInfo(DOCKER_SCHEMA2), ALL),
        (ManifestInfo(DOCKER_SCHEMA2), NONE),  # served as is, even to a client that names none
        (ManifestInfo(OCI_MANIFEST), frozenset({OCI_MANIFEST})),
        (ManifestInfo(OCI_INDEX), frozenset({OCI_INDEX})),
        (ManifestInfo(DOCKER_SCHEMA1_SIGNED), NONE),
        (ManifestInfo(DOCKER_SCHEMA1), NONE),
        (LIST, DOCKER_ONLY),
        (ManifestInfo("application/vnd.example+json"), NONE),
    ],
)
def test_negotiate_serves_as_is_when_the_client_accepts_or_no_rule_applies(
    info: ManifestInfo, accepts: frozenset[str], by_tag: bool
) -> None:
    assert negotiate(info, accepts, by_tag=by_tag) == Negotiation(substitute=None)


@pytest.mark.parametrize("by_tag", [True, False])
@pytest.mark.parametrize(
    ("media_type", "accepts", "message"),
    [
        (OCI_MANIFEST, DOCKER_ONLY, "does not support OCI manifests"),
        (OCI_MANIFEST, frozenset({OCI_INDEX}), "does not support OCI manifests"),
        (OCI_MANIFEST, NONE, "does not support OCI manifests"),
        (OCI_INDEX, DOCKER_ONLY, "does not support OCI indexes"),
        (OCI_INDEX, frozenset({OCI_MANIFEST}), "does not support OCI indexes"),
        (OCI_INDEX, NONE, "does not support OCI indexes"),
    ],
)
def test_negotiate_hides_oci_types_from_clients_that_do_not_accept_them(
    media_type: str, accepts: frozenset[str], message: str, by_tag: bool
) -> None:
    """As distribution: MANIFEST_UNKNOWN 404, by tag and by digest alike."""
    with pytest.raises(ManifestUnknown) as info:
        negotiate(ManifestInfo(media_type), accepts, by_tag=by_tag)
    assert (info.value.code, info.value.status) == ("MANIFEST_UNKNOWN", 404)
    assert message in info.value.message


@pytest.mark.parametrize("accepts", [SCHEMA2_ONLY, NONE, frozenset({OCI_MANIFEST, OCI_INDEX})])
def test_negotiate_substitutes_the_linux_amd64_entry_for_a_list_by_tag(
    accepts: frozenset[str],
) -> None:
    assert negotiate(LIST, accepts, by_tag=True) == Negotiation(substitute=D_AMD64)


def test_negotiate_serves_a_list_by_digest_as_is_without_list_accept() -> None:
    assert negotiate(LIST, SCHEMA2_ONLY, by_tag=False) == Negotiation()


def test_negotiate_picks_the_first_linux_amd64_entry_and_ignores_look_alikes() -> None:
    info = ManifestInfo(
        DOCKER_LIST,
        (
            (D_ARM64, "windows", "amd64"),
            (D_CONFIG, "linux", "AMD64"),
            (D_LAYER, "Linux", "amd64"),
            (D_AMD64, "linux", "amd64"),
            (D_ARM64, "linux", "amd64"),
        ),
    )
    assert negotiate(info, SCHEMA2_ONLY, by_tag=True).substitute == D_AMD64


@pytest.mark.parametrize(
    "entries",
    [(), ((D_ARM64, "linux", "arm64"),), ((D_AMD64, "windows", "amd64"),)],
)
def test_negotiate_list_by_tag_without_amd64_entry_is_manifest_unknown(
    entries: tuple[tuple[str, str, str], ...],
) -> None:
    with pytest.raises(ManifestUnknown) as info:
        negotiate(ManifestInfo(DOCKER_LIST, entries), SCHEMA2_ONLY, by_tag=True)
    assert "linux/amd64" in info.value.message


def test_negotiate_oci_index_by_tag_is_never_substituted() -> None:
    """Only Docker lists are rewritten; an OCI index needs OCI index accept, full stop."""
    info = ManifestInfo(OCI_INDEX, ((D_AMD64, "linux", "amd64"),))
    with pytest.raises(ManifestUnknown):
        negotiate(info, SCHEMA2_ONLY, by_tag=True)
    assert negotiate(info, frozenset({OCI_INDEX}), by_tag=True) == Negotiation()


# -- check_substitute -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("media_type", "accepts"),
    [
        (DOCKER_SCHEMA2, SCHEMA2_ONLY),
        (DOCKER_SCHEMA2, ALL),
        (OCI_MANIFEST, NONE),
        (DOCKER_SCHEMA1_SIGNED, NONE),
    ],
)
def test_check_substitute_allows_a_schema2_client_or_other_types(
    media_type: str, accepts: frozenset[str]
) -> None:
    check_substitute(ManifestInfo(media_type), accepts)  # raises ManifestInvalid if refused


@pytest.mark.parametrize("accepts", [NONE, frozenset({DOCKER_LIST}), frozenset({OCI_MANIFEST})])
def test_check_substitute_rejects_schema2_for_a_client_without_schema2(
    accepts: frozenset[str],
) -> None:
    with pytest.raises(ManifestInvalid) as info:
        check_substitute(ManifestInfo(DOCKER_SCHEMA2), accepts)
    assert info.value.message == "Schema 2 manifest not supported by client"
    assert info.value.status == 400


def test_type_sets_group_indexes_and_manifests() -> None:
    assert frozenset({DOCKER_LIST, OCI_INDEX}) == mt.INDEX_TYPES
    assert mt.INDEX_TYPES < mt.MANIFEST_TYPES
    assert DOCKER_SCHEMA1 not in mt.MANIFEST_TYPES
    assert mt.MAX_MANIFEST_BYTES == 4 * 1024 * 1024
