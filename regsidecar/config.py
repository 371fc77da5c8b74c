"""One Settings object, read from defaults < YAML file < ``REGSIDECAR_*`` env < CLI flags.

Every option has a default, a YAML key and an environment variable; the variable is the dotted
key upper-cased with ``.`` as ``_``::

    listen: 127.0.0.1:5000                  REGSIDECAR_LISTEN
    data_dir: /var/lib/regsidecar           REGSIDECAR_DATA_DIR
    storage: s3://bucket/prefix             REGSIDECAR_STORAGE       (or a directory)
    s3:
      region: eu-west-1                     REGSIDECAR_S3_REGION
      endpoint_url: http://127.0.0.1:9000   REGSIDECAR_S3_ENDPOINT_URL
      path_style: true                      REGSIDECAR_S3_PATH_STYLE
    cache:
      max_bytes: 20GiB                      REGSIDECAR_CACHE_MAX_BYTES
      min_free_bytes: 2GiB                  REGSIDECAR_CACHE_MIN_FREE_BYTES
      tag_ttl_s: 30                         REGSIDECAR_CACHE_TAG_TTL_S
      stale_if_error_s: 86400               REGSIDECAR_CACHE_STALE_IF_ERROR_S
    retry:
      max_attempts: 6                       REGSIDECAR_RETRY_MAX_ATTEMPTS
      deadline_s: 30                        REGSIDECAR_RETRY_DEADLINE_S
    download:
      part_bytes: 16MiB                     REGSIDECAR_DOWNLOAD_PART_BYTES
      max_parts_per_blob: 16                REGSIDECAR_DOWNLOAD_MAX_PARTS_PER_BLOB
      connections_per_blob: 8               REGSIDECAR_DOWNLOAD_CONNECTIONS_PER_BLOB
      max_connections: 32                   REGSIDECAR_DOWNLOAD_MAX_CONNECTIONS
      stall_s: 5                            REGSIDECAR_DOWNLOAD_STALL_S
      parallel_after_s: 1.0                 REGSIDECAR_DOWNLOAD_PARALLEL_AFTER_S
    clock:
      correct: true                         REGSIDECAR_CLOCK_CORRECT
      max_offset_warn_s: 60                 REGSIDECAR_CLOCK_MAX_OFFSET_WARN_S
    auth:                                   (push needs a writer; off = read-only)
      htpasswd: /etc/regsidecar/htpasswd    REGSIDECAR_AUTH_HTPASSWD
      tokens: /etc/regsidecar/tokens        REGSIDECAR_AUTH_TOKENS
      writers: [ci]                         REGSIDECAR_AUTH_WRITERS   (comma-separated)
    peer_listen: 0.0.0.0:5001               REGSIDECAR_PEER_LISTEN    ("" = off)
    peers:                                  (any of urls / dns / ec2_* turns peer fetch on)
      urls: [http://10.0.1.5:5001]          REGSIDECAR_PEERS_URLS     (comma-separated)
      dns: peers.fleet.internal             REGSIDECAR_PEERS_DNS
      ec2_asg: web-fleet                    REGSIDECAR_PEERS_EC2_ASG
      token_file: /etc/regsidecar/peer-token  REGSIDECAR_PEERS_TOKEN_FILE
    push:
      delete: false                         REGSIDECAR_PUSH_DELETE
      protect:                              REGSIDECAR_PUSH_PROTECT   ("v*=immutable,...")
        - {tags: "v*", rule: immutable}
        - {tags: production, rule: promote-only}

Credentials are never part of it: boto3's chain (instance role, environment, profile) finds
them. An invalid value raises :class:`~regsidecar.errors.ConfigError` naming the dotted key.

>>> settings = load_settings(env={"REGSIDECAR_LISTEN": "127.0.0.1:5001"})
>>> settings.port
5001
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from regsidecar.errors import ConfigError
from regsidecar.retry import RetryPolicy
from regsidecar.signing.identity import RuleType

ENV_PREFIX = "REGSIDECAR_"

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}  # fmt: skip
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")


def parse_size(value: Any) -> int:
    """``20GiB``, ``500MB``, ``1048576`` -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 20GiB")
    if isinstance(value, int):
        return value
    m = _SIZE_RE.fullmatch(str(value))
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(f"expected a size such as 20GiB or 500MB, got {value!r}")
    return int(Decimal(m.group(1)) * _UNITS[m.group(2).lower()])


