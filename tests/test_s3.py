"""A store on object storage: a real S3-compatible server (moto's server mode) on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_settings, vtable
from fixtures.bad_files import write_bad_corpus
from omnivec.errors import StoreError
from omnivec.store import Store

pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory):
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto server did not start: {Path(log.name).read_text()}") from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A fresh bucket, with the usual AWS variables pointing at the local server."""
    for key, value in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    name = "omnivec-" + request.node.name.replace("_", "-")[:40].lower().strip("-")
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def _objects(endpoint: str, bucket: str, prefix: str) -> list[str]:
    resp = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in resp.get("Contents", [])]


@pytest.mark.flow
def test_ingest_flow_writes_an_s3_store_that_search_reads(prefect_harness, s3_endpoint, bucket, tmp_path,
                                                          tiny_clip_dir, corpus):
    from flows.ingest import run_ingest_flow
    from omnivec.query import search

    uri = f"s3://{bucket}/stores/main"
    bad = write_bad_corpus(corpus / "bad")
    settings = make_settings(uri, tiny_clip_dir, batch_size=8)
    report = run_ingest_flow([str(corpus)], settings)
    assert report.embedded == 24 + 3 and report.failed == len(bad)  # the bad corpus holds 3 good files

    keys = _objects(s3_endpoint, bucket, "stores/main/")
    assert any(k.endswith(".lance") for k in keys) and not os.path.exists("s3:")  # in the bucket, not a folder
    store = Store(uri)
    assert store.count(vtable(store, "clip")) == 27 and store.count("errors") == len(bad)
    assert report.run_name in store.table(vtable(store, "clip")).tags.list()

    # search reads the bucket, and matches the same ingest into a local folder
    hits = search("a red circle", k=5, settings=settings)
    local = make_settings(tmp_path / "local", tiny_clip_dir, batch_size=8)
    run_ingest_flow([str(corpus)], local)
    want = search("a red circle", k=5, settings=local)
    assert [h.uri for h in hits] == [h.uri for h in want]
    assert np.allclose([h.score for h in hits], [h.score for h in want], atol=1e-6)

    # the next run sees nothing new; a change is re-embedded
    assert run_ingest_flow([str(corpus)], settings).embedded == 0
    (corpus / "texts" / "cooking.txt").write_text("A fresh recipe for soup with leeks and potatoes.\n")
    again = run_ingest_flow([str(corpus)], settings)
    assert again.embedded == 1 and again.counts["text"]["changed"] == 1


def test_s3_store_errors_are_clear(s3_endpoint, bucket, monkeypatch):
    with pytest.raises(StoreError) as missing:
        Store("s3://no-such-bucket-here/store", create=True)
    assert "no such bucket" in str(missing.value) and "Location" not in str(missing.value)

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(StoreError) as refused:
        Store(f"s3://{bucket}/store")
    assert "did not answer" in str(refused.value) and time.monotonic() - t0 < 60


def test_writers_on_one_s3_store_take_turns(s3_endpoint, bucket):
    from omnivec.store.lock import lock_path, writer_lock

    uri = f"s3://{bucket}/store"
    assert lock_path(uri) == lock_path(uri + "/") and lock_path(uri) != lock_path(f"s3://{bucket}/other")
    events: list[str] = []
    waited: list[str] = []
    holding = threading.Event()

    def second() -> None:
        holding.wait(10)
        with writer_lock(uri, "second", on_wait=waited.append):
            events.append("second")

    t = threading.Thread(target=second)
    t.start()
    with writer_lock(uri, "first"):
        holding.set()
        time.sleep(0.5)
        events.append("first")
    t.join(10)
    assert events == ["first", "second"] and waited and "first" in waited[0]


def test_a_prefix_holding_other_lance_tables_is_not_a_store(s3_endpoint, bucket):
    import lance
    import pyarrow as pa

    from omnivec.store.folder import storage_options

    uri = f"s3://{bucket}/mine"
    lance.write_dataset(pa.table({"id": [1, 2]}), f"{uri}/photos.lance", storage_options=storage_options(uri))
    before = _objects(s3_endpoint, bucket, "mine/")
    for create in (True, False):
        with pytest.raises(StoreError, match=r"is not an omnivec store: it holds photos\.lance"):
            Store(uri, create=create)
    assert _objects(s3_endpoint, bucket, "mine/") == before
    store = Store(f"s3://{bucket}/store", create=True)  # a prefix of omnivec's own tables opens
    store.ensure("items")
    assert Store(f"s3://{bucket}/store").table_names() == ["items"]
