"""Verdicts: measured facts in, one :class:`Check` (pass/warn/fail, and the fix) out.

Pure: no I/O, no clock, no environment. Thresholds and wording live here so they are
unit-tested without a network; :mod:`regsidecar.doctor.probes` gathers the facts. The docker
rows are in :mod:`regsidecar.doctor.docker_verdicts`.

>>> clock_verdict(-1200.0, correct_enabled=True, warn_s=60.0).status
'warn'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from regsidecar.config import Settings, format_size

Status = Literal["pass", "warn", "fail"]

#: S3 refuses a request signed further than this from its own clock.
S3_MAX_SKEW_S = 900.0
#: Listings spent looking for a tag to read (repository names nest: a/b/c).
MAX_LISTINGS = 12
IAM_POLICY = "deploy/iam/instance-read-only.json"
_NTP_FIX = "enable NTP (chrony/systemd-timesyncd)"


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the report: ``fix`` says what to do when ``status`` is not pass.

    >>> Check("clock", "warn", "offset +75.0 s", "enable NTP").status
    'warn'
    """

    name: str
    status: Status
    detail: str
    fix: str | None = None


# -- config ---------------------------------------------------------------------------------------


def config_verdict(settings: Settings) -> Check:
    store = settings.storage if settings.storage_kind == "s3" else settings.filesystem_root
    detail = f"store {store}, listen {settings.listen}, data dir {settings.data_dir}"
    return Check("config", "pass", detail)


def config_failed(message: str) -> Check:
    return Check(
        "config",
        "fail",
        f"invalid config: {message} (no other check can run)",
        "correct that setting (flag, REGSIDECAR_* variable or --config file); "
        "see regsidecar serve --help",
    )


# -- auth -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthProbe:
    """What the auth settings and files hold (names only, never a secret)."""

    enabled: bool
    users: frozenset[str] = frozenset()
    tokens: frozenset[str] = frozenset()
    writers: tuple[str, ...] = ()
    anonymous_pull: bool = True
    error: str | None = None  # a file that cannot be read or parsed


def auth_verdict(p: AuthProbe) -> Check:
    if not p.enabled:
        return Check("auth", "pass", "read-only: no auth.htpasswd or auth.tokens; writes get 405")
    if p.error is not None:
        return Check(
            "auth",
            "fail",
            p.error,
            "fix the file: htpasswd -B FILE USER (bcrypt only); tokens are NAME:TOKEN lines "
            "of at least 16 characters; the sidecar will not start until then",
        )
    names = p.users | p.tokens
    detail = (
        f"{len(p.users)} htpasswd users, {len(p.tokens)} static tokens; "
        f"anonymous pulls {'allowed' if p.anonymous_pull else 'refused'}"
    )
    unknown = sorted(set(p.writers) - names)
    if unknown:
        return Check(
            "auth",
            "warn",
            f"{detail}; auth.writers names {', '.join(unknown)}, which no user or token has",
            "add the user (htpasswd -B) or token, or drop the name from auth.writers",
        )
    if not p.writers:
        return Check(
            "auth",
            "warn",
            f"{detail}; auth.writers is empty, so every one of them may push",
            "list only the CI names in auth.writers (least privilege)",
        )
    return Check("auth", "pass", f"{detail}; writers {', '.join(p.writers)}")


# -- store ----------------------------------------------------------------------------------------

ErrorKind = Literal["unreachable", "denied", "skewed", "missing", "config", "other"]


@dataclass(frozen=True, slots=True)
class StoreProbe:
    """What reading the store showed. ``step`` is where it stopped: ``list`` (the repositories
    listing) or ``get`` (reading the tag link)."""

    store: str
    kind: Literal["s3", "filesystem"]
    repositories: int = 0
    tag: str | None = None  # NAME:TAG whose link was read
    link_key: str | None = None
    link: str | None = None
    error: str | None = None
    error_kind: ErrorKind | None = None
    step: Literal["list", "get"] = "list"
    credentials: str | None = None  # botocore's method (env, iam-role, ...); None: none found
    bucket: str = ""
    prefix: str = ""


