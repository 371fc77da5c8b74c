"""The capped S3 stand-in of the sweep: the tree the seed writes (distribution's filesystem
layout, the same image as the moto seed), nginx's access log read back as S3 request counts,
and CappedS3's config when it listens inside a namespace."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks.scaleup.capped import as_s3_requests, nginx_rate, pace_ms_for
from benchmarks.scaleup.seed import make_layers, seed_store, write_image
from benchmarks.scaleup.servers import backend_counts
from regsidecar.storage import layout
from tests.rig.cappedlog import in_progress, parse_log
from tests.rig.cappeds3 import CappedS3

IMAGE = "bench/app:v1"
REPO, TAG = "bench/app", "v1"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


class Recorder:
    """Stands in for boto3's client: what the moto seed would PUT."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, *, Bucket: str, Key: str, Body: bytes) -> None:
        self.objects[Key] = Body


def test_seeded_tree_is_distributions_layout_of_the_image(tmp_path: Path) -> None:
    """Blob data for 2 layers, the config and the manifest; a _layers link for each layer and
    the config; the manifest's revision link; the tag's current and index links; each link
    holding its digest."""
    seeded = seed_store(tmp_path, IMAGE, 3000, 2)
    layers = make_layers(3000, 2)
    assert [entry["digest"] for entry in seeded["layers"]] == [sha(b) for b in layers]
    assert seeded["image_bytes"] == 3000
    tree = files_under(tmp_path)
    manifest = seeded["manifest"]
    config = next(
        d
        for d in (k.split("/")[-2] for k in tree if "/blobs/" in k)
        if f"sha256:{d}" not in {manifest, *(sha(b) for b in layers)}
    )
    blobs = [*(sha(b) for b in layers), f"sha256:{config}", manifest]
    links = {
        **{layout.layer_link(REPO, d): d for d in blobs[:3]},
        layout.revision_link(REPO, manifest): manifest,
        layout.tag_current_link(REPO, TAG): manifest,
        layout.tag_index_link(REPO, TAG, manifest): manifest,
    }
    assert sorted(tree) == sorted([*(layout.blob_data(d) for d in blobs), *links])
    for key, digest in links.items():
        assert tree[key] == digest.encode()
    for d in blobs:
        assert sha(tree[layout.blob_data(d)]) == d
    assert tree[layout.blob_data(blobs[0])] == layers[0]


def test_the_store_seed_and_the_moto_seed_write_the_same_objects(tmp_path: Path) -> None:
    """Same flags, same keys and bytes, whether PUT to moto or written into the tree."""
    recorder = Recorder()
    via_s3 = write_image(recorder, "scaleup", IMAGE, 5000, 3)
    via_store = seed_store(tmp_path, IMAGE, 5000, 3)
    assert via_s3 == via_store
    assert files_under(tmp_path) == recorder.objects


NGINX_LOG = (
    # msec conn method uri args status bytes range time completion
    b"1700000000.100\t1\tHEAD\t/scaleup/\t-\t200\t0\t-\t0.001\tOK\n"
    b"1700000000.200\t2\tGET\t/scaleup\tlist-type=2&prefix=a%2Fb\t200\t310\t-\t0.002\tOK\n"
    b"1700000000.300\t3\tGET\t/scaleup/docker/registry/v2/blobs/sha256/ab/abc/data\t-\t200\t"
    b"1048576\t-\t8.4\t\n"  # the first plain GET, cut short once the parts took over
    b"1700000001.000\t4\tGET\t/scaleup/docker/registry/v2/blobs/sha256/ab/abc/data\t-\t206\t"
    b"1048576\tbytes=1048576-2097151\t8.4\tOK\n"
    b"1700000001.000\t4\tGET\t/scaleup/docker/registry/v2/blobs/sha256/ab/abc/data\t-\t206\t"
    b"1048576\tbytes=2097152-3145727\t8.4\tOK\n"
    b"1700000001.100\t5\tGET\t/__rig/ready\t-\t200\t6\t-\t0.001\tOK\n"  # the rig's own
    b"1700000001.200\t6\tGET\t/scaleup/x\\x22y/link\t-\t404\t120\t-\t0.001\tOK\n"
    b"1700000001.300\t7\tGET\t/scaleup/partial"  # a line still being written
)


