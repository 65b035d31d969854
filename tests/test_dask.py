"""Scale-out: the ingest flow's batches on a real Dask cluster (2 worker processes on loopback)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_settings, vectors_of
from omnivec.store import Store

pytestmark = pytest.mark.flow
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    # an existing cluster's workers are told where the Prefect API is, as on a real cluster
    env = {"PREFECT_API_URL": str(PREFECT_API_URL.value())}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, env=env) as c, distributed.Client(c) as client:
        yield c, client


def _sorted(tbl):  # type: ignore[no-untyped-def]
    rows = sorted(tbl.to_pylist(), key=lambda r: (r["uri"], r["segment"]))
    return [(r["uri"], r["segment"]) for r in rows], np.array([r["vector"] for r in rows], dtype=np.float32)


def test_dask_cluster_gives_the_same_vectors_as_threads(prefect_harness, cluster, tmp_path, tiny_clip_dir, corpus):
    from flows.ingest import run_ingest_flow

    c, client = cluster
    threads = make_settings(tmp_path / "threads", tiny_clip_dir, batch_size=4)
    dask = make_settings(tmp_path / "dask", tiny_clip_dir, batch_size=4, task_runner="dask",
                         dask_address=c.scheduler_address)
    base = run_ingest_flow([str(corpus)], threads)
    report = run_ingest_flow([str(corpus)], dask)
    assert report.embedded == base.embedded == 24 and report.failed == 0

    keys_t, vec_t = _sorted(vectors_of(threads.store, "clip"))
    keys_d, vec_d = _sorted(vectors_of(dask.store, "clip"))
    assert keys_d == keys_t
    np.testing.assert_allclose(vec_d, vec_t, rtol=0, atol=1e-5)  # same batches; thread counts may differ

    # the batches ran on the workers, and each worker loaded the model once for all its batches
    loads = client.run(lambda: __import__("omnivec.encoders", fromlist=["load_count"]).load_count())
    assert len(loads) == 2 and sum(loads.values()) >= 1
    batches = 18 // 4 + 1 + 6 // 4 + 1  # image and text batches of 4
    assert all(n <= 1 for n in loads.values()) and batches > sum(loads.values())
    assert Store(dask.store).count("errors") == 0

    # a second run, on a local cluster the runner starts itself, is a no-op like on threads
    local = dask.model_copy(update={"dask_address": None})
    again = run_ingest_flow([str(corpus)], local)
    assert again.embedded == 0 and sum(c["unchanged"] for c in again.counts.values()) == 24


def test_local_cluster_workers_report_to_the_flows_api(prefect_harness):
    from prefect.settings import PREFECT_API_URL

    from flows.runners import task_runner_for
    from omnivec.config import load_settings

    runner = task_runner_for(load_settings(overrides={"task_runner": "dask", "workers": 3}, env={}))
    kwargs = runner.cluster_kwargs
    assert kwargs["n_workers"] == 3 and kwargs["threads_per_worker"] == 1
    # without it each worker process would start a temporary API the dashboard never sees
    assert kwargs["env"]["PREFECT_API_URL"] == str(PREFECT_API_URL.value())
