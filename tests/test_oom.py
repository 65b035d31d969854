"""Out of device memory, simulated on the CPU: the encoder's forward raises torch.cuda.OutOfMemoryError
for batches larger than a limit (and, for one "poison" file, at any size). The batch size halves and
stays down for the rest of the run; a file that does not fit alone becomes an errors row; every
other vector equals a run made at the limit from the start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_settings, vectors_of
from omnivec.encoders import Encoder, clear_cache, load_encoder
from omnivec.media import decode_image
from omnivec.pipeline.embedder import SpaceEmbedder
from omnivec.pipeline.run import ingest
from omnivec.sample import build_sample_corpus
from omnivec.store import Store

LIMIT = 4  # the largest batch the simulated device holds


@pytest.fixture(autouse=True)
def fresh_encoders():
    """Each test starts with freshly loaded encoders (batch_limit is remembered per loaded encoder)."""
    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_sample_corpus(tmp_path_factory.mktemp("oom") / "corpus", audio=False)
    return root / "images"  # 18 images


def oom_above(enc: Encoder, limit: int, poison: torch.Tensor | None = None) -> list[int]:
    """Make ``enc._forward`` fail like a full GPU; returns the list of batch sizes it was called with."""
    real = enc._forward
    sizes: list[int] = []

    def forward(modality, payloads):  # type: ignore[no-untyped-def]
        sizes.append(len(payloads))
        if len(payloads) > limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {len(payloads)} x 2 GiB")
        if poison is not None and any(torch.equal(row, poison) for row in payloads):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        return real(modality, payloads)

    enc._forward = forward  # type: ignore[method-assign]
    return sizes


def stored(store_dir: Path) -> dict[str, np.ndarray]:
    return {r["uri"]: np.asarray(r["vector"]) for r in vectors_of(str(store_dir), "clip").to_pylist()}


def reference(tmp_path: Path, tiny_clip_dir: Path, images: Path) -> dict[str, np.ndarray]:
    """The same images ingested at batch size LIMIT, nothing failing."""
    clear_cache()
    ref = make_settings(tmp_path / "ref", tiny_clip_dir, batch_size=LIMIT)
    ingest([str(images)], ref)
    return stored(tmp_path / "ref")


def test_batch_halves_on_oom_and_vectors_equal_a_run_at_the_limit(tmp_path, tiny_clip_dir, images):
    settings = make_settings(tmp_path / "store", tiny_clip_dir, batch_size=16)
    enc = load_encoder(settings.spaces["clip"], settings.device)  # the instance the run will use
    sizes = oom_above(enc, LIMIT)
    report = ingest([str(images)], settings)
    assert report.failed == 0 and report.embedded == 18
    assert enc.batch_limit is not None and enc.batch_limit <= LIMIT
    assert [n for n in sizes if n > LIMIT] == [16, 8]  # 16 -> 8 -> 4, halving
    last_failure = max(i for i, n in enumerate(sizes) if n > LIMIT)
    assert all(n <= enc.batch_limit for n in sizes[last_failure + 1 :])  # remembered for the rest of the run
    got = stored(tmp_path / "store")
    want = reference(tmp_path, tiny_clip_dir, images)
    assert got.keys() == want.keys()
    for uri, vec in want.items():
        np.testing.assert_allclose(got[uri], vec, atol=1e-6, err_msg=uri)


def test_file_that_does_not_fit_alone_is_an_error_row_and_its_batch_is_kept(tmp_path, tiny_clip_dir, images):
    settings = make_settings(tmp_path / "store", tiny_clip_dir, batch_size=16)
    enc = load_encoder(settings.spaces["clip"], settings.device)
    bad = sorted(images.iterdir())[5]
    poison = enc.segments("image", decode_image(bad.read_bytes(), settings.max_image_pixels))[0].payload
    oom_above(enc, LIMIT, poison)
    report = ingest([str(images)], settings)
    assert report.failed == 1 and report.embedded == 17
    errors = Store(settings.store).read("errors").to_pylist()
    assert [(e["uri"], e["stage"], e["space"], e["error_class"]) for e in errors] == [
        (str(bad), "encode", "clip", "DeviceOutOfMemory")]
    assert "out of memory" in errors[0]["message"] and "alone" in errors[0]["message"]
    # the poison file's failures did not drag the batch size down to 1 for everyone else
    assert enc.batch_limit == LIMIT
    got = stored(tmp_path / "store")
    want = reference(tmp_path, tiny_clip_dir, images)
    assert set(got) == set(want) - {str(bad)}
    for uri, vec in got.items():
        np.testing.assert_allclose(vec, want[uri], atol=1e-6, err_msg=uri)


def test_embed_halves_and_remembers(tiny_clip_dir):
    settings = make_settings(Path("unused"), tiny_clip_dir)
    enc = load_encoder(settings.spaces["clip"], "cpu")
    texts = [f"sentence number {i}" for i in range(10)]
    want = enc.embed("text", texts)
    sizes = oom_above(enc, 3)
    got = enc.embed("text", texts)
    assert sizes == [10, 5, 2, 2, 2, 2, 2]  # 10 and 5 fail; then pairs
    assert enc.batch_limit == 2
    np.testing.assert_allclose(got, want, atol=1e-6)
    sizes.clear()
    enc.embed("text", texts[:7])
    assert sizes == [2, 2, 2, 1]  # the limit holds for later calls


def test_other_errors_are_not_taken_for_oom_and_bisection_isolates_them(tiny_clip_dir):
    settings = make_settings(Path("unused"), tiny_clip_dir)
    enc = load_encoder(settings.spaces["clip"], "cpu")
    real = enc._forward
    calls: list[int] = []

    def forward(modality, payloads):  # type: ignore[no-untyped-def]
        calls.append(len(payloads))
        if "the poison sentence" in payloads:
            raise ValueError("the model cannot take this input")
        return real(modality, payloads)

    enc._forward = forward  # type: ignore[method-assign]
    emb = SpaceEmbedder(enc, "text", batch_size=32)
    segs = [s for i in range(32) for s in enc.segments("text", "the poison sentence" if i == 9 else f"text {i}")]
    for i, seg in enumerate(segs):
        emb.add(f"item{i}", seg)
    done = emb.finish()
    assert set(emb.failed) == {"item9"} and isinstance(emb.failed["item9"], ValueError)
    assert len(done) == 31 and enc.batch_limit is None  # not an OOM: the batch size is untouched
    assert len(calls) <= 2 * 5 + 1  # halves down to the bad one (log2 32 = 5 levels), not 32 single forwards