def format_size(n: float) -> str:
    """Bytes for people: ``512 B``, ``1.5 GiB`` (binary units, as :func:`parse_size` reads)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


ByteSize = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3Settings(_Model):
    """Where the bucket is; used when ``storage`` is an ``s3://`` URL."""

    region: str | None = None
    endpoint_url: str | None = None
    path_style: bool = False
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(30.0, gt=0)
    max_connections: int = Field(64, ge=1)

    @field_validator("endpoint_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"https?://[^/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v


class CacheSettings(_Model):
    max_bytes: ByteSize = 10 * 1024**3
    min_free_bytes: ByteSize = 1024**3
    low_watermark: float = Field(0.9, gt=0, le=1)
    tag_ttl_s: float = Field(30.0, ge=0)
    stale_if_error_s: float = Field(86400.0, ge=0)
    link_ttl_s: float = Field(300.0, ge=0)
    catalog_ttl_s: float = Field(30.0, ge=0)  # how long a /v2/_catalog listing is reused
    manifest_memory_bytes: ByteSize = 64 * 1024**2


class RetrySettings(_Model):
    """Retries of transient upstream trouble (5xx, SlowDown, timeouts, resets)."""

    max_attempts: int = Field(6, ge=1)
    base_delay_s: float = Field(0.1, ge=0)
    max_delay_s: float = Field(2.0, ge=0)
    deadline_s: float = Field(30.0, gt=0)  # per client request
    max_resumes: int = Field(10, ge=0)  # Range resumptions of one part of a blob download

    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.base_delay_s, self.max_delay_s, self.deadline_s)


class UpstreamSettings(_Model):
    """A fallback registry (a central registry or a peer sidecar), reached over the OCI API."""

    url: str
    username: str | None = None
    password: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"https?://[^/]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v.rstrip("/")


def _parse_upstreams(value: Any) -> Any:
    """``REGSIDECAR_UPSTREAMS=http://a:5000,https://user:pass@b`` -> a list of upstreams."""
    if not isinstance(value, str):
        return value
    out = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        m = re.match(r"(https?://)(?:([^:@/]+)(?::([^@/]*))?@)?(.+)", item)
        if m is None:
            out.append({"url": item})
            continue
        entry: dict[str, Any] = {"url": m.group(1) + m.group(4)}
        if m.group(2):
            entry["username"] = m.group(2)
            entry["password"] = m.group(3) or ""
        out.append(entry)
    return out


class BreakerSettings(_Model):
    """Circuit breakers: stop asking a source that keeps failing; probe it after a cool-down."""

    failures: int = Field(3, ge=1)
    cooldown_s: float = Field(30.0, gt=0)


class LimitSettings(_Model):
    """Bounds on upstream work, so a thundering herd gets 429s rather than a collapse."""

    max_upstream_downloads: int = Field(16, ge=1)  # blob downloads running at once
    max_queued_downloads: int = Field(256, ge=0)  # waiting for a slot; beyond it: 429
    # /v2/_catalog walks at most this many directories under repositories/ (beyond: 503),
    # listing at most catalog_concurrency of them at once.
    catalog_max_directories: int = Field(100_000, ge=1)
    catalog_concurrency: int = Field(8, ge=1, le=256)
    # A connection's request head must be complete this long after its first byte (nginx's
    # client_header_timeout); open connections, every listener together, at most
    # max_connections (0: the file-descriptor limit less 256), beyond which the longest wait
    # for a head is closed.
    header_timeout_s: float = Field(10.0, gt=0)
    max_connections: int = Field(0, ge=0)


