"""Circuit breaker states with an injected clock, and fallback-upstream settings."""

from __future__ import annotations

import pytest

from regsidecar.config import load_settings
from regsidecar.errors import ConfigError
from regsidecar.upstream import CircuitBreaker


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=3, cooldown_s=30, now=clock)
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert b.state == "closed"
    b.failure()
    assert b.state == "open"
    assert not b.allow(), "an open circuit does not hammer a dead source"
    clock.t = 29.9
    assert not b.allow()
    clock.t = 30.0
    assert b.state == "half-open"
    assert b.allow(), "one probe after the cool-down"
    assert not b.allow(), "only one probe at a time"
    b.success()
    assert b.state == "closed"
    assert b.allow()


def test_a_failed_probe_opens_the_circuit_again() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=1, cooldown_s=10, now=clock)
    b.failure()
    clock.t = 10
    assert b.allow()
    b.failure()
    assert b.state == "open"
    clock.t = 19.9
    assert not b.allow()


def test_a_success_resets_the_failure_streak() -> None:
    b = CircuitBreaker(failures=2, cooldown_s=10, now=Clock())
    b.failure()
    b.success()
    b.failure()
    assert b.state == "closed"


def test_upstreams_from_the_environment_with_credentials_kept_secret() -> None:
    s = load_settings(
        env={
            "REGSIDECAR_STORAGE": "s3://bkt",
            "REGSIDECAR_UPSTREAMS": "http://10.0.0.5:5000, https://ci:s3kr1t@central:443",
        }
    )
    assert [u.url for u in s.upstreams] == ["http://10.0.0.5:5000", "https://central:443"]
    assert s.upstreams[1].username == "ci"
    assert s.upstreams[1].password is not None
    assert s.upstreams[1].password.get_secret_value() == "s3kr1t"
    assert "s3kr1t" not in repr(s)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"REGSIDECAR_UPSTREAMS": "http://central:5000"}, "upstreams"),  # directory store
        ({"REGSIDECAR_STORAGE": "s3://bkt", "REGSIDECAR_UPSTREAMS": "ftp://x"}, "upstreams.0.url"),
    ],
)
def test_bad_upstreams_name_the_key_and_never_echo_secrets(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(
            env={
                **env,
                "REGSIDECAR_UPSTREAMS": env["REGSIDECAR_UPSTREAMS"].replace("://", "://u:hunter2@"),
            }
        )
    assert err.value.key == key
    assert "hunter2" not in str(err.value)
