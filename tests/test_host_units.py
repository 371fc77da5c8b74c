"""Host integration files: the units pass ``systemd-analyze verify``, the upstart job and cron
file say what the systemd units say, ``regsidecar install`` writes them idempotently, the
checked-in copies are the installed ones (and ship in the wheel), and the deploy/ files parse
and point at the right things.

The container image is not built here (that needs a docker daemon reaching Docker Hub and
PyPI); its Dockerfile is parsed instead.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml

from regsidecar import cli, hostinstall
from regsidecar.config import OPTION_KEYS, Settings, env_name, load_settings
from regsidecar.hostinstall import DEFAULT_EXEC, FILES, KINDS, render
from tests.conftest import require

REPO = Path(__file__).resolve().parent.parent
HOSTFILES = REPO / "regsidecar" / "hostfiles"
DEPLOY = REPO / "deploy"
CONFIG = "/etc/regsidecar/config.yml"
UNITS = (
    "regsidecar.service",
    "regsidecar-prune.service",
    "regsidecar-prune.timer",
    "example-app.service",
)

# ---------------------------------------------------------------------------- helpers


def run_install(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = cli.main(["install", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def stub_executable(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def an_existing_regsidecar(tmp_path: Path) -> str:
    """The venv's regsidecar when there is one; any executable does for verify."""
    return hostinstall.default_exec() or stub_executable(tmp_path / "bin" / "regsidecar")


def a_docker_binary(tmp_path: Path) -> str:
    """/usr/bin/docker (Debian's docker.io), or a stand-in where docker is not installed."""
    if os.access("/usr/bin/docker", os.X_OK):
        return "/usr/bin/docker"
    return stub_executable(tmp_path / "docker-bin" / "docker")


def verify_units(units: Iterable[Path]) -> list[str]:
    """What ``systemd-analyze verify`` says about these unit files: [] when they are clean.

    Its exit status alone is not enough: an unknown directive or a value it cannot parse is a
    warning ("..., ignoring.") with status 0. Lines about other units of this host (docker's,
    say, pulled in as dependencies) are not ours and are left out."""
    units = list(units)
    proc = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""},
    )
    names = {u.name for u in units}
    dirs = {str(u.parent) for u in units}
    problems = [
        line
        for line in proc.stderr.splitlines()
        if any(n in line for n in names) or any(d in line for d in dirs)
    ]
    if proc.returncode != 0:
        problems.append(f"systemd-analyze verify exited {proc.returncode}")
    return problems


