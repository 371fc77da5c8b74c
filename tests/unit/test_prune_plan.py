"""prune.plan: which containers and images go, which stay and why (no docker, no I/O)."""

from __future__ import annotations

import pytest

from regsidecar.prune import (
    DAY_S,
    ContainerInfo,
    ImageInfo,
    parse_df,
    plan,
    single_repository,
)

NOW = 1_795_312_000.0  # 2026-11-21
OLD = NOW - 400 * DAY_S
RECENT = NOW - 2 * DAY_S


def ctr(name: str, image: str, state: str, size: int = 0) -> ContainerInfo:
    return ContainerInfo(id=f"c-{name}", name=name, image_id=image, state=state, size=size)


def img(
    id_: str,
    *tags: str,
    created: float = OLD,
    size: int = 100,
    shared: int = 0,
    parent: str = "",
    digests: tuple[str, ...] = (),
) -> ImageInfo:
    return ImageInfo(
        id=id_,
        tags=tags,
        digests=digests,
        created=created,
        size=size,
        shared_size=shared,
        parent_id=parent,
    )


def names(containers: tuple[ContainerInfo, ...]) -> list[str]:
    return [c.name for c in containers]


def ids(images: tuple[ImageInfo, ...]) -> list[str]:
    return [i.id for i in images]


# -- containers -------------------------------------------------------------------------------


def test_stopped_containers_go_and_running_ones_stay() -> None:
    """created, exited and dead go; running, paused, restarting (and unknown states) stay."""
    states = ["created", "exited", "dead", "running", "paused", "restarting", "removing", "odd"]
    containers = [ctr(s, "sha256:x", s) for s in states]
    p = plan(containers, [], now=NOW)
    assert names(p.containers) == ["created", "exited", "dead"]


# -- images -----------------------------------------------------------------------------------


def test_dangling_unused_image_goes_tagged_one_stays() -> None:
    p = plan([], [img("sha256:d"), img("sha256:t", "app:1")], now=NOW)
    assert ids(p.images) == ["sha256:d"]
    assert p.cutoff is None


def test_image_pulled_only_by_digest_counts_as_dangling() -> None:
    """As in docker: no tag means dangling, whatever digest references it has."""
    pinned = img("sha256:p", digests=("localhost:5000/app@sha256:abc",))
    assert ids(plan([], [pinned], now=NOW).images) == ["sha256:p"]


def test_dangling_image_a_running_container_uses_is_kept_with_the_reason() -> None:
    images = [img("sha256:d")]
    p = plan([ctr("web", "sha256:d", "running")], images, now=NOW)
    assert p.images == ()
    assert [(k.image.id, k.reason) for k in p.kept] == [("sha256:d", "used by container web")]


@pytest.mark.parametrize("state", ["running", "paused", "restarting"])
def test_an_image_in_use_is_never_removed_even_with_unused_days_zero(state: str) -> None:
    images = [img("sha256:a", "app:1"), img("sha256:b", "app:2")]
    p = plan([ctr("x", "sha256:a", state)], images, now=NOW, unused_days=0)
    assert ids(p.images) == ["sha256:b"]
    assert [k.image.id for k in p.kept] == ["sha256:a"]


def test_image_of_a_removed_container_is_free_to_go() -> None:
    """The containers go first, so an image only stopped containers used is unused after."""
    containers = [ctr("old-run", "sha256:d", "exited"), ctr("made", "sha256:t", "created")]
    images = [img("sha256:d"), img("sha256:t", "app:1")]
    p = plan(containers, images, now=NOW)
    assert names(p.containers) == ["old-run", "made"]
    assert ids(p.images) == ["sha256:d"]  # the tagged one stays without unused_days
    p = plan(containers, images, now=NOW, unused_days=1)
    assert ids(p.images) == ["sha256:d", "sha256:t"]


def test_unused_days_uses_created_and_the_cutoff_is_inclusive() -> None:
    """docker's until filter skips images created *after* the cutoff; at the cutoff they go."""
    at = img("sha256:at", "a:1", created=NOW - 30 * DAY_S)
    newer = img("sha256:newer", "a:2", created=NOW - 30 * DAY_S + 1)
    old = img("sha256:old", "a:3", created=OLD)
    p = plan([], [at, newer, old], now=NOW, unused_days=30)
    assert p.cutoff == NOW - 30 * DAY_S
    assert ids(p.images) == ["sha256:at", "sha256:old"]


