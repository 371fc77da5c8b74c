"""The demo image: deterministic, valid, and its programs really print the greeting."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from regsidecar.demo import GREETING, PROGRAMS, build_sample, write_sample
from regsidecar.oci import mediatypes
from regsidecar.storage import layout
from regsidecar.storage.filesystem import FilesystemDriver


def test_sample_is_deterministic() -> None:
    """Same bytes on every machine and every run, so the same digests."""
    assert build_sample().index.digest == build_sample().index.digest
    assert build_sample() == build_sample()


def test_index_lists_both_platforms_and_every_digest_matches() -> None:
    sample = build_sample()
    index = json.loads(sample.index.data)
    assert index["mediaType"] == mediatypes.OCI_INDEX
    platforms = {(m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]}
    assert platforms == {("linux", "amd64"), ("linux", "arm64")}
    for blob in [sample.index, *sample.manifests.values(), *sample.blobs]:
        assert blob.digest == "sha256:" + hashlib.sha256(blob.data).hexdigest()


def test_written_tree_has_the_registry2_layout(tmp_path: Path) -> None:
    digest = write_sample(FilesystemDriver(str(tmp_path)))
    link = tmp_path / layout.tag_current_link("regsidecar/hello", "latest")
    assert link.read_text() == digest
    assert (tmp_path / layout.blob_data(digest)).is_file()
    assert (tmp_path / layout.revision_link("regsidecar/hello", digest)).read_text() == digest


def _run(argv: list[str], program: bytes, tmp_path: Path) -> bytes:
    exe = tmp_path / "hello"
    exe.write_bytes(program)
    os.chmod(exe, 0o755)
    return subprocess.run([*argv, str(exe)], capture_output=True, timeout=30, check=True).stdout


@pytest.mark.skipif(platform.machine() != "x86_64", reason="runs the amd64 program natively")
def test_amd64_program_prints_the_greeting(tmp_path: Path) -> None:
    assert _run([], PROGRAMS["amd64"], tmp_path) == GREETING


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="qemu-user not installed")
def test_arm64_program_prints_the_greeting_under_qemu(tmp_path: Path) -> None:
    assert _run(["qemu-aarch64"], PROGRAMS["arm64"], tmp_path) == GREETING