def unit_settings(text: str) -> dict[str, list[tuple[str, str]]]:
    """[Section] -> [(Key, value), ...] in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections.setdefault(current, [])
            continue
        key, _, value = line.partition("=")
        sections[current].append((key.strip(), value.strip()))
    return sections


def unit_values(text: str, section: str, key: str) -> list[str]:
    return [v for k, v in unit_settings(text).get(section, []) if k == key]


# upstart 1.x stanzas (init(5)); anything else is a typo upstart would refuse.
UPSTART_STANZAS = {
    "description", "author", "version", "emits", "start on", "stop on", "manual", "respawn",
    "respawn limit", "setuid", "setgid", "umask", "nice", "oom score", "limit", "kill timeout",
    "kill signal", "reload signal", "console", "env", "export", "exec", "script",
    "pre-start", "post-start", "pre-stop", "post-stop", "expect", "normal exit", "task",
    "instance", "chdir", "chroot", "apparmor", "usage", "cgroup",
}  # fmt: skip


def parse_upstart(text: str) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """(stanza, arguments) in order, and the body of each ``[pre-start ]script`` block."""
    stanzas: list[tuple[str, str]] = []
    scripts: dict[str, str] = {}
    lines = iter(text.splitlines())
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        two = " ".join(words[:2])
        if two in UPSTART_STANZAS and len(words) > 1:
            name, args = two, " ".join(words[2:])
        elif words[0] in UPSTART_STANZAS:
            name, args = words[0], " ".join(words[1:])
        else:
            raise ValueError(f"unknown upstart stanza: {line!r}")
        if line == "script" or line.endswith(" script"):
            body = []
            for inner in lines:
                if inner.strip() == "end script":
                    break
                body.append(inner)
            else:
                raise ValueError(f"{line!r} without 'end script'")
            scripts[line] = "\n".join(body) + "\n"
            name, args = "script", line
        stanzas.append((name, args))
    return stanzas, scripts


def check_upstart_job(text: str, systemd_unit: str) -> list[str]:
    """How the upstart job differs from what it must say (and from the systemd unit)."""
    stanzas, scripts = parse_upstart(text)
    found: dict[str, list[str]] = {}
    for name, args in stanzas:
        found.setdefault(name, []).append(args)
    problems = []

    def expect(name: str, value: str) -> None:
        if found.get(name) != [value]:
            problems.append(f"{name}: {found.get(name)} != [{value!r}]")

    expect("start on", "(local-filesystems and net-device-up IFACE!=lo)")
    expect("stop on", "runlevel [!2345]")
    expect("respawn", "")
    limit = found.get("respawn limit", [""])[0].split()
    if len(limit) != 2 or not all(x.isdigit() and int(x) > 0 for x in limit):
        problems.append(f"respawn limit: {limit}")
    expect("setuid", "regsidecar")
    expect("setgid", "regsidecar")
    nofile = unit_values(systemd_unit, "Service", "LimitNOFILE")[0]
    expect("limit", f"nofile {nofile} {nofile}")
    if found.get("console") not in (["log"], ["output"]):
        problems.append(f"console: {found.get('console')}")
    # The same environment as the systemd unit's Environment=.
    env = sorted(found.get("env", []))
    unit_env = sorted(
        item for v in unit_values(systemd_unit, "Service", "Environment") for item in v.split()
    )
    if env != unit_env:
        problems.append(f"env {env} != the systemd unit's Environment= {unit_env}")
    # It runs what the systemd unit runs, with exec so upstart tracks the right process.
    exec_start = unit_values(systemd_unit, "Service", "ExecStart")[0]
    body = scripts.get("script", "")
    execs = [ln.strip() for ln in body.splitlines() if ln.strip().startswith("exec ")]
    execs += [f"exec {args}" for args in found.get("exec", [])]
    if execs != [f"exec {exec_start}"]:
        problems.append(f"exec lines {execs} != ['exec {exec_start}']")
    if not exec_start.endswith(f" serve --config {CONFIG}"):
        problems.append(f"the job does not run serve --config {CONFIG}: {exec_start}")
    if body:
        sh = subprocess.run(["sh", "-n"], input=body, capture_output=True, text=True)
        if sh.returncode != 0:
            problems.append(f"script is not valid sh: {sh.stderr.strip()}")
    return problems


# ------------------------------------------------------------------ systemd-analyze


@pytest.fixture
def installed_units(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """``install --systemd --root TMP --exec <existing>`` plus the example app unit, its paths
    pointed at executables that exist here (verify checks every Exec*= binary)."""
    require("systemd-analyze")
    root = tmp_path / "root"
    exe = an_existing_regsidecar(tmp_path)
    rc, _, err = run_install(["--systemd", "--root", str(root), "--exec", exe], capsys)
    assert rc == 0, err
    units = root / "etc" / "systemd" / "system"
    example = (REPO / "systemd" / "example-app.service").read_text()
    example = example.replace("/usr/bin/docker", a_docker_binary(tmp_path))
    (units / "example-app.service").write_text(example)
    return units


def test_every_unit_passes_systemd_analyze_verify(installed_units: Path) -> None:
    """No error and no warning about any of our units (regsidecar, prune service and timer,
    the example app), all verified together so the timer finds its service."""
    assert verify_units(installed_units / name for name in UNITS) == []


def test_checked_in_units_pass_verify_with_the_executable_substituted(tmp_path: Path) -> None:
    """The repository's systemd/ files themselves, /opt/regsidecar/... swapped for a path
    that exists here."""
    require("systemd-analyze")
    exe = an_existing_regsidecar(tmp_path)
    docker = a_docker_binary(tmp_path)
    out = tmp_path / "units"
    out.mkdir()
    for name in UNITS:
        text = (REPO / "systemd" / name).read_text()
        text = text.replace(DEFAULT_EXEC, exe).replace("/usr/bin/docker", docker)
        (out / name).write_text(text)
    assert verify_units(out / name for name in UNITS) == []


# A typo'd directive, a value systemd cannot parse, a binary that is not there: each must
# make the check fail (the first two only warn, with exit status 0).
MUTATIONS = {
    "unknown key": ("regsidecar.service", "ProtectHome=yes", "ProtectHom=yes"),
    "bad value": ("regsidecar.service", "Type=notify", "Type=notifyy"),
    "missing binary": ("regsidecar.service", "ExecStart=/", "ExecStart=/nonexistent/"),
    "prune typo": ("regsidecar-prune.service", "Type=oneshot", "Typ=oneshot"),
    "bad calendar": ("regsidecar-prune.timer", "OnCalendar=daily", "OnCalendar=dayly"),
    "app typo": ("example-app.service", "Restart=on-failure", "Restart=on-failur"),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_verify_check_catches_a_broken_unit(
    installed_units: Path, tmp_path: Path, mutation: str
) -> None:
    """The check above can fail: one broken unit among the four is reported."""
    unit, old, new = MUTATIONS[mutation]
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    for name in UNITS:
        shutil.copy(installed_units / name, broken_dir / name)
    text = (broken_dir / unit).read_text()
    assert old in text
    (broken_dir / unit).write_text(text.replace(old, new, 1))
    assert verify_units(broken_dir / name for name in UNITS), f"{mutation} went unnoticed"


def test_service_unit_settings() -> None:
    """The settings the issue asks for, read back from the unit (verify only says they
    parse)."""
    text = (REPO / "systemd" / "regsidecar.service").read_text()

    def one(key: str) -> str:
        values = unit_values(text, "Service", key)
        assert len(values) == 1, (key, values)
        return values[0]

    assert one("Type") == "notify"
    assert one("NotifyAccess") == "main"
    assert one("WatchdogSec") == "30s"
    assert one("TimeoutStartSec") == "120"
    assert one("Restart") == "always"
    assert one("ExecStart") == f"{DEFAULT_EXEC} serve --config {CONFIG}"
    assert one("EnvironmentFile") == "-/etc/default/regsidecar"
    assert one("StateDirectory") == "regsidecar"
    assert one("Environment") == "REGSIDECAR_DATA_DIR=/var/lib/regsidecar"
    assert one("MemoryMax") and one("LimitNOFILE").isdigit()
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "DynamicUser"):
        assert one(key) == "yes", key
    assert one("ProtectSystem") == "strict"
    assert one("CapabilityBoundingSet") == ""
    assert unit_values(text, "Unit", "StartLimitIntervalSec") == ["0"]
    assert unit_values(text, "Install", "WantedBy") == ["multi-user.target"]

    prune = (REPO / "systemd" / "regsidecar-prune.service").read_text()
    assert unit_values(prune, "Service", "Type") == ["oneshot"]
    assert unit_values(prune, "Service", "ExecStart") == [f"{DEFAULT_EXEC} prune --config {CONFIG}"]
    assert unit_values(prune, "Service", "SupplementaryGroups") == ["docker"]
    # One owner for the data dir: the same (dynamic) user as the service.
    assert unit_values(prune, "Service", "User") == unit_values(text, "Service", "User")
    timer = (REPO / "systemd" / "regsidecar-prune.timer").read_text()
    assert unit_values(timer, "Timer", "OnCalendar") == ["daily"]
    assert unit_values(timer, "Install", "WantedBy") == ["timers.target"]


def test_example_app_pull_never_blocks_its_start() -> None:
    text = (REPO / "systemd" / "example-app.service").read_text()
    pulls = [v for v in unit_values(text, "Service", "ExecStartPre") if " pull " in v]
    assert pulls == ["-/usr/bin/docker pull ${IMAGE}"]
    image = unit_values(text, "Service", "Environment")[0].removeprefix("IMAGE=")
    assert image.startswith("localhost:5000/app:")
    for key in ("Wants", "After"):
        assert set(unit_values(text, "Unit", key)[0].split()) == {
            "regsidecar.service",
            "docker.service",
        }


# ------------------------------------------------------------------ upstart and cron


def test_upstart_job_says_what_the_systemd_unit_says() -> None:
    job = (REPO / "upstart" / "regsidecar.conf").read_text()
    unit = (REPO / "systemd" / "regsidecar.service").read_text()
    assert check_upstart_job(job, unit) == []


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("respawn limit 10 300", "respwan limit 10 300"),
        ("stop on runlevel [!2345]", "stop on runlevel [!12345]"),
        ("env REGSIDECAR_DATA_DIR=/var/lib/regsidecar", "env REGSIDECAR_DATA_DIR=/tmp"),
        ("serve --config", "serve --configg"),
        ("end script", "end"),
        ("limit nofile 65536 65536", "limit nofile 1024 1024"),
    ],
)
def test_upstart_check_catches_a_broken_job(old: str, new: str) -> None:
    job = (REPO / "upstart" / "regsidecar.conf").read_text()
    unit = (REPO / "systemd" / "regsidecar.service").read_text()
    assert old in job
    broken = job.replace(old, new, 1)
    try:
        problems = check_upstart_job(broken, unit)
    except ValueError as exc:
        problems = [str(exc)]
    assert problems


def test_prune_cron_line_runs_prune_daily_as_root() -> None:
    text = (REPO / "upstart" / "regsidecar-prune.cron").read_text()
    assert text.endswith("\n")  # cron ignores a last line without one
    entries = [
        line
        for line in text.splitlines()
        if line.strip() and not line.startswith("#") and not re.match(r"[A-Z_]+=", line)
    ]
    assert len(entries) == 1
    minute, hour, dom, month, dow, user, command = entries[0].split(None, 6)
    assert minute.isdigit() and hour.isdigit() and (dom, month, dow) == ("*", "*", "*")
    assert user == "root"
    assert f"{DEFAULT_EXEC} prune --config {CONFIG}" in command
    assert "%" not in command  # cron turns % into a newline
    env = dict(re.findall(r"^([A-Z_]+)=(.*)$", text, re.MULTILINE))
    assert env["REGSIDECAR_DATA_DIR"] == "/var/lib/regsidecar"


# ------------------------------------------------------------------ install --root


def tree(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Relative path -> (content, mode, mtime_ns) of every file under root."""
    return {
        p.relative_to(root).as_posix(): (
            p.read_bytes(),
            p.stat().st_mode & 0o7777,
            p.stat().st_mtime_ns,
        )
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("kind", KINDS)
def test_install_writes_the_files_then_changes_nothing(
    kind: hostinstall.Kind, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """First run: every file written with its mode and the given executable; second run:
    every file unchanged, same bytes, same mtime."""
    root = tmp_path / "root"
    exe = "/srv/tools/bin/regsidecar"
    rc, out, _ = run_install([f"--{kind}", "--root", str(root), "--exec", exe], capsys)
    assert rc == 0
    expected = {f.dest for f in FILES[kind]}
    first = tree(root)
    assert set(first) == expected
    rendered = render(kind, exe)
    assert {dest: (content, mode) for dest, (content, mode, _) in first.items()} == {
        f.dest: (rendered[f.dest], f.mode) for f in FILES[kind]
    }
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[: len(expected)]] == ["written"] * len(expected)
    assert "Next" in out
    if kind == "systemd":
        assert "systemctl daemon-reload && systemctl enable --now regsidecar " in out
    else:
        assert "initctl reload-configuration && start regsidecar" in out

    rc, out, _ = run_install([f"--{kind}", "--root", str(root), "--exec", exe], capsys)
    assert rc == 0
    assert [line.split()[0] for line in out.splitlines()[: len(expected)]] == ["unchanged"] * len(
        expected
    )
    assert tree(root) == first


def test_install_keeps_an_edited_file_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    args = ["--systemd", "--root", str(root), "--exec", DEFAULT_EXEC]
    assert run_install(args, capsys)[0] == 0
    config = root / "etc" / "regsidecar" / "config.yml"
    edited = config.read_bytes() + b"storage: s3://my-images\n"
    config.write_bytes(edited)
    config.chmod(0o640)

    rc, out, _ = run_install(args, capsys)
    assert rc == 0  # kept files are the operator's edits, not an error
    assert f"kept       {config} (edited; --force replaces it)" in out.splitlines()
    assert config.read_bytes() == edited

    rc, out, _ = run_install([*args, "--json"], capsys)
    report = json.loads(out)
    actions = {Path(f["path"]).name: f["action"] for f in report["files"]}
    assert actions["config.yml"] == "kept"
    assert set(actions.values()) == {"kept", "unchanged"}
    assert report["kind"] == "systemd" and report["exec"] == DEFAULT_EXEC

    rc, out, _ = run_install([*args, "--force"], capsys)
    assert rc == 0
    assert any(line.startswith(f"replaced   {config}") for line in out.splitlines())
    assert config.read_bytes() == render("systemd")["etc/regsidecar/config.yml"]
    assert config.stat().st_mode & 0o777 == 0o640  # the operator's mode stays
    assert (config.parent / "config.yml~").read_bytes() == edited
    assert "unchanged" in run_install(args, capsys)[1]


def test_installed_config_loads_and_upstart_files_check_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both kinds in one root share the config; the installed job and unit agree."""
    root = tmp_path / "root"
    exe = "/usr/local/bin/regsidecar"
    assert run_install(["--upstart", "--root", str(root), "--exec", exe], capsys)[0] == 0
    assert run_install(["--systemd", "--root", str(root), "--exec", exe], capsys)[0] == 0
    settings = load_settings(str(root / "etc/regsidecar/config.yml"), env={})
    assert settings == Settings(data_dir="/var/lib/regsidecar")
    job = (root / "etc/init/regsidecar.conf").read_text()
    unit = (root / "etc/systemd/system/regsidecar.service").read_text()
    assert check_upstart_job(job, unit) == []
    assert f"{exe} prune --config" in (root / "etc/cron.d/regsidecar-prune").read_text()


def test_install_reports_a_file_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "regsidecar").write_text("a file where a directory should be")
    rc, out, _ = run_install(["--systemd", "--root", str(root), "--exec", DEFAULT_EXEC], capsys)
    assert rc == 1
    failed = [line for line in out.splitlines() if line.startswith("failed")]
    assert len(failed) == 2  # config.yml and docker-daemon.json
    assert (root / "etc/systemd/system/regsidecar.service").is_file()


@pytest.mark.parametrize(
    "argv",
    [
        ["--systemd", "--exec", "relative/regsidecar"],
        ["--systemd", "--exec", "/opt/with space/regsidecar"],
    ],
)
def test_install_refuses_a_bad_exec_path(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run_install([*argv, "--root", str(tmp_path)], capsys)
    assert rc == 2 and "--exec" in err
    assert list(tmp_path.iterdir()) == []


def test_install_needs_a_kind(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["install"])
    assert exc.value.code == 2
    assert "--systemd" in capsys.readouterr().err


# ------------------------------------------------------------------ one source


@pytest.mark.parametrize("kind", KINDS)
def test_checked_in_unit_files_are_what_install_writes(kind: hostinstall.Kind) -> None:
    """systemd/ and upstart/ at the top resolve to the package copies, byte for byte what
    install writes for the default executable."""
    rendered = render(kind, DEFAULT_EXEC)
    for f in FILES[kind]:
        top, _, name = f.source.partition("/")
        if not name:
            continue  # config.yml and friends live only in the package
        checked_in = REPO / top / name
        assert checked_in.resolve() == (HOSTFILES / f.source).resolve()
        assert checked_in.read_bytes() == rendered[f.dest]
    assert (DEPLOY / "daemon.json").read_bytes() == render(kind)[
        "etc/regsidecar/docker-daemon.json"
    ]


def test_wheel_ships_the_host_files(tmp_path: Path) -> None:
    """A non-editable wheel built from the sources holds every file install reads, with the
    same bytes as the repository's top-level copies."""
    src = tmp_path / "src"
    src.mkdir()
    # Build from a copy: a build in place rewrites the egg-info and leaves build/ behind.
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    shutil.copytree(
        REPO / "regsidecar", src / "regsidecar", ignore=shutil.ignore_patterns("__pycache__")
    )
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-q"]
    if _offline_backend():
        cmd.append("--no-build-isolation")
    proc = subprocess.run(
        [*cmd, str(src), "-w", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("regsidecar-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for kind in KINDS:
            for f in FILES[kind]:
                member = f"regsidecar/hostfiles/{f.source}"
                assert member in names
                assert zf.read(member) == (HOSTFILES / f.source).read_bytes()
        for name in UNITS:
            assert (
                zf.read(f"regsidecar/hostfiles/systemd/{name}")
                == (REPO / "systemd" / name).read_bytes()
            )
        for name in ("regsidecar.conf", "regsidecar-prune.cron"):
            assert (
                zf.read(f"regsidecar/hostfiles/upstart/{name}")
                == (REPO / "upstart" / name).read_bytes()
            )


def _offline_backend() -> bool:
    """Whether this interpreter can build the wheel itself (setuptools with bdist_wheel), so
    pip needs no index for an isolated build environment."""
    try:
        installed = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return False
    version = tuple(int(x) for x in re.findall(r"\d+", installed)[:2])
    has_wheel = importlib.util.find_spec("wheel") is not None
    return version >= (70, 1) or (version >= (68, 0) and has_wheel)


# ------------------------------------------------------------------ deploy/


def dockerfile_stages(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """[(FROM arguments, [(INSTRUCTION, arguments), ...]), ...] with continuations joined."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[tuple[str, list[tuple[str, str]]]] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        args = " ".join(args.split())
        if instruction == "FROM":
            stages.append((args, []))
        else:
            assert stages, f"{instruction} before FROM"
            stages[-1][1].append((instruction, args))
    return stages


def test_dockerfile_is_two_stages_and_the_runtime_has_only_the_venv() -> None:
    stages = dockerfile_stages((DEPLOY / "Dockerfile").read_text())
    assert len(stages) == 2
    (builder_from, builder), (final_from, final) = stages
    assert re.fullmatch(r"python:3\.11-slim-bookworm AS builder", builder_from, re.IGNORECASE)
    assert final_from.split()[0] == builder_from.split()[0]  # the venv's python must exist
    venv = str(Path(DEFAULT_EXEC).parent.parent)
    assert ("RUN", f"python -m venv {venv}") in builder
    assert any(i == "RUN" and f"{venv}/bin/pip install /src" in a for i, a in builder)

    def args(instruction: str) -> list[str]:
        return [a for i, a in final if i == instruction]

    assert args("COPY") == [f"--from=builder {venv} {venv}"]
    assert not args("ADD")
    (user,) = args("USER")
    assert user.split(":")[0] not in {"root", "0"}
    assert args("EXPOSE") == ["5000"]
    (health,) = args("HEALTHCHECK")
    assert "CMD" in health and "/healthz" in health and '"python"' in health
    assert "curl" not in health and "wget" not in health
    assert [json.loads(a) for a in args("ENTRYPOINT")] == [["regsidecar"]]
    assert [json.loads(a) for a in args("CMD")] == [["serve", "--listen", "0.0.0.0:5000"]]


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    """.dockerignore lets through exactly what the builder COPYs (and keeps .venv, .git and
    the tests out)."""
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def excluded(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(p, pat) for p in prefixes) or fnmatch.fnmatch(
                path, pat.replace("**/", "*")
            ):
                result = not negate
        return result

    stages = dockerfile_stages((DEPLOY / "Dockerfile").read_text())
    copied = [
        src
        for i, a in stages[0][1]
        if i == "COPY"
        for src in a.split()[:-1]
        if not src.startswith("--")
    ]
    assert copied == ["pyproject.toml", "README.md", "regsidecar"]
    for src in copied:
        assert not excluded(src), src
    assert not excluded("regsidecar/hostfiles/systemd/regsidecar.service")
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "regsidecar/__pycache__"):
        assert excluded(path), path


def _compose_env(environment: dict[str, str]) -> dict[str, str]:
    """Compose's ${VAR:-default} as if VAR were unset."""
    return {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in environment.items()}


def test_compose_runs_the_sidecar_then_the_app_from_localhost() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    sidecar = compose["services"]["regsidecar"]
    app = compose["services"]["app"]
    assert (DEPLOY / sidecar["build"]["context"]).resolve() == REPO
    assert (REPO / sidecar["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert sidecar["ports"] == ["127.0.0.1:5000:5000"]  # loopback only
    env = _compose_env(sidecar["environment"])
    assert env["REGSIDECAR_STORAGE"] == "s3://BUCKET"
    known = {env_name(k) for k in OPTION_KEYS}
    assert {k for k in env if k.startswith("REGSIDECAR_")} <= known
    # BUCKET is the documented placeholder; a valid bucket name stands in for it here.
    ours = {
        k: v.replace("BUCKET", "my-images") for k, v in env.items() if k.startswith("REGSIDECAR_")
    }
    settings = load_settings(env=ours)
    assert settings.storage_kind == "s3" and settings.s3_bucket == "my-images"
    assert app["image"].startswith("localhost:5000/")
    assert app["depends_on"] == {"regsidecar": {"condition": "service_healthy"}}
    volume = sidecar["volumes"][0].split(":")
    assert volume[1] == "/var/lib/regsidecar" and volume[0] in compose["volumes"]


def test_cloud_init_installs_configures_and_starts_the_unit() -> None:
    text = (DEPLOY / "cloud-init.yaml").read_text()
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert "python3-venv" in doc["packages"]
    (config,) = [f for f in doc["write_files"] if f["path"] == CONFIG]
    tree_ = yaml.safe_load(config["content"])
    assert tree_["storage"] == "s3://BUCKET" and tree_["data_dir"] == "/var/lib/regsidecar"
    script = "\n".join(doc["runcmd"])
    venv = str(Path(DEFAULT_EXEC).parent.parent)
    lines = [
        ln.strip() for ln in script.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    assert lines[0] == "set -eu"
    order = [
        f"python3 -m venv {venv}",
        f"{venv}/bin/pip install",
        f"{DEFAULT_EXEC} install --systemd",
        "systemctl daemon-reload",
        "systemctl enable --now regsidecar.service regsidecar-prune.timer",
    ]
    positions = [next(i for i, ln in enumerate(lines) if ln.startswith(step)) for step in order]
    assert positions == sorted(positions)
    pip_spec = re.search(r'REGSIDECAR_PIP="([^"]+)"', script)
    assert pip_spec and pip_spec.group(1).startswith("https://")  # a pinned URL, not a bare name
    sh = subprocess.run(["sh", "-n"], input=script, capture_output=True, text=True)
    assert sh.returncode == 0, sh.stderr


def test_cloud_init_config_is_valid_settings(tmp_path: Path) -> None:
    doc = yaml.safe_load((DEPLOY / "cloud-init.yaml").read_text())
    (config,) = [f for f in doc["write_files"] if f["path"] == CONFIG]
    path = tmp_path / "config.yml"
    # BUCKET is the documented placeholder; any valid bucket name stands in for it here.
    path.write_text(config["content"].replace("BUCKET", "my-images"))
    settings = load_settings(str(path), env={})
    assert settings.storage_kind == "s3" and settings.s3_bucket == "my-images"


def _statements(name: str) -> list[dict[str, list[str]]]:
    policy = json.loads((DEPLOY / "iam" / name).read_text())
    assert policy["Version"] == "2012-10-17"
    out = []
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and "Principal" not in st and "NotAction" not in st
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        out.append({"actions": actions, "resources": resources})
    return out


def test_instance_policy_reads_the_registry_tree_and_nothing_else() -> None:
    statements = _statements("instance-read-only.json")
    grants = {(a, r) for st in statements for a in st["actions"] for r in st["resources"]}
    assert grants == {
        ("s3:GetObject", "arn:aws:s3:::BUCKET/docker/registry/v2/*"),
        ("s3:ListBucket", "arn:aws:s3:::BUCKET"),
    }


def test_peer_policy_only_describes_instances() -> None:
    statements = _statements("peers-describe-instances.json")
    grants = {(a, r) for st in statements for a in st["actions"] for r in st["resources"]}
    assert grants == {("ec2:DescribeInstances", "*")}


def test_ci_policy_is_what_distributions_s3_driver_needs_to_push() -> None:
    statements = _statements("ci-push.json")
    grants = {(a, r) for st in statements for a in st["actions"] for r in st["resources"]}
    bucket, objects = "arn:aws:s3:::BUCKET", "arn:aws:s3:::BUCKET/docker/registry/v2/*"
    expected = {
        (a, bucket)
        for a in ("s3:ListBucket", "s3:GetBucketLocation", "s3:ListBucketMultipartUploads")
    } | {
        (a, objects)
        for a in (
            "s3:PutObject",
            "s3:GetObject",
            "s3:DeleteObject",
            "s3:ListMultipartUploadParts",
            "s3:AbortMultipartUpload",
        )
    }
    assert grants == expected
    assert not any("*" in a for a, _ in grants)


def test_daemon_json_is_the_snippet_install_writes() -> None:
    conf = json.loads((DEPLOY / "daemon.json").read_text())
    assert conf["data-root"] == "/mnt/docker"
    assert conf["log-driver"] == "local"
    assert conf["log-opts"]["max-size"] and int(conf["log-opts"]["max-file"]) > 0


def test_install_deps_installs_systemd_analyze() -> None:
    """A fresh CI machine gets systemd-analyze from Debian's systemd package."""
    text = (REPO / "tests" / "rig" / "install-deps.sh").read_text()
    pkgs = re.search(r"APT_PKGS=\(([^)]*)\)", text)
    assert pkgs and "systemd" in shlex.split(pkgs.group(1))
