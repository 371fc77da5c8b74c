"""A test rig of real components, all on loopback.

* ``ports``    -- free_port, wait_tcp, wait_http (bounded polling)
* ``proc``     -- start/stop by PID, run-and-check, private mount namespaces
* ``moto``     -- MotoServer: real S3 API (moto_server subprocess) + request counter;
                  ``auth=True`` checks signatures of an IAM user's key (never the time)
* ``s3rver``   -- S3rver: s3rver 3.7.1 (node), which refuses requests signed >15 min off
                  (RequestTimeTooSkewed); seed it with upload_tree
* ``registry`` -- Distribution: stock registry:2 (docker-registry 2.8.2), fs or s3 driver;
                  registry:2 bucket-layout key helpers
* ``images``   -- build_oci_layout: deterministic OCI layouts in pure Python
* ``skopeo``   -- push / copy_to_dir / inspect_raw with private state
* ``dockerd``  -- Dockerd: a private docker daemon (vfs) with pull/image_inspect/rmi
* ``podman``   -- Podman / pull with a private vfs store
* ``faultproxy`` -- FaultProxy: reverse proxy before moto; 5xx, resets, stalls, down/up; request log
* ``containers`` -- tiny offline docker images (a static binary that sleeps or exits), loaded
                  with ``docker load``, for prune tests

Install what it needs with ``tests/rig/install-deps.sh`` (Debian 12, root).
"""

from .images import OCIImage, build_oci_layout
from .moto import MotoServer, S3Request
from .ports import free_port, wait_http, wait_tcp
from .proc import CommandFailed, MissingBinary, missing
from .registry import Distribution

__all__ = [
    "CommandFailed",
    "Distribution",
    "MissingBinary",
    "MotoServer",
    "OCIImage",
    "S3Request",
    "build_oci_layout",
    "free_port",
    "missing",
    "wait_http",
    "wait_tcp",
]
