"""What ``regsidecar install`` renders: one source per file, the executable substituted, the
config skeleton true to the Settings defaults, and the compare-and-write decision."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
import yaml

from regsidecar import hostinstall
from regsidecar.config import OPTION_KEYS, Settings, env_name, load_settings
from regsidecar.hostinstall import DEFAULT_EXEC, FILES, KINDS, check_exec_path, decide, render

HOSTFILES = Path(hostinstall.__file__).parent / "hostfiles"
DATA_DIR = "/var/lib/regsidecar"

# A commented setting is "#key: value" or "#  nested: value"; prose is "# words".
_COMMENTED_SETTING = re.compile(r"^#(?=\S|  )")


def skeleton() -> str:
    return render("systemd")["etc/regsidecar/config.yml"].decode()


def uncomment(text: str) -> str:
    return "\n".join(_COMMENTED_SETTING.sub("", line) for line in text.splitlines()) + "\n"


@pytest.mark.parametrize("kind", KINDS)
def test_default_render_is_the_package_files_byte_for_byte(kind: hostinstall.Kind) -> None:
    """With the default executable nothing is rewritten: what install writes is what is
    checked in."""
    rendered = render(kind)
    assert list(rendered) == [f.dest for f in FILES[kind]]
    for f in FILES[kind]:
        assert rendered[f.dest] == (HOSTFILES / f.source).read_bytes(), f.source


@pytest.mark.parametrize("kind", KINDS)
def test_every_exec_line_gets_the_given_executable(kind: hostinstall.Kind) -> None:
    """Every command that runs regsidecar names the executable passed to render, and the
    placeholder path is gone."""
    exe = "/usr/local/lib/regsidecar-1.2/bin/regsidecar"
    rendered = render(kind, exe)
    everything = b"".join(rendered.values())
    assert DEFAULT_EXEC.encode() not in everything
    runs = [
        line
        for content in rendered.values()
        for line in content.decode().splitlines()
        if re.search(r"\b(serve|prune) --config", line) and not line.startswith("#")
    ]
    assert len(runs) == 2  # serve and prune
    assert all(exe in line for line in runs)


def test_units_run_serve_and_prune_with_the_installed_config() -> None:
    files = render("systemd")
    main = files["etc/systemd/system/regsidecar.service"].decode()
    prune = files["etc/systemd/system/regsidecar-prune.service"].decode()
    assert f"ExecStart={DEFAULT_EXEC} serve --config /etc/regsidecar/config.yml\n" in main
    assert f"ExecStart={DEFAULT_EXEC} prune --config /etc/regsidecar/config.yml\n" in prune


@pytest.mark.parametrize(
    "path",
    [
        "regsidecar",
        "bin/regsidecar",
        "/opt/my venv/bin/regsidecar",
        "/opt/100%/regsidecar",
        "/opt/$HOME/regsidecar",
        "/opt/x/../regsidecar",
        "/opt/./regsidecar",
        "/opt/regsidecar/",
        "/opt/a'b/regsidecar",
        "/opt/a\nb",
        "",
    ],
)
def test_exec_paths_that_a_unit_or_crontab_would_misread_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="--exec"):
        check_exec_path(path)
    with pytest.raises(ValueError):
        render("systemd", path)


@pytest.mark.parametrize(
    "path", [DEFAULT_EXEC, "/usr/local/bin/regsidecar", "/home/ci/.venv-3.11/bin/regsidecar"]
)
def test_plain_absolute_exec_paths_are_accepted(path: str) -> None:
    assert check_exec_path(path) == path


@pytest.mark.parametrize(
    ("existing", "new", "force", "action"),
    [
        (None, b"a", False, "written"),
        (None, b"a", True, "written"),
        (b"a", b"a", False, "unchanged"),
        (b"a", b"a", True, "unchanged"),
        (b"edited", b"a", False, "kept"),
        (b"edited", b"a", True, "replaced"),
        (b"", b"a", False, "kept"),
    ],
)
def test_decide(existing: bytes | None, new: bytes, force: bool, action: str) -> None:
    """Absent -> written, same -> unchanged, different -> kept unless forced."""
    assert decide(existing, new, force) == action


def _executable(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_default_exec_is_the_running_script_first(tmp_path: Path) -> None:
    script = _executable(tmp_path / "a" / "regsidecar")
    python = _executable(tmp_path / "b" / "python")
    _executable(tmp_path / "b" / "regsidecar")
    assert hostinstall.default_exec(argv0=script, executable=python) == script


def test_default_exec_is_beside_python_under_python_m(tmp_path: Path) -> None:
    """``python -m regsidecar``: argv[0] is __main__.py; the venv's script is next to python."""
    python = _executable(tmp_path / "venv" / "bin" / "python")
    beside = _executable(tmp_path / "venv" / "bin" / "regsidecar")
    assert hostinstall.default_exec(argv0="/x/regsidecar/__main__.py", executable=python) == beside


def test_default_exec_falls_back_to_path_then_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = _executable(tmp_path / "path" / "regsidecar")
    python = _executable(tmp_path / "nothing" / "python")
    monkeypatch.setenv("PATH", str(tmp_path / "path"))
    assert hostinstall.default_exec(argv0="-c", executable=python) == on_path
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert hostinstall.default_exec(argv0="-c", executable=python) is None
    not_executable = tmp_path / "nothing" / "regsidecar"
    not_executable.write_text("")
    assert hostinstall.default_exec(argv0=str(not_executable), executable=python) is None


