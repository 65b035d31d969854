"""Two writers on one store: the second waits for the first; the store ends as one clean run."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import make_settings, vectors_of
from omnivec.pipeline.run import ingest
from omnivec.store import Store


def _soak():  # type: ignore[no-untyped-def]
    """benchmarks/crash_soak.py, for its store checks."""
    if "crash_soak" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "crash_soak", Path(__file__).resolve().parents[1] / "benchmarks" / "crash_soak.py")
        assert spec is not None and spec.loader is not None
        sys.modules["crash_soak"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["crash_soak"])
    return sys.modules["crash_soak"]


soak = _soak()


def test_two_ingests_started_together_end_like_one_clean_run(tmp_path, corpus, tiny_clip_dir):
    flags = ["--model", f"local-dir:{tiny_clip_dir}", "--local", "--batch-size", "4"]
    env = {**os.environ, "OMNIVEC_SPACES__TEXT__ENABLED": "false", "OMNIVEC_SPACES__CLAP__ENABLED": "false"}
    cwd = Path(__file__).resolve().parents[1]
    store = tmp_path / "shared"
    # overlapping sources: the whole corpus, and its images folder
    cmds = [[sys.executable, "-m", "flows.cli", "ingest", str(src), "--store", str(store), *flags]
            for src in (corpus, corpus / "images")]
    procs = [subprocess.Popen(c, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    # one of them waited, and said on which store, for whom, and that it waits
    waited = [" ".join(err.split()) for _, err in outs if "waiting for it to finish" in err]
    assert len(waited) == 1, [o[1] for o in outs]
    assert re.search(rf"omnivec: store {re.escape(str(store))} is being written by ingest "
                     r"\(pid \d+ on [^,]+, since [0-9T:+-]+\); waiting for it to finish", waited[0]), waited[0]
    clean = make_settings(tmp_path / "clean", tiny_clip_dir, batch_size=4)
    ingest([str(corpus)], clean)
    got = vectors_of(store, "clip", ["vector_id", "vector"]).to_pylist()
    want = vectors_of(clean.store, "clip", ["vector_id", "vector"]).to_pylist()
    assert len({r["vector_id"] for r in got}) == len(got) == 24  # nothing duplicated
    assert sorted((r["vector_id"], tuple(r["vector"])) for r in got) == \
        sorted((r["vector_id"], tuple(r["vector"])) for r in want)  # same batches either way: bit for bit
    assert Store(str(store)).count("items") == 24
    # every table as one clean run left it (items, errors, spaces, assets, full-text index), no duplicate
    # key in any table at any version, and both runs recorded with their tags on every table
    assert soak.compare(store, Path(clean.store)) == []
    assert soak.invariants(store) == []
    runs = Store(str(store)).read("runs").to_pylist()
    assert len(runs) == 2 and {r["status"] for r in runs} == {"completed"}


def test_lock_is_released_when_a_writer_dies(tmp_path):
    import signal
    import time

    from omnivec.store.lock import writer_lock

    code = ("import time\nfrom omnivec.store.lock import writer_lock\n"
            f"with writer_lock({str(tmp_path)!r}, 'holder'):\n    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    waited: list[str] = []
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.monotonic()
    with writer_lock(str(tmp_path), "next", timeout=10, on_wait=waited.append):
        pass
    assert time.monotonic() - t0 < 5 and waited == []  # the kernel dropped the dead writer's lock


def test_a_waiter_names_a_holder_that_has_not_written_its_name_yet(tmp_path):
    """A holder writes who it is just after taking the lock; a waiter arriving in between reads the
    file again instead of reporting an empty holder."""
    import fcntl
    import json
    import threading
    import time

    from omnivec.store.lock import lock_path, writer_lock

    fd = os.open(lock_path(str(tmp_path)), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, name not written yet

    def name_then_release() -> None:
        time.sleep(0.3)
        os.pwrite(fd, json.dumps({"what": "ingest run-7", "pid": 4242, "host": "h", "since": "t"}).encode(), 0)
        time.sleep(0.5)
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)

    holder = threading.Thread(target=name_then_release)
    holder.start()
    waited: list[str] = []
    with writer_lock(str(tmp_path), "next", timeout=10, on_wait=waited.append):
        pass
    holder.join()
    os.close(fd)
    assert len(waited) == 1 and "ingest run-7 (pid 4242 on h" in waited[0], waited
