"""``regsidecar prune`` for docker: a pure planner, and the edge that reads and removes.

:func:`plan` decides everything from plain lists (``now`` injected); :func:`snapshot` reads the
daemon's state (one ``docker system df`` call) and :func:`execute` removes exactly the planned
objects. What goes follows docker's own rules, so ``docker container prune`` followed by
``docker image prune [-a --filter until=N*24h]`` would pick the same objects:

* containers that are not running: states ``created``, ``exited``, ``dead`` (paused and
  restarting containers count as running, as in ``docker container prune``);
* images no remaining container uses that are dangling (no tag; an image pulled only by digest
  counts as dangling, as in docker) or, with ``unused_days``, were created at least that many
  days ago: docker records no last-use time, and its ``until`` image filter reads ``Created``
  too. ``unused_days=0`` means every unused image;
* never an image a remaining container uses (running, paused, restarting), nor the parent of an
  image that stays.

Removal is per object, not through the daemon's prune endpoints: ``/containers/prune`` and
``/images/prune`` decide again when they run (a container that stopped meanwhile, docker's
own reading of "dangling"), so what ``--dry-run`` listed and what a real run removes could
differ. Removing exactly the planned IDs makes the dry run's list the real run's by
construction, and every removal is made without ``force``, so the daemon still refuses a
container that started meanwhile or an image a new container uses; those are reported under
``failed``, never forced. An image whose references lie in one repository is removed by ID (the
daemon drops its references and the image in one step, or refuses); one with tags in several
is removed reference by reference, the way ``docker image prune`` does it.

Space: a container counts its ``SizeRw`` (its writable layer, as container prune reports it).
Images are measured after a real run as the drop in ``LayersSize`` of ``docker system df``
(unique layer bytes on disk, so layers shared only among removed images count). A dry run can
only estimate images: the sum of each one's unique size (``Size - SharedSize``), a lower bound.

>>> p = plan(containers, images, now=time.time(), unused_days=30)  # doctest: +SKIP
>>> [c.name for c in p.containers], [i.id for i in p.images]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Container states that ``prune`` removes; anything else counts as running.
REMOVABLE_STATES = frozenset({"created", "exited", "dead"})
DAY_S = 86400.0
#: Per docker API call; ``docker system df`` walks every layer, which takes a while on a big host.
DOCKER_TIMEOUT_S = 300

Report = dict[str, Any]


# -- the planner (pure) -----------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerInfo:
    """One container as the daemon lists it; ``size`` is its writable layer (``SizeRw``)."""

    id: str
    name: str
    image_id: str
    state: str
    size: int = 0


@dataclass(frozen=True)
class ImageInfo:
    """One top-level image: ``tags`` (``repo:tag``), ``digests`` (``repo@sha256:...``),
    ``created`` (unix seconds), ``size`` and the part of it ``shared_size`` other images share
    (-1 when unknown), ``parent_id`` (set by the legacy builder only)."""

    id: str
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    created: float = 0.0
    size: int = 0
    shared_size: int = -1
    parent_id: str = ""

    @property
    def dangling(self) -> bool:
        return not self.tags

    @property
    def unique_size(self) -> int:
        """Bytes only this image holds (a lower bound of what removing it frees)."""
        return max(0, self.size - max(0, self.shared_size))


@dataclass(frozen=True)
class Kept:
    """An image that qualified for removal but stays, and why."""

    image: ImageInfo
    reason: str


@dataclass(frozen=True)
class Plan:
    """What goes: ``containers``, then ``images``; ``kept`` lists images spared because
    something still uses them; ``cutoff`` is the ``created`` bound (None: dangling only)."""

    containers: tuple[ContainerInfo, ...]
    images: tuple[ImageInfo, ...]
    kept: tuple[Kept, ...]
    cutoff: float | None

    @property
    def estimated_bytes(self) -> int:
        """Writable layers of the containers plus the unique size of each image."""
        return sum(c.size for c in self.containers) + sum(i.unique_size for i in self.images)


def plan(
    containers: Sequence[ContainerInfo],
    images: Sequence[ImageInfo],
    *,
    now: float,
    unused_days: float | None = None,
) -> Plan:
    """Stopped containers, then images no remaining container uses that are dangling or
    (with ``unused_days``) created at or before ``now - unused_days`` days."""
    if unused_days is not None and unused_days < 0:
        raise ValueError(f"unused_days must be >= 0, not {unused_days}")
    cutoff = None if unused_days is None else now - unused_days * DAY_S
    gone = tuple(c for c in containers if c.state in REMOVABLE_STATES)
    gone_ids = {c.id for c in gone}
    users: dict[str, str] = {}  # image ID -> a container that stays and uses it
    for c in containers:
        if c.id not in gone_ids:
            users.setdefault(c.image_id, c.name)

    doomed: dict[str, ImageInfo] = {}
    kept: list[Kept] = []
    for img in images:
        if not (img.dangling or (cutoff is not None and img.created <= cutoff)):
            continue
        if img.id in users:
            kept.append(Kept(img, f"used by container {users[img.id]}"))
        else:
            doomed[img.id] = img

    # The daemon refuses to delete a parent while a child stays; after untagging it would keep
    # it anyway. So an image stays if any image that stays descends from it.
    by_id = {i.id: i for i in images}
    for img in images:
        if img.id in doomed:
            continue
        seen: set[str] = set()
        child, parent = img.id, img.parent_id
        while parent and parent not in seen:
            seen.add(parent)
            if parent in doomed:
                kept.append(Kept(doomed.pop(parent), f"parent of image {short_id(child)}"))
            child, parent = parent, by_id[parent].parent_id if parent in by_id else ""
    return Plan(gone, tuple(i for i in images if i.id in doomed), tuple(kept), cutoff)


def short_id(object_id: str) -> str:
    """The 12 hex digits docker shows: ``sha256:0c3f667c1601...`` -> ``0c3f667c1601``."""
    return object_id.rpartition(":")[2][:12]


def single_repository(img: ImageInfo) -> bool:
    """True if the daemon deletes ``img`` by ID without force: at most one tag, and every
    reference in one repository (moby's ``isSingleReference``)."""
    if len(img.tags) > 1:
        return False
    repos = {_repository(r) for r in img.tags + img.digests}
    return len(repos) <= 1


def _repository(ref: str) -> str:
    name, at, _ = ref.partition("@")
    if at:
        return name
    # the tag follows the last colon after the last slash (a registry port has a slash after it)
    slash = ref.rfind("/")
    colon = ref.rfind(":")
    return ref[:colon] if colon > slash else ref


# -- reading the daemon's answers (pure) ------------------------------------------------------


def _refs(values: Iterable[str] | None, none: str) -> tuple[str, ...]:
    return tuple(v for v in values or () if v != none)


def parse_df(df: Mapping[str, Any]) -> tuple[list[ContainerInfo], list[ImageInfo], int]:
    """Containers, images and ``LayersSize`` from a ``GET /system/df`` answer."""
    containers = [
        ContainerInfo(
            id=str(c["Id"]),
            name=str((c.get("Names") or [c["Id"][:12]])[0]).lstrip("/"),
            image_id=str(c.get("ImageID") or ""),
            state=str(c.get("State") or ""),
            size=int(c.get("SizeRw") or 0),
        )
        for c in df.get("Containers") or ()
    ]
    images = [
        ImageInfo(
            id=str(i["Id"]),
            tags=_refs(i.get("RepoTags"), "<none>:<none>"),
            digests=_refs(i.get("RepoDigests"), "<none>@<none>"),
            created=float(i.get("Created") or 0),
            size=int(i.get("Size") or 0),
            shared_size=int(i.get("SharedSize", -1)),
            parent_id=str(i.get("ParentId") or ""),
        )
        for i in df.get("Images") or ()
    ]
    return containers, images, int(df.get("LayersSize") or 0)


# -- the docker edge --------------------------------------------------------------------------
# The docker SDK is untyped: its objects stay ``Any`` here and never leave this section.


class DockerUnavailable(Exception):
    """The daemon could not be reached or refused to list its objects (message says why)."""


def docker_host(flag: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The daemon address to show: the flag, else ``$DOCKER_HOST``, else the SDK's default."""
    return flag or environ.get("DOCKER_HOST") or "default (docker context or /var/run/docker.sock)"


def connect(host: str | None) -> Any:
    """A docker client for ``host`` (a ``DOCKER_HOST`` URL; None: the environment and the docker
    CLI's context, as the docker CLI does), checked with a ping. Raises DockerUnavailable."""
    import docker  # type: ignore[import-untyped]  # slow to import; only prune needs it

    environ = dict(os.environ)
    if host:
        environ["DOCKER_HOST"] = host
    try:
        client = docker.from_env(environment=environ, timeout=DOCKER_TIMEOUT_S)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
        raise DockerUnavailable(f"cannot reach the docker daemon: {exc}") from exc
    return client


def snapshot(client: Any) -> tuple[list[ContainerInfo], list[ImageInfo], int]:
    """Every container, the top-level images and ``LayersSize``, from one ``system df``."""
    import docker

    try:
        df = client.api.df()
    except (docker.errors.DockerException, OSError) as exc:
        raise DockerUnavailable(f"docker system df failed: {exc}") from exc
    return parse_df(df)


def _explain(exc: Exception) -> str:
    return str(getattr(exc, "explanation", None) or exc)


def execute(client: Any, p: Plan) -> tuple[list[ContainerInfo], list[ImageInfo], list[Report]]:
    """Remove the plan's containers, then its images, never forcing. Returns what was removed
    (already gone counts) and ``failed`` entries ({kind, id, name, error})."""
    import docker

    removed_c: list[ContainerInfo] = []
    failed: list[Report] = []
    for c in p.containers:
        try:
            client.api.remove_container(c.id, v=False, force=False)
        except docker.errors.NotFound:
            pass
        except (docker.errors.DockerException, OSError) as exc:
            failed.append({"kind": "container", "id": c.id, "name": c.name, "error": _explain(exc)})
            continue
        removed_c.append(c)

    still_there = {c.image_id: c.name for c in p.containers if c not in removed_c}
    removed_i: list[ImageInfo] = []
    for img in p.images:
        name = ", ".join(img.tags) or "<none>"
        if img.id in still_there:
            error = f"container {still_there[img.id]} using it was not removed"
            failed.append({"kind": "image", "id": img.id, "name": name, "error": error})
            continue
        refs = [img.id] if single_repository(img) else [*img.tags, *img.digests, img.id]
        error = ""
        for ref in refs:
            try:
                client.api.remove_image(ref, force=False, noprune=False)
            except docker.errors.NotFound:
                pass  # a digest reference goes with the last tag; the image with its last ref
            except (docker.errors.DockerException, OSError) as exc:
                error = _explain(exc)
                break
        if error:
            failed.append({"kind": "image", "id": img.id, "name": name, "error": error})
        else:
            removed_i.append(img)
    return removed_c, removed_i, failed


def container_row(c: ContainerInfo) -> Report:
    return {"id": c.id, "name": c.name, "image_id": c.image_id, "state": c.state, "bytes": c.size}


def image_row(img: ImageInfo) -> Report:
    return {
        "id": img.id,
        "tags": list(img.tags),
        "digests": list(img.digests),
        "created": img.created,
        "reason": "dangling" if img.dangling else "unused",
        "bytes": img.unique_size,
    }


def prune_docker(client: Any, *, now: float, unused_days: float | None, dry_run: bool) -> Report:
    """Plan, then (unless ``dry_run``) execute; the report of the docker part.

    ``containers`` and ``images`` are what was (or would be) removed, ``kept`` the images spared
    because they are in use, ``failed`` what the daemon refused; ``bytes_reclaimed`` is
    measured after a real run and estimated (``estimate: true``) by a dry run."""
    containers, images, layers_before = snapshot(client)
    p = plan(containers, images, now=now, unused_days=unused_days)
    report: Report = {
        "dry_run": dry_run,
        "unused_days": unused_days,
        "cutoff": p.cutoff,
        "kept": [{**image_row(k.image), "reason": k.reason} for k in p.kept],
    }
    if dry_run:
        return report | {
            "containers": [container_row(c) for c in p.containers],
            "images": [image_row(i) for i in p.images],
            "failed": [],
            "bytes_reclaimed": p.estimated_bytes,
            "estimate": True,
        }
    gone_c, gone_i, failed = execute(client, p)
    try:
        _, _, layers_after = snapshot(client)
        image_bytes, estimate = max(0, layers_before - layers_after), False
    except DockerUnavailable:  # what was removed is known; only the measurement is lost
        image_bytes, estimate = sum(i.unique_size for i in gone_i), True
    return report | {
        "containers": [container_row(c) for c in gone_c],
        "images": [image_row(i) for i in gone_i],
        "failed": failed,
        "bytes_reclaimed": sum(c.size for c in gone_c) + image_bytes,
        "estimate": estimate,
    }


__all__ = [
    "ContainerInfo",
    "DockerUnavailable",
    "ImageInfo",
    "Kept",
    "Plan",
    "connect",
    "docker_host",
    "execute",
    "parse_df",
    "plan",
    "prune_docker",
    "snapshot",
]