def test_config_skeleton_loads_as_the_defaults_with_the_service_data_dir(tmp_path: Path) -> None:
    """Installed as is, the skeleton changes nothing but data_dir (the units' StateDirectory)."""
    path = tmp_path / "config.yml"
    path.write_text(skeleton())
    assert load_settings(str(path), env={}) == Settings(data_dir=DATA_DIR)


def test_config_skeleton_defaults_it_documents_are_the_real_ones(tmp_path: Path) -> None:
    """Uncommenting every documented setting still gives the defaults: no stale value."""
    path = tmp_path / "config.yml"
    path.write_text(uncomment(skeleton()))
    assert load_settings(str(path), env={}) == Settings(data_dir=DATA_DIR)


def test_config_skeleton_names_every_setting() -> None:
    """A key added to Settings must be added to the skeleton (with its default)."""
    tree = yaml.safe_load(uncomment(skeleton()))
    missing = []
    for key in OPTION_KEYS:
        node = tree
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(key)
                break
            node = node[part]
    assert missing == []


def test_environment_file_is_only_comments_naming_real_variables() -> None:
    """/etc/default/regsidecar sets nothing by itself; its examples are variables that exist."""
    text = render("systemd")["etc/default/regsidecar"].decode()
    lines = [line for line in text.splitlines() if line.strip()]
    assert all(line.startswith("#") for line in lines)
    examples = re.findall(r"^#([A-Z][A-Z0-9_]*)=", text, re.MULTILINE)
    known = {env_name(key) for key in OPTION_KEYS}
    regsidecar_vars = [v for v in examples if v.startswith("REGSIDECAR_")]
    assert regsidecar_vars and set(regsidecar_vars) <= known
    aws = {v for v in examples if v.startswith("AWS_")}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"} <= aws
    assert set(examples) == set(regsidecar_vars) | aws


def test_environment_file_is_private_under_systemd_and_readable_by_the_upstart_user() -> None:
    modes = {kind: {f.dest: f.mode for f in FILES[kind]} for kind in KINDS}
    assert modes["systemd"]["etc/default/regsidecar"] == 0o600
    assert modes["upstart"]["etc/default/regsidecar"] == 0o644
    others = [mode for kind in KINDS for dest, mode in modes[kind].items() if "default" not in dest]
    assert set(others) == {0o644}
    assert not any(mode & stat.S_IWOTH for kind in KINDS for mode in modes[kind].values())


def test_docker_daemon_snippet_moves_data_root_and_bounds_logs() -> None:
    conf = json.loads(render("upstart")["etc/regsidecar/docker-daemon.json"])
    assert conf["data-root"] == "/mnt/docker"
    assert conf["log-driver"] in {"local", "json-file"}
    assert {"max-size", "max-file"} <= set(conf["log-opts"])
    # It is a snippet to merge: nothing here may declare the loopback registry insecure
    # (docker already treats 127.0.0.0/8 so) or otherwise widen what docker trusts.
    assert "insecure-registries" not in conf


def test_containerd_hosts_files_send_the_sidecars_name_and_each_mirror_to_the_sidecar() -> None:
    files = hostinstall.containerd_hosts("localhost:5000", ["docker.io", "registry.ci:5000"])
    assert list(files) == [
        "etc/containerd/certs.d/localhost:5000/hosts.toml",
        "etc/containerd/certs.d/docker.io/hosts.toml",
        "etc/containerd/certs.d/registry.ci:5000/hosts.toml",
    ]
    own, hub, ci = (f.decode() for f in files.values())
    assert 'server = "http://localhost:5000"' in own
    assert 'server = "https://registry-1.docker.io"' in hub  # docker.io's real endpoint
    assert 'server = "https://registry.ci:5000"' in ci
    for text in (own, hub, ci):
        assert '[host."http://localhost:5000"]\n  capabilities = ["pull", "resolve"]' in text
    for bad in ("http://x", "a/b", "", "x y"):
        with pytest.raises(ValueError, match="not a registry"):
            hostinstall.containerd_hosts("localhost:5000", [bad])


def test_containerd_install_never_overwrites_an_edit(tmp_path: Path) -> None:
    files = [(d, b, 0o644) for d, b in hostinstall.containerd_hosts("localhost:5000").items()]
    first = hostinstall.install_files(tmp_path, files)
    assert [r.action for r in first] == ["written"]
    assert [r.action for r in hostinstall.install_files(tmp_path, files)] == ["unchanged"]
    path = tmp_path / files[0][0]
    path.write_text(path.read_text() + "# mine\n")
    assert [r.action for r in hostinstall.install_files(tmp_path, files)] == ["kept"]
    assert path.read_text().endswith("# mine\n")


def test_a_host_without_a_docker_group_gets_a_prune_unit_systemd_can_start(tmp_path: Path) -> None:
    """SupplementaryGroups=docker on a host with no docker group: systemd refuses to start the
    unit (216/GROUP, seen under a real systemd in tests/test_live_systemd.py). Without the
    group the unit does not ask for it and prunes the cache only."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/group").write_text("root:x:0:\nusers:x:100:\n")
    assert hostinstall.has_docker_group(tmp_path) is False
    hostinstall.install("systemd", tmp_path, DEFAULT_EXEC)
    unit = (tmp_path / "etc/systemd/system/regsidecar-prune.service").read_text()
    assert "SupplementaryGroups" not in unit.replace("# No docker group", "")
    assert "regsidecar prune --no-docker --config" in unit
    (tmp_path / "etc/group").write_text("root:x:0:\ndocker:x:999:\n")
    assert hostinstall.has_docker_group(tmp_path) is True
    assert hostinstall.has_docker_group(tmp_path / "nowhere") is True  # cannot tell: default
