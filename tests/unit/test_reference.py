"""Repository names, tags, digests and references against the distribution grammar."""

from __future__ import annotations

import pytest

from regsidecar.errors import DigestInvalid, NameInvalid, OCIError, TagInvalid
from regsidecar.oci.reference import (
    MAX_NAME_LENGTH,
    Digest,
    Reference,
    is_digest_like,
    parse_digest,
    parse_name,
    parse_reference,
    parse_tag,
)

HEX256 = "0123456789abcdef" * 4
HEX512 = HEX256 * 2


def _name_of_length(n: int) -> str:
    """A valid name of exactly ``n`` (>= 251) characters: five 49-char components, then more."""
    name = ("a" * 49 + "/") * 5 + "b" * (n - 250)
    assert len(name) == n
    return name


# -- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "alpine",
        "library/alpine",
        "a/b/c/d/e",
        "0",
        "a0/9z",
        "my.repo",
        "my_repo",
        "my__repo",
        "my-repo",
        "my---repo",
        "a.b_c__d-e--f",
        "registry/v2/docker",
        "a/manifests/blobs",
    ],
)
def test_valid_names_are_returned_unchanged(name: str) -> None:
    assert parse_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("Alpine", "uppercase"),
        ("library/Alpine", "uppercase in a later component"),
        (".a", "leading period"),
        ("a.", "trailing period"),
        ("_a", "leading underscore"),
        ("a_", "trailing underscore"),
        ("-a", "leading dash"),
        ("a-", "trailing dash"),
        ("a..b", "double period"),
        ("a___b", "three underscores"),
        ("a.-b", "mixed separators"),
        ("a_-b", "mixed separators"),
        ("..", "dot-dot"),
        ("a/../b", "dot-dot component"),
        ("a/./b", "dot component"),
        ("/a", "absolute"),
        ("a/", "trailing slash"),
        ("a//b", "empty component"),
        ("a\x00b", "NUL"),
        ("a\nb", "newline"),
        ("a\n", "trailing newline"),
        ("a b", "space"),
        ("caf\u00e9", "unicode letter"),
        ("\u0661", "unicode digit"),
        ("a:b", "colon"),
        ("a@b", "at sign"),
        ("a%2fb", "percent escape"),
        ("a\\b", "backslash"),
    ],
)
def test_invalid_names_raise_name_invalid(name: str, why: str) -> None:
    with pytest.raises(NameInvalid):
        parse_name(name)


def test_name_of_max_length_is_valid_and_one_more_is_not() -> None:
    """255 characters is the limit (distribution's NameTotalLengthMax)."""
    assert MAX_NAME_LENGTH == 255
    longest = _name_of_length(255)
    assert parse_name(longest) == longest
    with pytest.raises(NameInvalid):
        parse_name(_name_of_length(256))


def test_single_component_of_256_chars_is_rejected() -> None:
    with pytest.raises(NameInvalid):
        parse_name("a" * 256)


def test_name_invalid_is_an_oci_400_with_code_and_detail() -> None:
    with pytest.raises(NameInvalid) as info:
        parse_name("Bad")
    err = info.value
    assert isinstance(err, OCIError)
    assert (err.code, err.status) == ("NAME_INVALID", 400)
    assert err.detail == {"name": "Bad"}


# -- tags -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag",
    ["latest", "3.20", "v1.2.3-rc.1", "_private", "0", "A", "UPPER_lower.9-x", "a" * 128],
)
def test_valid_tags_are_returned_unchanged(tag: str) -> None:
    assert parse_tag(tag) == tag


@pytest.mark.parametrize(
    ("tag", "why"),
    [
        ("", "empty"),
        ("a" * 129, "129 characters"),
        (".hidden", "leading period"),
        ("-dash", "leading dash"),
        ("a:b", "colon"),
        ("a/b", "slash"),
        ("a b", "space"),
        ("a\x00", "NUL"),
        ("latest\n", "trailing newline"),
        ("caf\u00e9", "unicode"),
        ("a+b", "plus"),
        ("a@b", "at sign"),
    ],
)
def test_invalid_tags_raise_tag_invalid(tag: str, why: str) -> None:
    with pytest.raises(TagInvalid) as info:
        parse_tag(tag)
    assert (info.value.code, info.value.status) == ("TAG_INVALID", 400)


