"""Each batch that ran a forward hands freed heap memory back (glibc malloc_trim); off with
OMNIVEC_MALLOC_TRIM=0. The peak-RSS effect itself is measured by benchmarks/noop_memory.py."""

from __future__ import annotations

import omnivec.memory as memory
from omnivec.pipeline.run import ingest


def test_every_batch_with_forwards_releases_memory(settings, corpus, monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(memory, "_trim", lambda pad: calls.append(pad) or 1)
    report = ingest([str(corpus)], settings)  # 18 images and 6 texts in batches of 8: 3 + 1 batches
    assert report.embedded == 24 and calls == [0, 0, 0, 0]

    calls.clear()
    (corpus / "texts" / "new.txt").write_text("one more note\n")
    ingest([str(corpus)], settings)
    assert calls == [0]  # one batch, one file

    calls.clear()
    ingest([str(corpus)], settings)
    assert calls == []  # nothing embedded: no batch ran a forward


def test_it_can_be_turned_off_and_runs_for_real(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(memory, "_trim", lambda pad: calls.append(pad) or 1)
    monkeypatch.setenv("OMNIVEC_MALLOC_TRIM", "0")
    memory.release()
    assert calls == []
    monkeypatch.delenv("OMNIVEC_MALLOC_TRIM")
    monkeypatch.setattr(memory, "_trim", None)
    memory.release()  # the real glibc call (or nothing where there is no glibc)
    assert memory._trim is not None
