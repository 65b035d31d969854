"""CLAP audio-text encoder (the `clap` space), via transformers ``ClapModel`` + ``ClapProcessor``.

``model`` is a Hugging Face id (default ``laion/clap-htsat-unfused``) or a local folder written by
``save_pretrained``. Audio is cut into fixed windows of the model's native length (10 s) and the
feature extractor is only ever given exactly one window, so its random cropping of longer inputs
never happens: the same file gives the same vectors on every run.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from omnivec.audio import AudioInfo, iter_windows
from omnivec.chunking import chunk_text
from omnivec.config import SpaceSettings
from omnivec.encoders import register
from omnivec.encoders.base import Encoder, Segment, TensorBatch, pin
from omnivec.errors import ConfigError, ModelUnavailableError
from omnivec.hub import offline_if_unreachable, quiet_transformers
from omnivec.weights import file_sha256


def _unavailable(model: str, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"CLAP model {model!r} cannot be loaded: {reason}",
        [
            "run once with network access so it lands in the Hugging Face cache "
            "(~/.cache/huggingface, or $HF_HOME), then run offline",
            "point the space at a folder written by save_pretrained: --clap-model /path/to/folder",
            "or switch the space off: [spaces.clap] enabled = false",
        ],
    )


def _weight_files(model: Any, name: str) -> list[str]:
    folder = name if os.path.isdir(name) else getattr(model, "name_or_path", None) or ""
    if not os.path.isdir(folder):
        with contextlib.suppress(Exception):
            from huggingface_hub import snapshot_download

            folder = snapshot_download(name, local_files_only=True)
    files = sorted(glob.glob(os.path.join(folder, "*.safetensors")) or glob.glob(os.path.join(folder, "*.bin")))
    return files


@register("clap")
class ClapEncoder(Encoder):
    modalities = frozenset({"audio", "text"})
    identity_packages = ("transformers", "torch", "tokenizers", "huggingface_hub", "safetensors")

    @classmethod
    def identity_inputs(cls, settings: SpaceSettings) -> Any:
        """A local folder: its files' stats. A Hugging Face id comes from the hub: None."""
        from omnivec.encoders.identity import tree_state

        name = os.path.expanduser(settings.model)
        files = tree_state(name) if os.path.isdir(name) else None
        return None if files is None else {"folder": files}

    def __init__(self, settings: SpaceSettings, device: str) -> None:
        super().__init__(settings, device)
        import torch
        import transformers
        from transformers import ClapModel, ClapProcessor

        name = os.path.expanduser(settings.model)
        local = os.path.isdir(name)
        if not local and (name.startswith((".", "/", "~")) or os.sep in name and name.count("/") > 1):
            raise _unavailable(settings.model, f"folder {name} does not exist")
        offline = False
        try:
            with offline_if_unreachable() as offline, quiet_transformers():
                processor = ClapProcessor.from_pretrained(name)
                model = ClapModel.from_pretrained(name)
        except Exception as exc:  # network, cache, corrupt folder: all mean "unavailable"
            where = "hub unreachable or HF_HUB_OFFLINE set, and not in the local cache: " if offline else ""
            raise _unavailable(settings.model, f"{where}{type(exc).__name__}: {exc}") from exc
        logging.getLogger(__name__).debug("loaded CLAP %s", name)
        model.eval().to(device)
        self.model = self.prepare_model(model)
        self.processor = processor
        fe = processor.feature_extractor
        self.sample_rate = int(fe.sampling_rate)
        native = float(fe.nb_max_samples) / self.sample_rate
        self.window_s = float(settings.window_s or native)
        self.hop_s = float(settings.hop_s or self.window_s)
        if self.hop_s > self.window_s:
            raise ConfigError(f"[spaces] hop_s={self.hop_s} is longer than window_s={self.window_s}; "
                              "every sample must fall in a window")
        if abs(self.window_s - native) > 1e-6:
            raise ConfigError(f"window_s={self.window_s} differs from the model's native {native} s; "
                              "CLAP's feature extractor would pad or crop each window")
        tok = processor.tokenizer
        max_pos = int(getattr(model.config.text_config, "max_position_embeddings", 514))
        self.max_tokens = min(int(tok.model_max_length or 512), max_pos - 2) - 2
        self.dimension = int(model.config.projection_dim)
        weights = _weight_files(model, name)
        self.recipe = self.with_precision({
            "encoder": "clap",
            "model": settings.model if not local else os.path.basename(os.path.normpath(name)),
            "weights_sha256": [file_sha256(w) for w in weights] or "unknown",
            "feature_extractor": {k: v for k, v in sorted(fe.to_dict().items())
                                  if isinstance(v, str | int | float | bool) and not k.startswith("_")},
            "window_s": self.window_s,
            "hop_s": self.hop_s,
            "text_chunking": {"max_tokens": self.max_tokens, "overlap_tokens": settings.chunk_overlap},
            "pooled": "mean of window vectors, re-normalised",
            "normalise": "l2",
            "dtype": "float32",
            "libs": {"transformers": transformers.__version__.split(".")[0],
                     "torch": torch.__version__.split(".")[0]},
        })

    def count_tokens(self, text: str) -> int:
        return len(self.processor.tokenizer(text, add_special_tokens=False)["input_ids"])

    def segments(self, modality: str, content: Any) -> Iterator[Segment] | list[Segment]:
        if modality == "audio":
            assert isinstance(content, AudioInfo)
            return (Segment(w.samples, start_s=w.start_s, end_s=w.end_s)
                    for w in iter_windows(content, self.sample_rate, self.window_s, self.hop_s))
        if modality == "text":
            chunks = chunk_text(content, self.count_tokens, self.max_tokens, self.settings.chunk_overlap)
            return [Segment(c.text, c.start, c.end) for c in chunks]
        raise ValueError(f"CLAP does not embed {modality}")

    def _collate(self, modality: str, payloads: Sequence[Any]) -> TensorBatch | list[Any]:
        """Audio: the feature extractor's mel features (the CPU-heavy part), page-locked for a CUDA device.
        Text stays a list: it is tokenised under the forward lock (the tokenizer is not thread-safe)."""
        if modality != "audio":
            return list(payloads)
        feats = self.processor.feature_extractor(
            [np.asarray(p, dtype=np.float32) for p in payloads], sampling_rate=self.sample_rate, return_tensors="pt")
        return TensorBatch({k: pin(v, self.device) for k, v in feats.items()})

    def _forward(self, modality: str, payloads: Any) -> np.ndarray:
        import torch

        if modality == "audio":
            batch = payloads if isinstance(payloads, TensorBatch) else self._collate(modality, payloads)
            assert isinstance(batch, TensorBatch)
        else:
            batch = TensorBatch(dict(self.processor.tokenizer(list(payloads), padding=True, return_tensors="pt")))
        with torch.inference_mode(), self.autocast():
            inputs = batch.to(self.device)
            out = (self.model.get_audio_features(**inputs) if modality == "audio"
                   else self.model.get_text_features(**inputs))
        vec = out.pooler_output if hasattr(out, "pooler_output") else out
        return vec.float().cpu().numpy()
