"""Peer membership from each provider: a static list, DNS (the system resolver, on a name
/etc/hosts answers), EC2 (moto's EC2 and Auto Scaling APIs). The EC2 members' private
addresses are only listed here, never contacted."""

from __future__ import annotations

import boto3
import pytest

from regsidecar.config import load_settings
from regsidecar.peers.fleet import membership, peer_token, providers
from regsidecar.peers.membership import (
    DnsMembers,
    Ec2Members,
    Membership,
    MembershipError,
    StaticMembers,
    ec2_filters,
    find_self,
    member_url,
)
from regsidecar.peers.ring import Member
from tests.rig.moto import MotoServer

pytestmark = pytest.mark.rig


def _ec2(moto: MotoServer) -> tuple[object, object]:
    kw = {
        "endpoint_url": moto.endpoint_url,
        "region_name": "us-east-1",
        "aws_access_key_id": "rigtestaccesskey",
        "aws_secret_access_key": "rigtestsecretkey",
    }
    return boto3.client("ec2", **kw), boto3.client("autoscaling", **kw)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rigtestaccesskey")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "rigtestsecretkey")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


async def test_ec2_members_are_the_running_instances_of_the_group_with_their_zones(
    moto: MotoServer, aws_env: None
) -> None:
    ec2, asg = _ec2(moto)
    image = "ami-12c6146b"
    asg.create_launch_configuration(  # type: ignore[attr-defined]
        LaunchConfigurationName="lc", ImageId=image, InstanceType="t3.micro"
    )
    asg.create_auto_scaling_group(  # type: ignore[attr-defined]
        AutoScalingGroupName="web",
        LaunchConfigurationName="lc",
        MinSize=3,
        MaxSize=3,
        DesiredCapacity=3,
        AvailabilityZones=["us-east-1a"],
    )
    other = ec2.run_instances(  # type: ignore[attr-defined]
        ImageId=image,
        MinCount=2,
        MaxCount=2,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "fleet", "Value": "api"}]}
        ],
    )["Instances"]
    provider = Ec2Members(asg="web", port=5001, region="us-east-1", endpoint_url=moto.endpoint_url)
    web = await provider.members()
    assert len(web) == 3
    assert all(m.url.startswith("http://10.") and m.url.endswith(":5001") for m in web)
    assert {m.zone for m in web} == {"us-east-1a"}
    tagged = await Ec2Members(
        filters=["tag:fleet=api|batch"], region="us-east-1", endpoint_url=moto.endpoint_url
    ).members()
    assert sorted(m.url for m in tagged) == sorted(
        member_url("http", i["PrivateIpAddress"], 5001) for i in other
    )
    # A stopped instance leaves the membership.
    ec2.stop_instances(InstanceIds=[other[0]["InstanceId"]])  # type: ignore[attr-defined]
    left = await Ec2Members(
        filters=["tag:fleet=api"], region="us-east-1", endpoint_url=moto.endpoint_url
    ).members()
    assert [m.url for m in left] == [member_url("http", other[1]["PrivateIpAddress"], 5001)]


async def test_settings_build_the_ec2_provider_and_a_failing_one_keeps_the_last_answer(
    moto: MotoServer, aws_env: None, tmp_path: object
) -> None:
    settings = load_settings(
        env={
            "REGSIDECAR_STORAGE": "s3://bucket",
            "REGSIDECAR_PEERS_EC2_ASG": "none-yet",
            "REGSIDECAR_PEERS_EC2_ENDPOINT_URL": moto.endpoint_url,
            "REGSIDECAR_PEERS_EC2_REGION": "us-east-1",
            "REGSIDECAR_PEERS_URLS": "http://127.0.0.1:5999",
        }
    )
    assert [p.name for p in providers(settings)] == ["static", "ec2"]
    m = membership(settings)
    assert [x.url for x in await m.refresh()] == ["http://127.0.0.1:5999"]
    assert m.errors == {}
    # The EC2 endpoint goes away: its last answer (none) and the static list stay.
    m.providers[1] = Ec2Members(asg="x", region="us-east-1", endpoint_url="http://127.0.0.1:1")
    assert [x.url for x in await m.refresh()] == ["http://127.0.0.1:5999"]
    assert "ec2" in m.errors


async def test_dns_members_are_every_address_the_name_resolves_to() -> None:
    """The system resolver (``localhost`` is in /etc/hosts: no query leaves the host; a
    name that needs a DNS server is not asked here)."""
    found = await DnsMembers("localhost", 5001).members()
    assert "http://127.0.0.1:5001" in [m.url for m in found]
    assert all(m.url in ("http://127.0.0.1:5001", "http://[::1]:5001") for m in found)


async def test_membership_merges_providers_and_finds_itself_by_local_address() -> None:
    class Failing:
        name = "dns"

        async def members(self) -> list[Member]:
            raise MembershipError("dns peers.example: lookup failed")

    m = Membership(
        [StaticMembers(["http://127.0.0.1:5101", "http://127.0.0.1:5102"]), Failing()],
        listen=("0.0.0.0", 5102),
    )
    found = await m.refresh()
    assert [x.url for x in found] == ["http://127.0.0.1:5101", "http://127.0.0.1:5102"]
    assert m.me == Member("http://127.0.0.1:5102")
    assert [x.url for x in m.others()] == ["http://127.0.0.1:5101"]
    assert m.status()["errors"] == {"dns": "dns peers.example: lookup failed"}


def test_find_self_wants_the_port_and_a_local_address() -> None:
    members = [Member("http://192.0.2.10:5001"), Member("http://127.0.0.1:5001")]
    assert find_self(members, ("0.0.0.0", 5001)) == members[1]
    assert find_self(members, ("0.0.0.0", 5002)) is None
    assert find_self(members, ("127.0.0.2", 5001)) is None  # listens elsewhere
    assert find_self(members, None) is None
    assert find_self(members, ("0.0.0.0", 5001), local=lambda h: h == "192.0.2.10") == members[0]


def test_filters_and_urls() -> None:
    assert ec2_filters("", []) == [{"Name": "instance-state-name", "Values": ["running"]}]
    assert member_url("https", "fd00::1", 5001) == "https://[fd00::1]:5001"


def test_the_token_comes_from_the_setting_or_its_file(tmp_path: object) -> None:
    from pathlib import Path

    from regsidecar.errors import ConfigError

    path = Path(str(tmp_path)) / "token"
    path.write_text("abc\n")
    base = {"REGSIDECAR_STORAGE": "s3://bucket", "REGSIDECAR_PEERS_URLS": "http://127.0.0.1:1"}
    assert (
        peer_token(load_settings(env={**base, "REGSIDECAR_PEERS_TOKEN_FILE": str(path)})) == "abc"
    )
    assert peer_token(load_settings(env={**base, "REGSIDECAR_PEERS_TOKEN": "xyz"})) == "xyz"
    assert peer_token(load_settings(env=base)) is None
    path.write_text("\n")
    with pytest.raises(ConfigError, match=r"peers\.token_file"):
        peer_token(load_settings(env={**base, "REGSIDECAR_PEERS_TOKEN_FILE": str(path)}))
    with pytest.raises(ConfigError, match="peers"):
        load_settings(env={"REGSIDECAR_PEERS_URLS": "http://127.0.0.1:1"})  # a directory store
    with pytest.raises(ConfigError, match=r"peers\.urls"):
        load_settings(env={**base, "REGSIDECAR_PEERS_URLS": "ftp://x"})
