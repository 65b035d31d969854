"""Tiny, randomly initialised models saved like real checkpoints, for tests and offline demos.

They load through the same code path as real weights (``local-dir:FOLDER``); their vectors
carry no meaning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_OPEN_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def make_tiny_open_clip(folder: str | Path, seed: int = 0) -> Path:
    """Write ``open_clip_config.json`` + ``open_clip_model.safetensors`` for a 32-d CLIP."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "model_cfg": TINY_OPEN_CLIP_CFG,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_OPEN_CLIP_CFG)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


TINY_CLAP_SENTENCES = [
    "a dog barking in the park", "a cat meowing on the roof", "rain falling on a window",
    "a pure sine tone", "white noise hiss", "a rising chirp", "people talking in a cafe",
    "an engine running", "birds singing in the morning", "music with drums and guitar",
]


def make_tiny_clap(folder: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    """Write a ``save_pretrained`` folder with a randomly initialised CLAP and its processor.

    ``size="tiny"``: 32-d (tiny HTSAT + 1-layer RoBERTa); ``size="default"``: the architecture of
    laion/clap-htsat-unfused (transformers' default ``ClapConfig``), for speed measurements.
    The tokenizer is a byte-level BPE (256 byte tokens, 5 special tokens and the merges learnt from
    :data:`TINY_CLAP_SENTENCES`), so every text tokenizes, into ids that differ with the text; the
    folder is checked for that after it is written, through ``ClapProcessor.from_pretrained`` as users
    load it. The feature extractor is the standard 48 kHz / 10 s / 64-mel one with ``rand_trunc``
    truncation, as in laion/clap-htsat-unfused.
    """
    import tempfile

    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizerFast
    from transformers.utils import logging as tlog

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TINY_CLAP_SENTENCES * 5, vocab_size=400, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    with tempfile.TemporaryDirectory(prefix="omnivec-bpe-") as tok_dir:
        bpe.save_model(tok_dir)
        # from_pretrained reads vocab.json + merges.txt on every transformers release; the constructor's
        # file arguments changed names (transformers 5 ignores vocab_file/merges_file: 5-token vocabulary)
        tokenizer = RobertaTokenizerFast.from_pretrained(tok_dir, model_max_length=77)
    features = ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad")
    if size == "tiny":
        config = ClapConfig(
            text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "intermediate_size": 37, "max_position_embeddings": 80},
            audio_config={"spec_size": 256, "window_size": 8, "num_mel_bins": 64, "patch_size": 4,
                          "patch_stride": (4, 4), "depths": [1, 1], "num_attention_heads": [2, 2],
                          "patch_embeds_hidden_size": 16, "hidden_size": 32, "num_hidden_layers": 2},
            projection_dim=32,
        )
    elif size == "default":
        config = ClapConfig(text_config={"vocab_size": len(tokenizer)})
    else:
        raise ValueError(f"size must be 'tiny' or 'default', not {size!r}")
    torch.manual_seed(seed)
    model = ClapModel(config).eval()
    tlog.disable_progress_bar()
    try:
        model.save_pretrained(folder)
        ClapProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(folder)
        check_tokenizer(ClapProcessor.from_pretrained(folder).tokenizer)
    finally:
        tlog.enable_progress_bar()
    return folder


def check_tokenizer(tokenizer: Any) -> None:
    """Raise unless ``tokenizer`` gives distinct, non-trivial ids to distinct sentences (a tokenizer
    saved without its vocabulary maps every text to the special tokens alone)."""
    special = set(tokenizer.all_special_ids)
    ids = [tokenizer(s)["input_ids"] for s in TINY_CLAP_SENTENCES[:3]]
    words = [[i for i in seq if i not in special] for seq in ids]
    if len(tokenizer) <= 256 or any(len(w) < 3 for w in words) or len({tuple(w) for w in words}) < len(words):
        raise RuntimeError(f"the tiny CLAP tokenizer does not tokenize: vocabulary of {len(tokenizer)}, "
                           f"{TINY_CLAP_SENTENCES[:3]} -> {ids}")


def commit_items(store: object, vectors: object) -> None:
    """Write the `items` rows that commit vector rows written straight into a vector table (tests and
    benchmarks that fill tables with synthetic vectors): search answers only rows whose item_id and
    content_hash an `items` row holds (see :mod:`omnivec.store.coverage`)."""
    from datetime import UTC, datetime

    import pyarrow as pa

    from omnivec.store.coverage import keys
    from omnivec.store.schema import ITEMS

    t = vectors if isinstance(vectors, pa.Table) else pa.Table.from_pylist(list(vectors))  # type: ignore[call-overload]
    first: dict[str, int] = {}
    for i, item_id in enumerate(t.column("item_id").to_pylist()):
        first.setdefault(item_id, i)
    t = t.select(["item_id", "uri", "modality", "content_hash"]).take(list(first.values()))  # one row per item
    _, valid = keys(t.column("item_id"), t.column("content_hash"))
    if not valid.all():  # such rows could never be committed: the search would silently skip them
        bad = t.filter(pa.array(~valid)).slice(0, 1).to_pylist()[0]
        raise ValueError(f"not an omnivec id and content hash (32 and 64 hex digits): {bad['item_id']!r}, "
                         f"{bad['content_hash']!r}")
    n = t.num_rows
    rows = t.append_column("size", pa.array([1] * n, pa.int64())) \
        .append_column("mtime_ns", pa.array([0] * n, pa.int64())) \
        .append_column("status", pa.array(["ok"] * n)) \
        .append_column("first_run", pa.array(["synthetic"] * n)) \
        .append_column("last_run", pa.array(["synthetic"] * n)) \
        .append_column("updated_at", pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")))
    for start in range(0, n, 100_000):
        store.upsert("items", rows.slice(start, 100_000).select(ITEMS.names).cast(ITEMS))  # type: ignore[attr-defined]