def test_unused_days_zero_takes_every_unused_image_and_dangling_ones_go_whatever_their_age() -> (
    None
):
    recent_dangling = img("sha256:rd", created=RECENT)
    recent_tagged = img("sha256:rt", "a:1", created=RECENT)
    assert ids(plan([], [recent_dangling, recent_tagged], now=NOW, unused_days=30).images) == [
        "sha256:rd"
    ]
    assert ids(plan([], [recent_dangling, recent_tagged], now=NOW, unused_days=0).images) == [
        "sha256:rd",
        "sha256:rt",
    ]


def test_the_parents_of_an_image_that_stays_stay() -> None:
    """Legacy builds chain images by ParentId: the daemon cannot delete a parent of a kept
    image (it would only lose its tag), so neither does the plan, however deep the chain."""
    images = [
        img("sha256:base", "base:1"),
        img("sha256:mid", "mid:1", parent="sha256:base"),
        img("sha256:app", "app:1", parent="sha256:mid"),
        img("sha256:lone", "lone:1"),
    ]
    p = plan([ctr("web", "sha256:app", "running")], images, now=NOW, unused_days=0)
    assert ids(p.images) == ["sha256:lone"]
    kept = {k.image.id: k.reason for k in p.kept}
    assert kept == {
        "sha256:app": "used by container web",
        "sha256:mid": "parent of image app",
        "sha256:base": "parent of image mid",
    }


def test_a_parent_whose_children_all_go_goes_too() -> None:
    images = [img("sha256:base", "base:1"), img("sha256:app", "app:1", parent="sha256:base")]
    assert ids(plan([], images, now=NOW, unused_days=0).images) == ["sha256:base", "sha256:app"]


def test_negative_unused_days_is_refused() -> None:
    with pytest.raises(ValueError, match="unused_days"):
        plan([], [], now=NOW, unused_days=-1)


def test_estimate_counts_writable_layers_and_unique_image_bytes() -> None:
    containers = [ctr("a", "sha256:x", "exited", size=10), ctr("b", "sha256:x", "running", 99)]
    images = [
        img("sha256:u", size=1000, shared=300),  # 700 its own
        img("sha256:n", size=500, shared=-1),  # shared size unknown: all of it
        img("sha256:s", size=200, shared=900),  # never negative
    ]
    p = plan(containers, images, now=NOW)
    assert [i.unique_size for i in p.images] == [700, 500, 0]
    assert p.estimated_bytes == 10 + 700 + 500


# -- reading the daemon's answer --------------------------------------------------------------


def test_parse_df_drops_none_placeholders_and_defaults_missing_sizes() -> None:
    df = {
        "LayersSize": 4242,
        "Images": [
            {
                "Id": "sha256:d",
                "RepoTags": ["<none>:<none>"],
                "RepoDigests": ["<none>@<none>"],
                "Created": 1760000000,
                "Size": 65665,
                "SharedSize": 0,
                "ParentId": "",
            },
            {"Id": "sha256:t", "RepoTags": ["app:1"], "RepoDigests": None, "Size": 5},
        ],
        "Containers": [
            {"Id": "abc", "Names": ["/web"], "ImageID": "sha256:t", "State": "running"},
            {"Id": "def", "Names": ["/job"], "ImageID": "sha256:d", "State": "exited", "SizeRw": 7},
        ],
    }
    containers, images, layers = parse_df(df)
    assert layers == 4242
    assert containers == [
        ContainerInfo("abc", "web", "sha256:t", "running", 0),
        ContainerInfo("def", "job", "sha256:d", "exited", 7),
    ]
    assert images[0] == ImageInfo("sha256:d", (), (), 1760000000.0, 65665, 0, "")
    assert images[0].dangling
    assert images[1].tags == ("app:1",) and images[1].shared_size == -1


@pytest.mark.parametrize(
    ("tags", "digests", "single"),
    [
        ((), (), True),
        (("app:1",), (), True),
        (("localhost:5000/app:1",), ("localhost:5000/app@sha256:ab",), True),
        ((), ("localhost:5000/app@sha256:ab",), True),
        (("app:1", "app:2"), (), False),
        (("app:1",), ("other@sha256:ab",), False),
        ((), ("a@sha256:ab", "b@sha256:ab"), False),
    ],
)
def test_single_repository_says_when_the_daemon_deletes_by_id_without_force(
    tags: tuple[str, ...], digests: tuple[str, ...], single: bool
) -> None:
    assert single_repository(ImageInfo("sha256:x", tags, digests)) is single