def store_verdict(p: StoreProbe) -> Check:
    if p.error is not None:
        return _store_error(p)
    if p.repositories == 0:
        where = "bucket" if p.kind == "s3" else "directory"
        return Check(
            "store",
            "warn",
            f"{p.store}: {where} reachable but holds no repositories yet",
            "push an image with the registry:2 that writes this store, and check the store "
            "path is its rootdirectory (s3://BUCKET/PREFIX)",
        )
    if p.link_key is None:
        return Check(
            "store",
            "warn",
            f"{p.store}: {_count(p.repositories, 'repository')} listed, but no tag found to read "
            f"within {MAX_LISTINGS} listings (reading objects not verified)",
            "push a tagged image, or pull one through the sidecar to check reads",
        )
    reads = "ListBucket and GetObject work" if p.kind == "s3" else "readable"
    found = _count(p.repositories, "repository")
    return Check("store", "pass", f"{p.store}: {found}; tag {p.tag} -> {p.link}; {reads}")


def _count(n: int, noun: str) -> str:
    """``1 repository``, ``2 repositories``."""
    if n == 1:
        return f"{n} {noun}"
    return f"{n} {noun[:-1]}ies" if noun.endswith("y") else f"{n} {noun}s"


def _store_error(p: StoreProbe) -> Check:
    doing = "listing repositories" if p.step == "list" else f"reading {p.link_key}"
    if p.error_kind == "config":
        doing = "resolving credentials"
    detail = f"{p.store}: {doing}: {p.error}"
    if p.kind == "filesystem":
        fixes = {
            "missing": "point --storage at the directory distribution's filesystem driver "
            "writes (its rootdirectory)",
            "denied": "make the directory readable by the user regsidecar runs as",
        }
        return Check("store", "fail", detail, fixes.get(p.error_kind or "", "check the disk"))
    if p.error_kind == "unreachable":
        fix = (
            "check s3.endpoint_url / network (security groups, VPC endpoint, proxy) / the "
            "instance role (credentials come from it through IMDS)"
        )
    elif p.error_kind == "denied":
        permission = "s3:ListBucket" if p.step == "list" else "s3:GetObject"
        detail += f" (missing {permission}?; credentials: {p.credentials or 'none found'})"
        if p.credentials is None:
            fix = (
                "no AWS credentials found: attach the instance role, or set AWS_* variables "
                f"or a profile; the role needs the permissions in {IAM_POLICY}"
            )
        elif p.step == "list":
            fix = f"grant s3:ListBucket on arn:aws:s3:::{p.bucket} (see {IAM_POLICY})"
        else:
            objects = f"{p.bucket}/{p.prefix}/*" if p.prefix else f"{p.bucket}/*"
            fix = f"grant s3:GetObject on arn:aws:s3:::{objects} (see {IAM_POLICY})"
    elif p.error_kind == "skewed":
        fix = "sync the clock now (chronyc makestep) and set clock.correct: true"
    elif p.error_kind == "missing":
        fix = "check the bucket name in storage (s3://BUCKET/PREFIX) and s3.region"
    elif p.error_kind == "config":
        fix = "check the AWS configuration: AWS_PROFILE, ~/.aws/config, AWS_* variables"
    else:
        fix = "check s3.endpoint_url and the bucket; run with --log-level debug for more"
    return Check("store", "fail", detail, fix)


# -- clock ----------------------------------------------------------------------------------------


def clock_not_needed() -> Check:
    return Check("clock", "pass", "no S3 store; nothing to sign")


def clock_verdict(offset_s: float | None, correct_enabled: bool, warn_s: float) -> Check:
    """``offset_s`` = S3 time - local time (None: S3 never answered, so not measured)."""
    if offset_s is None:
        return Check(
            "clock", "warn", "not measured: S3 did not answer", "see the store check above"
        )
    detail = f"offset {offset_s:+.1f} s (S3 time - local time)"
    if abs(offset_s) <= warn_s:
        return Check("clock", "pass", detail)
    if not correct_enabled and abs(offset_s) > S3_MAX_SKEW_S:
        return Check(
            "clock",
            "fail",
            f"{detail}; clock.correct is off and S3 refuses requests signed over "
            f"{S3_MAX_SKEW_S:.0f} s away",
            f"sync the clock now (chronyc makestep) and {_NTP_FIX}; or set clock.correct: true",
        )
    if correct_enabled:
        fix = f"{_NTP_FIX}; signing is corrected meanwhile"
        return Check("clock", "warn", f"{detail}; over {warn_s:.0f} s", fix)
    return Check(
        "clock",
        "warn",
        f"{detail}; over {warn_s:.0f} s, and clock.correct is off",
        f"{_NTP_FIX}; or set clock.correct: true (S3 refuses requests over "
        f"{S3_MAX_SKEW_S:.0f} s off)",
    )


