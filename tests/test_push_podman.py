"""podman as a pushing client: pull an image from one sidecar, `podman login` and `podman push`
it to a sidecar that takes pushes, and pull it back from there with a fresh store."""

from __future__ import annotations

from pathlib import Path

import pytest

from regsidecar.demo import REPOSITORY, TAG, write_sample
from regsidecar.storage.filesystem import FilesystemDriver
from tests.conftest import require
from tests.rig.htpasswd import WRITER, PushAuth
from tests.rig.podman import Podman
from tests.rig.proc import CommandFailed
from tests.sidecar import Sidecar

pytestmark = [pytest.mark.rig, pytest.mark.timeout(240)]


def test_podman_login_push_and_pull_back(tmp_path: Path) -> None:
    require("podman")
    source_root = tmp_path / "source"
    write_sample(FilesystemDriver(str(source_root)))
    cfg = PushAuth().write(tmp_path / "auth")
    target_root = tmp_path / "target"
    with (
        Sidecar(["--storage", str(source_root)]) as source,
        Sidecar(["--storage", str(target_root), "--config", str(cfg)]) as target,
    ):
        with Podman() as podman:
            podman.pull(f"{source.host}/{REPOSITORY}:{TAG}", arch="amd64")
            image_id = podman.image_inspect(f"{source.host}/{REPOSITORY}:{TAG}")["Id"]
            ref = f"{target.host}/team/podman:v1"
            podman.run("tag", f"{source.host}/{REPOSITORY}:{TAG}", ref)
            # Anonymous: refused.
            with pytest.raises(CommandFailed) as refused:
                podman.run("push", "--tls-verify=false", ref)
            assert "unauthorized" in str(refused.value).lower() or "401" in str(refused.value)
            podman.run("login", "--tls-verify=false", "-u", WRITER[0], "-p", WRITER[1], target.host)
            digest_file = tmp_path / "pushed-digest"
            podman.run("push", "--tls-verify=false", "--digestfile", str(digest_file), ref)
            pushed = digest_file.read_text().strip()
        assert (
            target_root / "docker/registry/v2/repositories/team/podman/_manifests/tags/v1"
        ).is_dir()
        with Podman() as fresh:
            # A new store: everything comes from the target sidecar, as pushed.
            assert fresh.pull(ref, arch="amd64") == pushed
            assert fresh.image_inspect(ref)["Id"] == image_id