class DownloadSettings(_Model):
    """How a cold blob is fetched from its source into the cache.

    A download starts as one GET of the whole blob. When that one connection would take more
    than ``parallel_after_s`` for the rest, the rest is fetched as ranged GETs of
    ``part_bytes`` (or the object's own multipart part size, when its ETag tells it; larger
    for a blob that would need more than ``max_parts_per_blob`` parts), in order, written at
    their offsets, at most ``connections_per_blob`` at once; all downloads of this host
    together hold at most ``max_connections`` to one source, a window that shrinks when more
    connections stop adding throughput or the source throttles."""

    part_bytes: ByteSize = 16 * 1024**2
    # Larger blobs get larger parts: no blob takes more GETs than this (a fleet's GETs of one
    # blob all land on one S3 prefix, ~5,500 GET/s); 0 = no bound.
    max_parts_per_blob: int = Field(16, ge=0)
    connections_per_blob: int = Field(8, ge=1, le=64)  # 1 = one connection per blob
    max_connections: int = Field(32, ge=1, le=1024)  # per source, every download together
    # A blob request that delivers nothing for this long is abandoned and its part resumed
    # on a new connection (AWS: retry slow requests rather than wait them out).
    stall_s: float = Field(5.0, gt=0)
    # More connections only for a blob whose first connection would need longer than this for
    # the rest: below it, parts save little time and multiply a fleet's GETs of that blob.
    parallel_after_s: float = Field(1.0, ge=0)  # 0 = ranged parts from the start
    align_to_multipart: bool = True  # parts follow the object's multipart part size

    @field_validator("part_bytes")
    @classmethod
    def _part(cls, v: int) -> int:
        if not 64 * 1024 <= v <= 5 * 1024**3:
            raise ValueError("parts are 64 KiB to 5 GiB")
        return v


def _parse_urls(value: Any) -> Any:
    """``REGSIDECAR_PEERS_URLS=http://10.0.1.5:5001,http://10.0.1.6:5001`` -> a list."""
    return _comma_list(value)


class PeerSettings(_Model):
    """Peer fetch: the sidecars of one fleet fetch each part of a blob from each other (a
    rendezvous-hashed tree per part) and only its tree's root fetches it from the store.

    Membership is the union of ``urls``, the addresses ``dns`` resolves to and, on EC2, the
    running instances of ``ec2_asg`` / ``ec2_filters`` (``ec2:DescribeInstances``), refreshed
    every ``refresh_s``. Peers are off while none of the three is set."""

    urls: Annotated[list[str], BeforeValidator(_parse_urls)] = []
    dns: str = ""  # a name with one A/AAAA record per host, e.g. a Route 53 multivalue name
    ec2_asg: str = ""  # an Auto Scaling group's name
    # Extra DescribeInstances filters, NAME=VALUE[|VALUE...], e.g. tag:fleet=web
    ec2_filters: Annotated[list[str], BeforeValidator(_comma_list)] = []
    ec2_region: str = ""  # "" = s3.region, then boto3's own lookup
    ec2_endpoint_url: str = ""  # a VPC endpoint (or a test server)
    port: int = Field(5001, gt=0, lt=65536)  # the peer port of hosts found by dns / EC2
    scheme: Literal["http", "https"] = "http"
    refresh_s: float = Field(30.0, gt=0)
    # This host's peer URL as the others list it; "" = the member whose address is local
    # and whose port is peer_listen's.
    advertise: str = ""
    zone: str = ""  # "" = the zone EC2 reports for this host, if any
    fanout: int = Field(2, ge=1, le=64)  # children per member in each part's tree
    tries: int = Field(2, ge=1, le=16)  # ancestors asked for a part before the store
    # A peer's answer that delivers nothing for this long is given up on (the part goes on
    # from the next ancestor, then the store). A parent is paced by its own upstream and
    # shares its uplink with its other children: longer keeps more parts off S3 under
    # congestion and costs more time when a peer hangs (measured at N=40: 15 s halved the
    # S3 bytes and added 17 s; benchmarks/README.md).
    stall_s: float = Field(5.0, gt=0)
    # ... but while this host's link is busy with other responses (the last stall_s brought
    # at least half of the most any stall_s did), a silent peer is starved by that traffic,
    # not stuck: it is waited for up to this long (regsidecar/pull/intake.py).
    patience_s: float = Field(30.0, gt=0)
    # Shared secret for the peer listener and for asking peers ("" = none).
    token: SecretStr | None = None
    token_file: str = ""
    max_uploads: int = Field(64, ge=1)  # peer responses served at once; beyond: 429
    max_upload_bytes_per_s: ByteSize = 0  # all peer responses together; 0 = unbounded
    quarantine_s: float = Field(600.0, gt=0)  # a peer that served wrong bytes is not asked
    # A host whose uplink is saturated answers a SYN late (TCP retries it after 1, 3, 7 s):
    # a short limit gives up on peers that are only busy and sends their parts to S3. On an
    # idle link stall_s gives up on a silent connect first.
    connect_timeout_s: float = Field(30.0, gt=0)

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        for url in v:
            if not re.match(r"https?://[^/]+$", url.rstrip("/")):
                raise ValueError(f"expected http(s)://HOST:PORT, got {url!r}")
        return [u.rstrip("/") for u in v]

    @field_validator("advertise")
    @classmethod
    def _advertise(cls, v: str) -> str:
        if v and not re.match(r"https?://[^/]+$", v.rstrip("/")):
            raise ValueError("expected http(s)://HOST:PORT")
        return v.rstrip("/")

    @field_validator("ec2_filters")
    @classmethod
    def _filters(cls, v: list[str]) -> list[str]:
        for item in v:
            name, sep, values = item.partition("=")
            if not sep or not name or not values:
                raise ValueError(f"expected NAME=VALUE[|VALUE...], got {item!r}")
        return v

    @property
    def enabled(self) -> bool:
        return bool(self.urls or self.dns or self.ec2_asg or self.ec2_filters)