# -- cache ----------------------------------------------------------------------------------------


def cache_verdict(
    path: str,
    *,
    free: int,
    cached: int,
    max_bytes: int,
    min_free: int,
    write_error: str | None = None,
) -> Check:
    """The cache needs its directory writable and, to fill to ``max_bytes``, a disk with room
    for it plus ``min_free`` (bytes already cached count as room: they are on the disk)."""
    if write_error is not None:
        return Check(
            "cache",
            "fail",
            f"{path}: cannot write: {write_error}",
            "make DATA_DIR writable by the user regsidecar runs as, or set --data-dir",
        )
    figures = (
        f"{format_size(free)} free, {format_size(cached)} cached, "
        f"cache.max_bytes {format_size(max_bytes)}"
    )
    floor = f"cache.min_free_bytes {format_size(min_free)}"
    if free < min_free:
        return Check(
            "cache",
            "fail",
            f"{path}: {figures}: below {floor}, so nothing new is cached (blobs stream through)",
            "free disk space on that filesystem, or move --data-dir to a bigger disk",
        )
    room = free + cached - min_free
    if room < max_bytes:
        return Check(
            "cache",
            "warn",
            f"{path}: {figures}: the disk holds only {format_size(room)} of cache above {floor}",
            f"lower cache.max_bytes to {format_size(max(room, 0))} or less, or free disk space",
        )
    return Check("cache", "pass", f"{path}: writable; {figures}")


# -- sidecar --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SidecarProbe:
    url: str
    status: int | None = None
    api_version: str | None = None
    refused: bool = False
    error: str | None = None
    ready_status: int | None = None  # None: /readyz not asked (or not answered)
    ready_detail: str | None = None


def sidecar_verdict(p: SidecarProbe) -> Check:
    if p.refused:
        return Check(
            "sidecar",
            "warn",
            f"not running: nothing listens on {p.url}",
            "systemctl start regsidecar (or regsidecar serve)",
        )
    if p.error is not None:
        return Check(
            "sidecar",
            "fail",
            f"{p.url}/v2/: {p.error}",
            "check the process: journalctl -u regsidecar; systemctl restart regsidecar",
        )
    # 401: auth is on, and the challenge tells docker where to log in; still our sidecar.
    if p.status not in (200, 401) or p.api_version != "registry/2.0":
        return Check(
            "sidecar",
            "fail",
            f"{p.url}/v2/ answers {p.status} without Docker-Distribution-API-Version: "
            "registry/2.0: something else holds the port",
            "find it (ss -ltnp) and stop it, or set listen to a free port",
        )
    detail = f"{p.url}/v2/: {p.status} registry/2.0"
    if p.status == 401:
        detail += " (auth on)"
    if p.ready_status == 503:
        return Check(
            "sidecar",
            "warn",
            f"{detail}; /readyz: not ready: {p.ready_detail}",
            "read the /readyz detail; the store check above usually names the cause",
        )
    if p.ready_status == 200:
        detail += "; /readyz: ready"
    return Check("sidecar", "pass", detail)


# -- peers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerProbe:
    """What peer fetch looks like from here: the members found, which is this host, and
    what each other member's peer listener answered (``"ok"`` or why not)."""

    members: int
    me: str | None
    listen: str
    provider_errors: dict[str, str]
    answers: dict[str, str]
    asked: int  # members pinged (the first of them)