def test_access_log_becomes_s3_requests_with_ranges_and_connections() -> None:
    found = parse_log(NGINX_LOG, "scaleup")
    assert [(r.method, r.status, r.range, r.completed) for r in found] == [
        ("HEAD", 200, None, True),
        ("GET", 200, None, True),
        ("GET", 200, None, False),
        ("GET", 206, "bytes=1048576-2097151", True),
        ("GET", 206, "bytes=2097152-3145727", True),
        ("GET", 404, None, True),
    ]
    assert found[1].params == {"list-type": "2", "prefix": "a/b"}
    assert found[5].key == 'x"y/link'
    reqs = as_s3_requests(found)
    assert reqs[1].path == "/scaleup?list-type=2&prefix=a%2Fb"
    assert backend_counts(reqs, detailed=True) == {
        "s3_get": 5,
        "s3_blob_get": 3,
        "s3_head": 1,
        "s3_requests": 6,
        "s3_range_get": 2,
        "s3_connections": 5,
    }
    # moto's log knows neither: the plain counts only
    assert "s3_range_get" not in backend_counts(reqs)


def test_stub_status_counts_requests_in_progress() -> None:
    text = "Active connections: 9\nserver accepts handled requests\n 1 1 1\n"
    assert in_progress(text + "Reading: 0 Writing: 3 Waiting: 6\n") == (0, 3)
    with pytest.raises(ValueError):
        in_progress("<html>502</html>")


def test_nginx_rate_is_bytes_per_second_of_decimal_megabits() -> None:
    assert nginx_rate(1) == 125_000
    assert nginx_rate(680) == 85_000_000  # one real S3 connection, ~85 MB/s
    with pytest.raises(ValueError):
        nginx_rate(1e-9)


def test_pacing_writes_at_least_16_kib_at_a_time() -> None:
    assert pace_ms_for(125_000) == 132  # 16.5 KB a write at 1 Mbit/s
    assert pace_ms_for(85_000_000) == 10  # the rig's own 10 ms: 850 KB a write


def config_of(tmp_path: Path, **kw: Any) -> tuple[CappedS3, str]:
    store = tmp_path / "store"
    (store / "docker").mkdir(parents=True)
    rig = CappedS3(store, bucket="scaleup", rate="125000", workdir=tmp_path / "nginx", **kw)
    rig.prepare()
    return rig, rig.conf_path.read_text()


def test_capped_s3_can_listen_on_every_address_of_a_namespace(tmp_path: Path) -> None:
    """host/port/lister_port set: nginx listens there, proxies listings to the lister on
    the same namespace's loopback, paces 10 ms of the rate per write (or ``pace_ms``);
    start() (which runs it here, in this network namespace) refuses a non-loopback host
    before starting."""
    rig, conf = config_of(tmp_path, host="0.0.0.0", port=9000, lister_port=9001)
    assert "listen 0.0.0.0:9000;" in conf
    assert conf.count("proxy_pass http://127.0.0.1:9001;") == 3
    assert "limit_rate 125000;" in conf and "sendfile_max_chunk 1250;" in conf
    _, slower = config_of(tmp_path / "paced", pace_ms=132)
    assert "sendfile_max_chunk 16500;" in slower
    assert rig.url == "http://127.0.0.1:9000"
    assert rig.lister_argv()[-4:] == ["--host", "127.0.0.1", "--port", "9001"]
    if shutil.which("nginx"):
        assert rig.nginx_argv()[-4:] == ["-c", str(rig.conf_path), "-g", "daemon off;"]
    with pytest.raises(ValueError, match="loopback"):
        rig.start()


def test_capped_s3_defaults_stay_on_loopback_with_free_ports(tmp_path: Path) -> None:
    rig, conf = config_of(tmp_path)
    assert f"listen 127.0.0.1:{rig.port};" in conf
    assert f"proxy_pass http://127.0.0.1:{rig.lister_port};" in conf
    assert rig.port != rig.lister_port