# -- digests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "algorithm", "hex_"),
    [
        (f"sha256:{HEX256}", "sha256", HEX256),
        (f"sha512:{HEX512}", "sha512", HEX512),
        ("sha256:" + "0" * 64, "sha256", "0" * 64),
    ],
)
def test_valid_digests_parse_into_algorithm_and_hex(value: str, algorithm: str, hex_: str) -> None:
    digest = parse_digest(value)
    assert digest == Digest(algorithm, hex_)
    assert str(digest) == value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "invalid digest format"),
        ("sha256", "invalid digest format"),
        ("sha256:", "invalid digest format"),
        (":" + HEX256, "invalid digest format"),
        ("SHA256:" + HEX256, "invalid digest format"),
        ("sha256:" + HEX256 + "\n", "invalid digest format"),
        ("sha256:" + HEX256[:-1] + "/", "invalid digest format"),
        ("sha256 :" + HEX256, "invalid digest format"),
        ("md5:" + "a" * 32, "unsupported digest algorithm"),
        ("sha1:" + "a" * 40, "unsupported digest algorithm"),
        ("sha384:" + "a" * 96, "unsupported digest algorithm"),
        ("sha256:" + HEX256.upper(), "invalid digest length or characters"),
        ("sha256:" + HEX256[:63], "invalid digest length or characters"),
        ("sha256:" + HEX256 + "0", "invalid digest length or characters"),
        ("sha256:" + HEX512, "invalid digest length or characters"),
        ("sha512:" + HEX256, "invalid digest length or characters"),
        ("sha512:" + HEX512[:127], "invalid digest length or characters"),
        ("sha256:" + "g" * 64, "invalid digest length or characters"),
        ("sha256:" + "=" * 64, "invalid digest length or characters"),
    ],
)
def test_invalid_digests_raise_digest_invalid_with_reason(value: str, message: str) -> None:
    with pytest.raises(DigestInvalid) as info:
        parse_digest(value)
    err = info.value
    assert (err.code, err.status) == ("DIGEST_INVALID", 400)
    assert err.message == message


def test_digest_is_frozen_and_hashable() -> None:
    digest = parse_digest(f"sha256:{HEX256}")
    assert {digest: 1}[Digest("sha256", HEX256)] == 1
    with pytest.raises(AttributeError):
        digest.hex = "x"  # type: ignore[misc]


# -- references -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("latest", Reference(tag="latest")),
        ("v1.0", Reference(tag="v1.0")),
        (f"sha256:{HEX256}", Reference(digest=Digest("sha256", HEX256))),
        (f"sha512:{HEX512}", Reference(digest=Digest("sha512", HEX512))),
    ],
)
def test_parse_reference_tells_tags_from_digests(value: str, expected: Reference) -> None:
    ref = parse_reference(value)
    assert ref == expected
    assert str(ref) == value


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("", TagInvalid),
        ("-bad", TagInvalid),
        ("a" * 129, TagInvalid),
        ("sha256:abc", DigestInvalid),
        ("latest:", DigestInvalid),
        (":latest", DigestInvalid),
        ("md5:" + "a" * 32, DigestInvalid),
    ],
)
def test_parse_reference_raises_the_error_of_the_form_it_resembles(
    value: str, error: type[OCIError]
) -> None:
    """A ':' makes a reference a digest, so its errors are DIGEST_INVALID, else TAG_INVALID."""
    with pytest.raises(error):
        parse_reference(value)


@pytest.mark.parametrize(("value", "expected"), [("a:b", True), ("latest", False), ("", False)])
def test_is_digest_like_means_contains_a_colon(value: str, expected: bool) -> None:
    assert is_digest_like(value) is expected


# -- echoes in error details ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "key", "value", "echo"),
    [
        (parse_name, "name", "a\x00b", "a\\x00b"),
        (parse_name, "name", "a\nb\x1b[31m", "a\\nb\\x1b[31m"),
        (parse_name, "name", "caf\u00e9", "caf\\xe9"),
        (parse_name, "name", "a\\b", "a\\\\b"),
        (parse_tag, "tag", "x\ty", "x\\ty"),
        (parse_tag, "tag", "\U0001f600", "\\U0001f600"),
        (parse_digest, "digest", "sha256:\x00", "sha256:\\x00"),
        (parse_digest, "digest", "md5:\u00e9", "md5:\\xe9"),
    ],
)
def test_error_details_escape_control_and_non_ascii_characters(
    call: object, key: str, value: str, echo: str
) -> None:
    with pytest.raises(OCIError) as info:
        call(value)  # type: ignore[operator]
    detail = info.value.detail
    assert detail == {key: echo}
    assert detail[key].isascii()
    assert detail[key].isprintable()


@pytest.mark.parametrize(
    ("call", "key", "value"),
    [
        (parse_name, "name", "A" * 10_000),
        (parse_tag, "tag", "-" * 10_000),
        (parse_digest, "digest", "!" * 10_000),
        (parse_digest, "digest", "md5:" + "a" * 10_000),
        (parse_digest, "digest", "sha256:" + "a" * 10_000),
    ],
)
def test_error_details_are_bounded_to_200_input_characters(
    call: object, key: str, value: str
) -> None:
    with pytest.raises(OCIError) as info:
        call(value)  # type: ignore[operator]
    echoed = info.value.detail[key]
    assert echoed == value[:200]


def test_escaped_echo_of_long_non_ascii_input_stays_bounded() -> None:
    """200 input characters at most, so even 10-byte escapes stay under 2,000 characters."""
    with pytest.raises(NameInvalid) as info:
        parse_name("\U0001f600" * 10_000)
    echoed = info.value.detail["name"]
    assert echoed == "\\U0001f600" * 200
    assert len(echoed) <= 2000