class ClockSettings(_Model):
    """Clock-skew handling for S3 signing."""

    correct: bool = True  # sign with the S3-corrected clock
    max_offset_warn_s: float = Field(60.0, ge=0)


class LogSettings(_Model):
    level: Literal["debug", "info", "warning", "error"] = "info"
    access: bool = True


def _comma_list(value: Any) -> Any:
    """``REGSIDECAR_AUTH_WRITERS=ci,release`` -> ``["ci", "release"]``."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class AuthSettings(_Model):
    """Who may do what. With neither file set the sidecar is read-only for everyone; with
    one, anonymous clients may still pull (``anonymous_pull``) and only writers may push."""

    htpasswd: str = ""  # htpasswd file, bcrypt entries only (htpasswd -B)
    tokens: str = ""  # static bearer tokens for CI: NAME:TOKEN lines
    # Names (htpasswd users, token names) allowed to push and delete; [] = every name.
    writers: Annotated[list[str], BeforeValidator(_comma_list)] = []
    anonymous_pull: bool = True
    token_ttl_s: float = Field(300.0, gt=0, le=86400)
    # The token endpoint's URL as clients reach it; "" = derived from each request's Host.
    realm: str = ""
    service: str = "regsidecar"

    @property
    def enabled(self) -> bool:
        return bool(self.htpasswd or self.tokens)


class TagRule(_Model):
    """Tags matching ``tags`` (a glob) in repositories matching ``repositories`` follow
    ``rule``: ``immutable`` (never moves once written) or ``promote-only`` (moves only by
    ``regsidecar promote``, never by a manifest push)."""

    tags: str
    rule: Literal["immutable", "promote-only"]
    repositories: str = "*"


def _parse_rules(value: Any) -> Any:
    """``REGSIDECAR_PUSH_PROTECT=v*=immutable,production=promote-only`` -> rules."""
    if not isinstance(value, str):
        return value
    out = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        tags, _, rule = item.rpartition("=")
        out.append({"tags": tags, "rule": rule})
    return out


class SignedIdentitySettings(_Model):
    """containers-policy.json's ``signedIdentity``: which image name a signature must claim."""

    type: RuleType = "matchRepoDigestOrExact"
    reference: str = ""
    repository: str = ""
    prefix: str = ""
    signed_prefix: str = ""