def peers_verdict(p: PeerProbe) -> Check:
    """fail: no member found; warn: a provider failing, members not answering (or refusing
    the token), or this host serving none (no peer_listen, or not among the members);
    pass: every member asked answers.

    >>> peers_verdict(PeerProbe(3, "http://10.0.0.1:5001", "0.0.0.0:5001", {},
    ...     {"http://10.0.0.2:5001": "ok", "http://10.0.0.3:5001": "ok"}, 2)).status
    'pass'
    """
    if p.members == 0:
        errors = "; ".join(p.provider_errors.values()) or "the lists are empty"
        return Check(
            "peers",
            "fail",
            f"no members found ({errors})",
            "check peers.urls / peers.dns / peers.ec2_asg (and ec2:DescribeInstances, "
            "deploy/iam/peers-describe-instances.json)",
        )
    bad = {url: why for url, why in p.answers.items() if why != "ok"}
    ok = len(p.answers) - len(bad)
    detail = f"{p.members} members, {ok} of {p.asked} asked answer"
    if p.me:
        detail += f"; this host is {p.me}"
    problems: list[str] = []
    fixes: list[str] = []
    if p.provider_errors:
        problems.append("; ".join(p.provider_errors.values()))
        fixes.append("see the provider error")
    if bad:
        shown = ", ".join(f"{url}: {why}" for url, why in list(bad.items())[:3])
        problems.append(f"not answering: {shown}" + (" ..." if len(bad) > 3 else ""))
        if any("token" in why for why in bad.values()):
            fixes.append("give every host the same peers.token_file")
        fixes.append(
            "open TCP to the peer port between the fleet's hosts (a security group that "
            "allows itself) and run the sidecars with --peer-listen"
        )
    if not p.listen:
        problems.append("peer_listen is off: this host fetches from peers but serves none")
        fixes.append("set peer_listen (e.g. 0.0.0.0:5001) so the others can use this host")
    elif p.me is None:
        problems.append("this host is not among the members: nobody asks it")
        fixes.append("set peers.advertise to this host's peer URL as the others list it")
    if problems:
        return Check("peers", "warn", f"{detail}; " + "; ".join(problems), "; ".join(fixes))
    return Check("peers", "pass", detail)


# -- signature policy -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicyProbe:
    """The policy's rules and whether each key file loads (``errors``: file -> why not)."""

    rules: int
    signed_by: int  # rules that need signatures
    keys: int
    errors: tuple[tuple[str, str], ...] = ()  # (file, why it cannot be used, naming it)


def policy_verdict(p: PolicyProbe) -> Check:
    if p.rules == 0:
        return Check("policy", "pass", "no rules: every manifest in the store is served")
    if p.errors:
        bad = "; ".join(why for _, why in p.errors)
        return Check(
            "policy",
            "fail",
            f"{len(p.errors)} of {p.keys} key files cannot be used: {bad}",
            "give each signed-by rule PEM public keys (ECDSA P-256 or Ed25519, as cosign.pub); "
            "the sidecar will not start until then",
        )
    return Check(
        "policy",
        "pass",
        f"{p.rules} rules ({p.signed_by} signed-by), {p.keys} keys load; "
        "regsidecar verify IMAGE says why an image is served or refused",
    )


# -- containerd -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerdProbe:
    """containerd's socket and the hosts dir entry for this sidecar's name."""

    socket: str
    reachable: bool  # a connection to the socket was accepted
    hosts_file: str  # certs.d/<sidecar name>/hosts.toml
    configured: bool  # that file exists and names the sidecar
    error: str = ""


def containerd_verdict(p: ContainerdProbe | None) -> Check:
    if p is None:
        return Check("containerd", "pass", "no containerd socket here (docker hosts need none)")
    if not p.reachable:
        return Check(
            "containerd",
            "warn",
            f"{p.socket} does not accept connections: {p.error}",
            "start containerd (systemctl start containerd), or pass --containerd-socket",
        )
    if not p.configured:
        return Check(
            "containerd",
            "warn",
            f"{p.socket} answers, but {p.hosts_file} does not send pulls to this sidecar",
            "regsidecar install --containerd [--mirror REGISTRY...], then point the CRI's "
            "registry config_path at that directory (README: Kubernetes / containerd nodes)",
        )
    return Check("containerd", "pass", f"{p.socket} answers; {p.hosts_file} names this sidecar")
