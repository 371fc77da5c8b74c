"""``regsidecar doctor``: can this host pull through its sidecar, and if not, what to fix.

Checks, in order (one :class:`Check` each, docker's split in four when the daemon answers)::

    config             the settings load (flags < env < --config file)
    store              S3: ListBucket of repositories/, GetObject of one tag's current/link
                       (a directory store: readable, holding repositories)
    clock              S3 time - local time, from S3's Date header (S3 stores only)
    cache              DATA_DIR/cache writable; the disk holds cache.max_bytes + min_free_bytes
    sidecar            GET /v2/ (and /readyz, if served) on the listen address
    peers              (peer fetch on) the members found; each other one's /peer/v1/ answers
    docker             the daemon answers (docker SDK; DOCKER_HOST or --docker-host)
    docker-data-root   free space where the daemon keeps images
    docker-log-driver  container logs bounded (not json-file without max-size)
    docker-registry    the daemon treats localhost:PORT as a plain-HTTP registry

Exit code: the worst status. 0 every row passes, 1 the worst is a warning, 2 a row failed.

Modules::

    verdicts         pure: Check, and the config/store/clock/cache/sidecar verdicts
    docker_verdicts  pure: the four docker rows and their thresholds
    probes           I/O: S3 or the directory store, the cache dir, sidecar HTTP, docker SDK
    report           run_checks (probes at once, each bounded), table, JSON, exit code

Facts are measured at the edge (probes); verdicts are pure functions of those facts, so
thresholds and wording are unit-tested without a network. A doctor must never hang: every
network call has a timeout of a few seconds and each check has an overall bound.

>>> worst([Check("cache", "pass", "ok"), Check("clock", "warn", "off", "enable NTP")])
'warn'
"""

from regsidecar.doctor.report import exit_code, render_json, render_table, run_checks, worst
from regsidecar.doctor.verdicts import Check, Status, config_failed

__all__ = [
    "Check",
    "Status",
    "config_failed",
    "exit_code",
    "render_json",
    "render_table",
    "run_checks",
    "worst",
]
