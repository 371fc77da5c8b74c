"""Stock registry:2 (Debian's ``docker-registry``, distribution 2.8.2) on loopback."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .ports import LOOPBACK, free_port
from .proc import ServerProcess, child_env, which

if TYPE_CHECKING:
    from .moto import MotoServer


class Distribution(ServerProcess):
    """``docker-registry serve CONFIG`` on 127.0.0.1:PORT (context manager).

    Exactly one storage backend:
      * ``root_dir=`` : filesystem driver, rootdirectory = that dir;
      * ``s3_endpoint=`` + ``bucket=`` (or ``moto=`` + ``bucket=``): s3 driver,
        path style, plain http, v4 auth, us-east-1, redirects disabled,
        optional ``s3_rootdirectory``.
    The child env has AWS_CA_BUNDLE removed (aws-sdk-go panics on it).
    ``extra_config`` is deep-merged into the generated YAML/JSON config.
    """

    log_label = "registry"

    def __init__(
        self,
        *,
        root_dir: str | Path | None = None,
        moto: MotoServer | None = None,
        s3_endpoint: str | None = None,
        bucket: str | None = None,
        s3_rootdirectory: str | None = None,
        port: int | None = None,
        delete_enabled: bool = True,
        log_level: str = "info",
        extra_config: dict[str, Any] | None = None,
        workdir: Path | None = None,
    ) -> None:
        if moto is not None:
            s3_endpoint = moto.endpoint_url
        if (root_dir is None) == (s3_endpoint is None):
            raise ValueError("give exactly one of root_dir= or (moto=|s3_endpoint=) + bucket=")
        if s3_endpoint is not None and not bucket:
            raise ValueError("the s3 driver needs bucket=")
        self.port = port or free_port()
        self.root_dir = Path(root_dir).resolve() if root_dir is not None else None
        self.s3_endpoint = s3_endpoint
        self.bucket = bucket
        self.s3_rootdirectory = s3_rootdirectory
        super().__init__(workdir, prefix="rig-registry-", log_name="registry.log")
        self.config_path = self.workdir / "config.yml"
        self.config: dict[str, Any] = self._config(delete_enabled, log_level)
        if extra_config:
            _deep_merge(self.config, extra_config)

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` (what goes in image references)."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _config(self, delete_enabled: bool, log_level: str) -> dict[str, Any]:
        storage: dict[str, Any]
        if self.root_dir is not None:
            storage = {"filesystem": {"rootdirectory": str(self.root_dir)}}
        else:
            from .moto import ACCESS_KEY, REGION, SECRET_KEY

            s3: dict[str, Any] = {
                "accesskey": ACCESS_KEY,
                "secretkey": SECRET_KEY,
                "region": REGION,
                "regionendpoint": self.s3_endpoint,
                "bucket": self.bucket,
                "forcepathstyle": True,
                "secure": False,
                "v4auth": True,
                "encrypt": False,
            }
            if self.s3_rootdirectory:
                s3["rootdirectory"] = self.s3_rootdirectory
            storage = {"s3": s3}
        storage["delete"] = {"enabled": delete_enabled}
        storage["redirect"] = {"disable": True}
        storage["maintenance"] = {"uploadpurging": {"enabled": False}}
        return {
            "version": 0.1,
            "log": {"level": log_level, "formatter": "text", "accesslog": {"disabled": False}},
            "storage": storage,
            "http": {
                "addr": f"{LOOPBACK}:{self.port}",
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            # no storagedriver health check: it would add periodic S3 requests
            "health": {"storagedriver": {"enabled": False}},
        }

    def start(self, deadline_s: float = 30.0) -> Distribution:
        if self.root_dir is not None:
            self.root_dir.mkdir(parents=True, exist_ok=True)
        # JSON is valid YAML, so no YAML library is needed.
        self.config_path.write_text(json.dumps(self.config, indent=2))
        argv = [which("docker-registry"), "serve", str(self.config_path)]
        env = child_env(unset=["AWS_CA_BUNDLE"])
        # With auth configured, /v2/ answers 401 once it is up.
        ok = {200, 401} if "auth" in self.config else {200}
        self._start(argv, self.url + "/v2/", ok=ok, env=env, deadline_s=deadline_s)
        return self


def _deep_merge(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = v


# -- registry:2 storage layout (keys in the bucket / paths under rootdirectory) ------
V2_PREFIX = "docker/registry/v2"


def _join(root: str, rel: str) -> str:
    root = root.strip("/")
    return f"{root}/{rel}" if root else rel


def _hex(digest: str) -> str:
    algo, _, hexd = digest.partition(":")
    if algo != "sha256" or len(hexd) != 64:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexd


def blob_data_key(digest: str, root: str = "") -> str:
    """``[root/]docker/registry/v2/blobs/sha256/xx/<hex>/data``."""
    h = _hex(digest)
    return _join(root, f"{V2_PREFIX}/blobs/sha256/{h[:2]}/{h}/data")


def tag_current_link_key(repo: str, tag: str, root: str = "") -> str:
    """``.../repositories/<repo>/_manifests/tags/<tag>/current/link``."""
    return _join(root, f"{V2_PREFIX}/repositories/{repo}/_manifests/tags/{tag}/current/link")


def tag_index_link_key(repo: str, tag: str, digest: str, root: str = "") -> str:
    """``.../_manifests/tags/<tag>/index/sha256/<hex>/link``."""
    return _join(
        root,
        f"{V2_PREFIX}/repositories/{repo}/_manifests/tags/{tag}/index/sha256/{_hex(digest)}/link",
    )


def revision_link_key(repo: str, digest: str, root: str = "") -> str:
    """``.../repositories/<repo>/_manifests/revisions/sha256/<hex>/link``."""
    return _join(
        root, f"{V2_PREFIX}/repositories/{repo}/_manifests/revisions/sha256/{_hex(digest)}/link"
    )


def layer_link_key(repo: str, digest: str, root: str = "") -> str:
    """``.../repositories/<repo>/_layers/sha256/<hex>/link`` (layers *and* configs)."""
    return _join(root, f"{V2_PREFIX}/repositories/{repo}/_layers/sha256/{_hex(digest)}/link")
