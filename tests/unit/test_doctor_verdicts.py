"""doctor's verdicts: measured facts in, pass/warn/fail and the fix out (no I/O)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from regsidecar.config import format_size, load_settings
from regsidecar.doctor import Check, Status, exit_code, render_json, render_table, worst
from regsidecar.doctor.docker_verdicts import (
    DOCKER_MIN_FREE_BYTES,
    data_root_verdict,
    log_driver_verdict,
    registry_verdict,
)
from regsidecar.doctor.probes import _ready_detail, probe_auth, sidecar_url
from regsidecar.doctor.verdicts import (
    IAM_POLICY,
    S3_MAX_SKEW_S,
    AuthProbe,
    SidecarProbe,
    StoreProbe,
    auth_verdict,
    cache_verdict,
    clock_verdict,
    config_verdict,
    sidecar_verdict,
    store_verdict,
)

GiB = 1024**3


def _checks(*statuses: Status) -> list[Check]:
    return [Check(f"c{i}", s, "d", None if s == "pass" else "fix") for i, s in enumerate(statuses)]


@pytest.mark.parametrize(
    ("statuses", "worst_status", "code"),
    [
        ((), "pass", 0),
        (("pass", "pass"), "pass", 0),
        (("pass", "warn", "pass"), "warn", 1),
        (("warn", "fail", "pass"), "fail", 2),
        (("fail", "warn"), "fail", 2),
    ],
)
def test_the_exit_code_is_the_worst_status(
    statuses: tuple[Status, ...], worst_status: str, code: int
) -> None:
    checks = _checks(*statuses)
    assert worst(checks) == worst_status
    assert exit_code(checks) == code


# -- clock ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "correct", "status"),
    [
        (0.0, True, "pass"),
        (60.0, True, "pass"),
        (-60.0, True, "pass"),
        (60.5, True, "warn"),
        (-60.5, True, "warn"),
        (-1200.0, True, "warn"),  # signing is corrected: S3 still answers
        (86400.0, True, "warn"),
        (60.5, False, "warn"),
        (S3_MAX_SKEW_S, False, "warn"),
        (S3_MAX_SKEW_S + 0.5, False, "fail"),
        (-(S3_MAX_SKEW_S + 0.5), False, "fail"),
    ],
)
def test_clock_thresholds(offset: float, correct: bool, status: str) -> None:
    """Within clock.max_offset_warn_s: pass; beyond: warn; beyond S3's 900 s with no
    correction: fail, since every signed request is then refused."""
    c = clock_verdict(offset, correct, 60.0)
    assert c.status == status
    assert f"{offset:+.1f} s" in c.detail
    if status == "pass":
        assert c.fix is None
    else:
        assert c.fix is not None and "NTP" in c.fix
    if status == "fail":
        assert "clock.correct: true" in (c.fix or "")


def test_clock_warning_says_signing_is_corrected_meanwhile() -> None:
    c = clock_verdict(-1200.0, True, 60.0)
    assert c.fix == "enable NTP (chrony/systemd-timesyncd); signing is corrected meanwhile"


def test_an_unmeasured_clock_warns() -> None:
    assert clock_verdict(None, True, 60.0).status == "warn"


# -- cache ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "cached", "status"),
    [
        (11 * GiB, 0, "pass"),  # exactly max (10) + min_free (1)
        (11 * GiB - 1, 0, "warn"),
        (2 * GiB, 9 * GiB, "pass"),  # what is cached already counts as room
        (2 * GiB, 9 * GiB - 1, "warn"),
        (1 * GiB, 0, "warn"),  # at min_free: not below it
        (1 * GiB - 1, 10 * GiB, "fail"),
        (0, 0, "fail"),
    ],
)
def test_cache_disk_thresholds(free: int, cached: int, status: str) -> None:
    c = cache_verdict("/d/cache", free=free, cached=cached, max_bytes=10 * GiB, min_free=GiB)
    assert c.status == status
    assert (c.fix is None) == (status == "pass")


def test_cache_warning_names_a_max_bytes_that_fits() -> None:
    c = cache_verdict("/d/cache", free=5 * GiB, cached=0, max_bytes=10 * GiB, min_free=GiB)
    assert c.fix is not None and "cache.max_bytes to 4.0 GiB" in c.fix


def test_an_unwritable_cache_fails() -> None:
    c = cache_verdict(
        "/d/cache", free=100 * GiB, cached=0, max_bytes=GiB, min_free=0, write_error="denied"
    )
    assert c.status == "fail" and "denied" in c.detail


# -- docker ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("free", "total", "status"),
    [
        (DOCKER_MIN_FREE_BYTES, 100 * GiB, "pass"),  # 10 GiB and exactly 10 %
        (DOCKER_MIN_FREE_BYTES - 1, 100 * GiB, "warn"),
        (DOCKER_MIN_FREE_BYTES, 100 * GiB + 1024, "warn"),  # just under 10 %
        (50 * GiB, 1000 * GiB, "warn"),  # plenty of bytes, 5 % of a big disk
        (5 * GiB, 6 * GiB, "warn"),  # a big fraction of a small disk
        (None, None, "warn"),  # the path is not on this host
    ],
)
def test_data_root_thresholds(free: int | None, total: int | None, status: str) -> None:
    assert data_root_verdict("/var/lib/docker", free, total).status == status


@pytest.mark.parametrize(
    ("driver", "opts", "status"),
    [
        ("json-file", {}, "warn"),
        ("json-file", {"max-file": "3"}, "warn"),
        ("json-file", {"max-size": "10m"}, "pass"),
        ("json-file", None, "warn"),  # daemon.json unreadable: cannot tell
        ("local", {}, "pass"),
        ("journald", {}, "pass"),
        ("local", None, "pass"),
    ],
)
def test_log_driver(driver: str, opts: dict[str, str] | None, status: str) -> None:
    c = log_driver_verdict(driver, opts, "/etc/docker/daemon.json")
    assert c.status == status
    if status == "warn":
        assert c.fix is not None and ("max-size" in c.fix or "--daemon-json" in c.fix)


@pytest.mark.parametrize(
    ("cidrs", "names", "status"),
    [
        (["127.0.0.0/8"], [], "pass"),
        (["::1/128", "127.0.0.1/32"], [], "pass"),
        (["10.0.0.0/8", "not a cidr"], [], "warn"),
        ([], ["localhost:5000"], "pass"),
        ([], ["localhost:5001"], "warn"),
        ([], [], "warn"),
    ],
)
def test_loopback_registry(cidrs: list[str], names: list[str], status: str) -> None:
    c = registry_verdict(5000, cidrs, names)
    assert c.status == status
    if status == "warn":
        assert c.fix is not None and '"insecure-registries"' in c.fix


# -- store ----------------------------------------------------------------------------------------

S3 = StoreProbe("s3://b/reg", "s3", credentials="iam-role", bucket="b", prefix="reg")


def _probe(**changes: object) -> StoreProbe:
    return dataclasses.replace(S3, **changes)  # type: ignore[arg-type]


def test_store_pass_names_the_tag_read() -> None:
    c = store_verdict(_probe(repositories=3, tag="a/b:v1", link_key="k", link="sha256:ab"))
    assert c.status == "pass"
    assert "3 repositories; tag a/b:v1 -> sha256:ab" in c.detail


def test_an_empty_store_warns() -> None:
    c = store_verdict(_probe())
    assert c.status == "warn" and "holds no repositories yet" in c.detail


def test_repositories_without_a_tag_warn() -> None:
    assert store_verdict(_probe(repositories=1)).status == "warn"


@pytest.mark.parametrize(
    ("changes", "in_detail", "in_fix"),
    [
        ({"error_kind": "unreachable"}, "listing", "s3.endpoint_url"),
        (
            {"error_kind": "denied"},
            "missing s3:ListBucket",
            f"s3:ListBucket on arn:aws:s3:::b (see {IAM_POLICY})",
        ),
        (
            {"error_kind": "denied", "step": "get", "link_key": "x/link"},
            "reading x/link",
            "s3:GetObject on arn:aws:s3:::b/reg/*",
        ),
        ({"error_kind": "denied", "credentials": None}, "none found", "no AWS credentials"),
        ({"error_kind": "skewed"}, "listing", "clock.correct: true"),
        ({"error_kind": "missing"}, "listing", "bucket name"),
        ({"error_kind": "config"}, "resolving credentials", "AWS_PROFILE"),
    ],
)
def test_store_errors_fail_with_a_fix(
    changes: dict[str, object], in_detail: str, in_fix: str
) -> None:
    c = store_verdict(_probe(error="S3 403 AccessDenied", **changes))
    assert c.status == "fail"
    assert in_detail in c.detail
    assert c.fix is not None and in_fix in c.fix


def test_a_missing_directory_store_fails() -> None:
    p = StoreProbe("/srv/registry", "filesystem", error="no such directory", error_kind="missing")
    c = store_verdict(p)
    assert c.status == "fail" and c.fix is not None and "--storage" in c.fix


# -- sidecar --------------------------------------------------------------------------------------

URL = "http://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("probe", "status"),
    [
        (SidecarProbe(URL, refused=True), "warn"),
        (SidecarProbe(URL, error="TimeoutError"), "fail"),
        (SidecarProbe(URL, status=200, api_version="registry/2.0"), "pass"),
        (SidecarProbe(URL, status=200, api_version=None), "fail"),  # not a registry
        (SidecarProbe(URL, status=404, api_version="registry/2.0"), "fail"),
        (SidecarProbe(URL, status=401, api_version="registry/2.0"), "pass"),  # auth on
        (SidecarProbe(URL, status=401, api_version=None), "fail"),
        (SidecarProbe(URL, 200, "registry/2.0", ready_status=200, ready_detail="{}"), "pass"),
        (SidecarProbe(URL, 200, "registry/2.0", ready_status=503, ready_detail="s3"), "warn"),
    ],
)
def test_sidecar(probe: SidecarProbe, status: str) -> None:
    c = sidecar_verdict(probe)
    assert c.status == status
    if probe.refused:
        assert c.fix == "systemctl start regsidecar (or regsidecar serve)"
    if probe.ready_status == 503:
        assert "not ready: s3" in c.detail


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("0.0.0.0:5001", "http://127.0.0.1:5001"),
        ("[::]:5000", "http://[::1]:5000"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("localhost:5000", "http://localhost:5000"),
    ],
)
def test_sidecar_url_reaches_a_wildcard_listen_over_loopback(listen: str, url: str) -> None:
    assert sidecar_url(listen) == url


def test_ready_detail_is_the_reason() -> None:
    body = b'{"ready": false, "reason": "store unreachable", "store": "down"}'
    assert _ready_detail(body) == "store unreachable"
    assert _ready_detail(b'{"ready": false, "store": "down"}') == '{"store":"down"}'
    assert _ready_detail(b"plain text") == "plain text"


# -- config and rendering -------------------------------------------------------------------------


def test_config_row_shows_store_listen_and_data_dir() -> None:
    s = load_settings(env={}, overrides={"storage": "s3://bkt/p", "data_dir": "/var/lib/rs"})
    c = config_verdict(s)
    assert c == Check(
        "config", "pass", "store s3://bkt/p, listen 127.0.0.1:5000, data dir /var/lib/rs"
    )


def test_table_has_one_row_per_check_and_a_fix_line_under_each_non_pass_row() -> None:
    checks = [
        Check("config", "pass", "ok"),
        Check("store", "fail", "down", "fix the network"),
        Check("docker-log-driver", "warn", "json-file", "use local"),
    ]
    assert render_table(checks).splitlines() == [
        "CHECK              STATUS  DETAIL",
        "config             pass    ok",
        "store              fail    down",
        "                           fix: fix the network",
        "docker-log-driver  warn    json-file",
        "                           fix: use local",
    ]


def test_json_report() -> None:
    doc = json.loads(render_json([Check("a", "pass", "x"), Check("b", "warn", "y", "z")]))
    assert doc == {
        "checks": [
            {"name": "a", "status": "pass", "detail": "x", "fix": None},
            {"name": "b", "status": "warn", "detail": "y", "fix": "z"},
        ],
        "worst": "warn",
    }


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (5 * GiB, "5.0 GiB")]
)
def test_sizes_in_rows_read_in_binary_units(n: int, text: str) -> None:
    """The cache and data-root rows print sizes with config.format_size."""
    assert format_size(n) == text


# -- auth -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probe", "status", "says"),
    [
        (AuthProbe(False), "pass", "read-only"),
        (AuthProbe(True, error="auth.htpasswd: f:2: not a bcrypt hash"), "fail", "bcrypt"),
        (AuthProbe(True, frozenset({"ci", "dev"}), writers=("ci",)), "pass", "writers ci"),
        (AuthProbe(True, frozenset({"ci"}), frozenset({"rel"}), ("ci", "rel")), "pass", "1 static"),
        (AuthProbe(True, frozenset({"ci"}), writers=("ci", "gone")), "warn", "gone"),
        (AuthProbe(True, frozenset({"ci"})), "warn", "every one of them may push"),
        (
            AuthProbe(True, frozenset({"ci"}), writers=("ci",), anonymous_pull=False),
            "pass",
            "refused",
        ),
    ],
)
def test_auth(probe: AuthProbe, status: str, says: str) -> None:
    c = auth_verdict(probe)
    assert (c.name, c.status) == ("auth", status)
    assert says in c.detail
    assert (c.fix is None) == (status == "pass")


def test_probe_auth_reads_the_files_as_serve_does(tmp_path: Path) -> None:
    import bcrypt

    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    htpasswd.write_text(f"ci:{hashed}\nreader:{hashed}\n")
    tokens = tmp_path / "tokens"
    tokens.write_text("release:0123456789abcdef0123\n")
    s = load_settings(
        env={},
        overrides={
            "data_dir": str(tmp_path / "data"),
            "auth.htpasswd": str(htpasswd),
            "auth.tokens": str(tokens),
            "auth.writers": "ci,release",
        },
    )
    p = probe_auth(s)
    assert (p.users, p.tokens, p.writers) == ({"ci", "reader"}, {"release"}, ("ci", "release"))
    assert auth_verdict(p).status == "pass"
    assert not (tmp_path / "data").exists()  # doctor creates no token key
    htpasswd.write_text("ci:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    bad = probe_auth(s)
    assert bad.error is not None and "auth.htpasswd" in bad.error
    assert hashed not in bad.error
    assert auth_verdict(bad).status == "fail"


def test_the_policy_row_loads_every_key_and_names_the_ones_that_do_not(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from regsidecar.doctor.probes import probe_policy
    from regsidecar.doctor.verdicts import policy_verdict

    good = tmp_path / "ci.pub"
    good.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    p384 = tmp_path / "p384.pub"
    p384.write_bytes(
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    none = load_settings(None, env={})
    assert policy_verdict(probe_policy(none)).status == "pass"
    ok = load_settings(None, env={"REGSIDECAR_POLICY_RULES": f"prod/*=signed-by:{good},*=accept"})
    check = policy_verdict(probe_policy(ok))
    assert (check.status, check.detail.split(";")[0]) == (
        "pass",
        "2 rules (1 signed-by), 1 keys load",
    )
    rules = f"prod/*=signed-by:{good}+{p384}+{tmp_path / 'missing.pub'}"
    bad = policy_verdict(probe_policy(load_settings(None, env={"REGSIDECAR_POLICY_RULES": rules})))
    assert bad.status == "fail"
    assert (
        "2 of 3 key files" in bad.detail and "P-256" in bad.detail and "missing.pub" in bad.detail
    )