class PolicyRuleSettings(_Model):
    """Repositories matching ``repositories`` (a glob) are served as ``rule`` says: accept,
    reject, or signed-by (a signature by one of ``keys``, PEM public key files)."""

    repositories: str
    rule: Literal["accept", "reject", "signed-by"]
    keys: list[str] = []
    signed_identity: SignedIdentitySettings = SignedIdentitySettings()

    @model_validator(mode="after")
    def _keys(self) -> PolicyRuleSettings:
        if self.rule == "signed-by" and not self.keys:
            raise ValueError(f"{self.repositories}: signed-by needs at least one key file")
        return self


def _parse_policy(value: Any) -> Any:
    """``REGSIDECAR_POLICY_RULES=prod/*=signed-by:/k/ci.pub+/k/ci2.pub,*=accept`` -> rules."""
    if not isinstance(value, str):
        return value
    out = []
    for item in filter(None, (v.strip() for v in value.split(","))):
        repositories, _, spec = item.rpartition("=")
        rule, _, keys = spec.partition(":")
        out.append(
            {"repositories": repositories, "rule": rule, "keys": [k for k in keys.split("+") if k]}
        )
    return out


class PolicySettings(_Model):
    """Which manifests this host serves (regsidecar/signing). No rules: everything (today's
    behaviour). ``registry``: the host[:port] clients pull by, the image names signatures are
    checked against ("" = localhost and the pull listener's port)."""

    registry: str = ""
    rules: Annotated[list[PolicyRuleSettings], BeforeValidator(_parse_policy)] = []


class PushSettings(_Model):
    """Writing the store (needs ``auth``)."""

    delete: bool = False  # DELETE of manifests, tags and blobs
    protect: Annotated[list[TagRule], BeforeValidator(_parse_rules)] = []
    # Blobs at least this big go to S3 as a multipart upload, in parts of part_bytes.
    multipart_threshold_bytes: ByteSize = 64 * 1024**2
    part_bytes: ByteSize = 16 * 1024**2
    # Upload sessions untouched for this long are removed.
    upload_ttl_s: float = Field(86400.0, gt=0)
    # Per writer identity: upload sessions open at once, and bytes staged in them together
    # (beyond either: 429 TOOMANYREQUESTS).
    max_open_uploads: int = Field(64, ge=1)
    max_staged_bytes: ByteSize = 10 * 1024**3

    @field_validator("part_bytes")
    @classmethod
    def _part(cls, v: int) -> int:
        if not 5 * 1024**2 <= v <= 5 * 1024**3:
            raise ValueError("S3 parts are 5 MiB to 5 GiB")
        return v


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "regsidecar")


