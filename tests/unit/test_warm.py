"""Pure parts of `regsidecar warm`: image names, platform choice, blobs, the progress line."""

from __future__ import annotations

import pytest

from regsidecar.warm import blobs_of, parse_image, render_progress, select_platforms

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app", ("app", "latest")),
        ("app:v1", ("app", "v1")),
        ("team/app:1.2.3", ("team/app", "1.2.3")),
        ("localhost:5000/team/app:sha-1", ("team/app", "sha-1")),
        ("localhost/app", ("app", "latest")),
        ("registry.example.com/app@" + D, ("app", D)),
        ("127.0.0.1:5000/app", ("app", "latest")),
        ("  app:v1\n", ("app", "v1")),
    ],
)
def test_parse_image_drops_the_host_and_defaults_to_latest(
    text: str, expected: tuple[str, str]
) -> None:
    assert parse_image(text) == expected


@pytest.mark.parametrize("text", ["App:v1", "app:", "app@sha256:xyz", "app:v1:x", "", "a//b"])
def test_parse_image_rejects_bad_references_naming_them(text: str) -> None:
    with pytest.raises(ValueError, match="'"):
        parse_image(text)


INDEX = {
    "manifests": [
        {"digest": "sha256:1", "platform": {"os": "linux", "architecture": "amd64"}},
        {
            "digest": "sha256:2",
            "platform": {"os": "linux", "architecture": "arm", "variant": "v7"},
        },
        {"digest": "sha256:3", "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": "sha256:4", "platform": {"os": "unknown", "architecture": "unknown"}},
    ]
}


def test_select_platforms_by_os_arch_and_variant_skipping_attestations() -> None:
    assert select_platforms(INDEX, ["linux/amd64"]) == ["sha256:1"]
    assert select_platforms(INDEX, ["linux/arm/v7", "linux/arm64"]) == ["sha256:2", "sha256:3"]
    assert select_platforms(INDEX, ["linux/arm"]) == ["sha256:2"]
    assert select_platforms(INDEX, None) == ["sha256:1", "sha256:2", "sha256:3"]
    assert select_platforms(INDEX, ["windows/amd64"]) == []


def test_blobs_of_lists_config_then_layers() -> None:
    m = {
        "config": {"digest": "sha256:c", "size": 10},
        "layers": [{"digest": "sha256:l1", "size": 5}, {"digest": "sha256:l2", "size": 7}],
    }
    assert blobs_of(m) == [("sha256:c", 10), ("sha256:l1", 5), ("sha256:l2", 7)]
    assert blobs_of({}) == []


def test_progress_line_shows_bytes_rate_eta_and_blobs() -> None:
    line = render_progress(3 << 20, 12 << 20, 2, 5, 3.0, width=8)
    assert line.startswith("[##------]  25%")
    assert "3.0 MiB/12.0 MiB" in line and "1.0 MiB/s" in line
    assert "ETA 9s" in line and line.endswith("blobs 2/5")
    assert "ETA -" in render_progress(0, 100, 0, 1, 0.0)
    assert render_progress(0, 0, 0, 0, 1.0).startswith("[" + "#" * 30 + "] 100%")