class Settings(_Model):
    """Everything the sidecar reads at start-up."""

    listen: str = "127.0.0.1:5000"
    # /healthz, /readyz, /metrics and /-/cache/* on their own HOST:PORT; "" = on `listen`.
    ops_listen: str = ""
    data_dir: str = Field(default_factory=default_data_dir)
    storage: str = ""  # s3://bucket[/prefix] or a directory; "" = <data_dir>/registry
    s3: S3Settings = S3Settings()
    cache: CacheSettings = CacheSettings()
    clock: ClockSettings = ClockSettings()
    retry: RetrySettings = RetrySettings()
    limits: LimitSettings = LimitSettings()
    download: DownloadSettings = DownloadSettings()
    upstreams: Annotated[list[UpstreamSettings], BeforeValidator(_parse_upstreams)] = []
    breaker: BreakerSettings = BreakerSettings()
    log: LogSettings = LogSettings()
    auth: AuthSettings = AuthSettings()
    push: PushSettings = PushSettings()
    policy: PolicySettings = PolicySettings()
    # Where other sidecars fetch blobs by digest (HOST:PORT, e.g. 0.0.0.0:5001); "" = off.
    peer_listen: str = ""
    peers: PeerSettings = PeerSettings()

    @field_validator("listen", "ops_listen", "peer_listen")
    @classmethod
    def _listen(cls, v: str, info: ValidationInfo) -> str:
        if info.field_name in ("ops_listen", "peer_listen") and v == "":
            return v
        host, sep, port = v.rpartition(":")
        if (
            not sep
            or not host
            or not re.fullmatch(r"[0-9]{1,5}", port)
            or not 0 < int(port) < 65536
        ):
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:5000")
        return v

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str) -> str:
        if v.startswith("s3://"):
            bucket = v[5:].split("/", 1)[0]
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
                raise ValueError(f"invalid S3 bucket name {bucket!r}")
        elif "://" in v:
            raise ValueError("expected s3://BUCKET[/PREFIX] or a directory path")
        return v

    @field_validator("upstreams")
    @classmethod
    def _fallbacks_need_a_cache(
        cls, v: list[UpstreamSettings], info: ValidationInfo
    ) -> list[UpstreamSettings]:
        if v and not str(info.data.get("storage", "")).startswith("s3://"):
            # A directory store is local: there is nothing to fall back from, and no cache to
            # hold what a fallback would serve.
            raise ValueError("fallback upstreams are used with an s3:// store only")
        return v

    @field_validator("peers")
    @classmethod
    def _peers_need_a_cache(cls, v: PeerSettings, info: ValidationInfo) -> PeerSettings:
        if v.enabled and not str(info.data.get("storage", "")).startswith("s3://"):
            raise ValueError("peer fetch is used with an s3:// store only (it shares the cache)")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def ops_address(self) -> tuple[str, int]:
        """Where the operator endpoints listen (the pull listener unless ops_listen is set)."""
        address = self.ops_listen or self.listen
        return address.rpartition(":")[0].strip("[]"), int(address.rpartition(":")[2])

    @property
    def peer_address(self) -> tuple[str, int] | None:
        """Where the peer listener listens, or None when it is off."""
        if not self.peer_listen:
            return None
        host, _, port = self.peer_listen.rpartition(":")
        return host.strip("[]"), int(port)

    @property
    def storage_kind(self) -> Literal["s3", "filesystem"]:
        return "s3" if self.storage.startswith("s3://") else "filesystem"

    @property
    def s3_bucket(self) -> str:
        return self.storage[5:].split("/", 1)[0]

    @property
    def s3_prefix(self) -> str:
        parts = self.storage[5:].split("/", 1)
        return parts[1].strip("/") if len(parts) > 1 else ""

    @property
    def filesystem_root(self) -> str:
        return self.storage or os.path.join(self.data_dir, "registry")

    @property
    def cache_dir(self) -> str:
        return os.path.join(self.data_dir, "cache")

    @property
    def uploads_dir(self) -> str:
        """Where blob upload sessions are staged until their digest is checked."""
        return os.path.join(self.data_dir, "uploads")


def _leaves(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaves(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


OPTION_KEYS: tuple[str, ...] = tuple(_leaves(Settings))


def env_name(key: str) -> str:
    return ENV_PREFIX + key.replace(".", "_").upper()


def _set(tree: dict[str, Any], key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        node = tree.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(p, "expected a mapping")
        tree = node
    tree[leaf] = value


def load_settings(
    config_file: str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Merge the layers and validate; ``overrides`` are dotted keys (from CLI flags)."""
    env = os.environ if env is None else env
    tree: dict[str, Any] = {}
    if config_file:
        try:
            with open(config_file, encoding="utf-8") as f:
                loaded = yaml.safe_load(f)
        except OSError as exc:
            raise ConfigError("--config", f"cannot read {config_file}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            detail = " ".join(str(exc).split())
            raise ConfigError("--config", f"{config_file} is not valid YAML: {detail}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("--config", f"{config_file} must hold a mapping")
        tree = loaded
    for key in OPTION_KEYS:
        value = env.get(env_name(key))
        if value:  # an empty variable (e.g. from an EnvironmentFile template) means unset
            _set(tree, key, value)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(tree, key, value)
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        # Upstream entries may carry passwords: never echo them.
        shown = "..." if key.startswith("upstreams") else _show(err.get("input"))
        if shown not in msg:
            msg = f"{msg} (got {shown})"
        raise ConfigError(key, msg) from exc


def read_config_text(key: str, path: str) -> str:
    """The text of a file a setting names (an htpasswd or tokens file); ConfigError naming
    the setting when it cannot be read."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(key, f"{path} is not UTF-8 text") from exc


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
