"""open_clip image-text encoder (the `clip` space).

``model``/``pretrained`` take exactly what ``open_clip.create_model_and_transforms`` takes:
a built-in name with a pretrained tag or a checkpoint path, ``hf-hub:org/name`` or
``local-dir:/path`` (a folder with ``open_clip_config.json`` and weights).
``pretrained = ""`` (or ``none``) builds the architecture with seeded random weights, for
benchmarks only.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnivec.chunking import chunk_text
from omnivec.config import SpaceSettings
from omnivec.encoders import register
from omnivec.encoders.base import Encoder, Segment, pin
from omnivec.errors import ConfigError, ModelUnavailableError
from omnivec.hub import offline_if_unreachable
from omnivec.weights import file_sha256

RANDOM_INIT = "random-init"


@contextlib.contextmanager
def _quiet_hub_logs() -> Iterator[None]:
    """open_clip logs download failures with ``logging.error`` on the root logger (which also installs
    a root handler through ``basicConfig``); omnivec reports them itself, so both are undone."""
    root = logging.getLogger()
    hub = logging.getLogger("huggingface_hub")
    levels, handlers = (root.level, hub.level), list(root.handlers)
    root.setLevel(logging.CRITICAL)
    hub.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.setLevel(levels[0])
        hub.setLevel(levels[1])
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)


def _unavailable(model: str, pretrained: str | None, reason: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"open_clip model {model!r} (pretrained={pretrained!r}) cannot be loaded: {reason}",
        [
            "run once with network access so the weights land in the Hugging Face cache "
            "(~/.cache/huggingface, or $HF_HOME), then run offline",
            "point the space at a folder: --model local-dir:/path/to/folder "
            "(open_clip_config.json + weights)",
            "or at a checkpoint file: --pretrained /path/to/weights.safetensors",
        ],
    )


def _check_spec(model: str, pretrained: str | None) -> str | None:
    """Validate name/tag before any download; returns the normalised ``pretrained``."""
    import open_clip

    if pretrained is not None and pretrained.strip().lower() in ("", "none"):
        pretrained = None
    if model.startswith("local-dir:"):
        folder = Path(model[len("local-dir:") :]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise _unavailable(model, pretrained, f"{folder}/open_clip_config.json not found")
        from open_clip.factory import _find_checkpoint_in_dir

        if _find_checkpoint_in_dir(folder) is None:
            raise _unavailable(model, pretrained, f"no weights (*.safetensors, *.bin, *.pth) in {folder}")
        return None
    if model.startswith("hf-hub:"):
        return None
    name = model.replace("/", "-")
    if name not in open_clip.list_models():
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5)
        raise ConfigError(
            f"open_clip has no model {model!r}." + (f" Did you mean: {', '.join(close)}?" if close else ""),
            ["pick a name from open_clip.list_models()", "or use local-dir:/path or hf-hub:org/name"],
        )
    if pretrained is None or os.path.isfile(pretrained):
        return pretrained
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        if os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
            raise _unavailable(model, pretrained, f"checkpoint file {pretrained} does not exist")
        raise ConfigError(
            f"{pretrained!r} is neither a pretrained tag of {name} nor an existing file. "
            f"Tags for {name}: {', '.join(tags) or 'none'}",
            ["use one of the tags above", "or give a path to a checkpoint file"],
        )
    return pretrained


def _weights_file(model: str, pretrained: str | None) -> str | None:
    """The weight file open_clip loaded (already downloaded), or None for random init."""
    import open_clip
    from open_clip import pretrained as ocp

    if model.startswith("local-dir:"):
        from open_clip.factory import _find_checkpoint_in_dir

        return _find_checkpoint_in_dir(Path(model[len("local-dir:") :]).expanduser())
    if model.startswith("hf-hub:"):
        return str(ocp.download_pretrained_from_hf(model[len("hf-hub:") :]))
    if pretrained is None:
        return None
    if os.path.isfile(pretrained):
        return pretrained
    cfg = open_clip.get_pretrained_cfg(model.replace("/", "-"), pretrained)
    return str(ocp.download_pretrained(cfg)) if cfg else None


def _reads_a_hub(cfg: Any) -> bool:
    """Whether an open_clip model config makes its load fetch from a hub (a Hugging Face text tower or
    tokenizer, pretrained timm weights)."""
    if isinstance(cfg, dict):
        return any((k in ("hf_model_name", "hf_tokenizer_name") or k.endswith("_pretrained")) and bool(v)
                   or _reads_a_hub(v) for k, v in cfg.items())
    return isinstance(cfg, list) and any(_reads_a_hub(v) for v in cfg)


def _builtin_config(name: str) -> dict[str, Any] | None:
    """The model config open_clip ships for a built-in name, read without importing open_clip."""
    import importlib.util
    import json

    spec = importlib.util.find_spec("open_clip")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            cfg = json.loads((Path(folder) / "model_configs" / f"{name}.json").read_text())
        except (OSError, ValueError):
            continue
        return cfg if isinstance(cfg, dict) else None
    return None


@register("open_clip")
class OpenClipEncoder(Encoder):
    modalities = frozenset({"image", "text"})
    identity_packages = ("open_clip_torch", "torch", "torchvision", "timm", "huggingface_hub", "safetensors")

    @classmethod
    def identity_inputs(cls, settings: SpaceSettings) -> Any:
        """A ``local-dir:`` folder, a checkpoint file or random init: the files' stats (and, for a
        built-in name, the config open_clip ships, covered by its version). A pretrained tag or
        ``hf-hub:`` comes from the hub: None."""
        from omnivec.encoders.identity import file_state, tree_state

        model, pretrained = settings.model, settings.pretrained
        if pretrained is not None and pretrained.strip().lower() in ("", "none"):
            pretrained = None
        if model.startswith("local-dir:"):
            import json

            folder = Path(model[len("local-dir:") :]).expanduser()
            try:
                cfg = json.loads((folder / "open_clip_config.json").read_text())
            except (OSError, ValueError):
                return None
            files = tree_state(folder)
            if files is None or not isinstance(cfg, dict) or _reads_a_hub(cfg.get("model_cfg")):
                return None
            return {"folder": files}
        if model.startswith("hf-hub:"):
            return None
        cfg = _builtin_config(model.replace("/", "-"))
        if cfg is None or _reads_a_hub(cfg):
            return None
        if pretrained is None:
            return {"random_init": True}
        checkpoint = file_state(pretrained)
        return None if checkpoint is None else {"checkpoint": checkpoint}

    def __init__(self, settings: SpaceSettings, device: str) -> None:
        super().__init__(settings, device)
        import open_clip
        import torch

        model_name = settings.model
        pretrained = _check_spec(model_name, settings.pretrained)
        offline = False
        try:
            if pretrained is None and not model_name.startswith(("local-dir:", "hf-hub:")):
                torch.manual_seed(0)  # random init must give the same space on every load
            with offline_if_unreachable() as offline, _quiet_hub_logs():
                model, _, preprocess = open_clip.create_model_and_transforms(
                    model_name, pretrained=pretrained, device=device
                )
                weights = _weights_file(model_name, pretrained)
        except (ConfigError, ModelUnavailableError):
            raise
        except Exception as exc:  # network, missing cache, corrupt file: all mean "unavailable"
            where = "hub unreachable or HF_HUB_OFFLINE set, and not in the local cache: " if offline else ""
            raise _unavailable(model_name, pretrained, f"{where}{type(exc).__name__}: {exc}") from exc
        model.eval()
        self.model = self.prepare_model(model)
        self.preprocess = preprocess
        self.tokenizer = open_clip.get_tokenizer(model_name)
        self.context_length = int(getattr(self.tokenizer, "context_length", None) or model.context_length)
        self.dimension = int(model.visual.output_dim)
        pcfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        self.recipe = self.with_precision({
            "encoder": "open_clip",
            "model": model_name,
            "pretrained": pretrained if pretrained is None or not os.path.isfile(pretrained)
            else os.path.basename(pretrained),
            "weights_sha256": file_sha256(weights) if weights else RANDOM_INIT,
            "preprocess": {k: pcfg[k] for k in sorted(pcfg)},
            "context_length": self.context_length,
            "text_chunking": {"max_tokens": self.context_length - 2,
                              "overlap_tokens": settings.chunk_overlap},
            "normalise": "l2",
            "dtype": "float32",
            "libs": {"open_clip": open_clip.__version__.split(".")[0],
                     "torch": torch.__version__.split(".")[0]},
        })

    def prepare_model(self, model: Any) -> Any:
        model = super().prepare_model(model)
        if self.precision == "int8":  # open_clip reads the input dtype off the first block's c_fc weight,
            import torch  # which a quantised Linear no longer has; this is the attribute it looks for instead

            for name, module in model.named_modules():
                if name.endswith("mlp.c_fc"):
                    module.int8_original_dtype = torch.float32
        return model

    # -- text ---------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        tok: Any = self.tokenizer
        if hasattr(tok, "encode"):  # open_clip SimpleTokenizer (cleans text like __call__ does)
            return len(tok.encode(text))
        inner = tok.tokenizer  # HFTokenizer
        return len(inner(tok.clean_fn(text), add_special_tokens=False)["input_ids"])

    def text_chunks(self, text: str) -> list[Segment]:
        chunks = chunk_text(text, self.count_tokens, self.context_length - 2, self.settings.chunk_overlap)
        return [Segment(c.text, c.start, c.end) for c in chunks]

    # -- contract -----------------------------------------------------------------------------
    def segments(self, modality: str, content: Any) -> list[Segment]:
        if modality == "image":
            return [Segment(self.preprocess(content))]
        if modality == "text":
            return self.text_chunks(content)
        raise ValueError(f"open_clip does not embed {modality}")

    def _collate(self, modality: str, payloads: Sequence[Any]) -> Any:
        """Images: one stacked tensor, page-locked for a CUDA device. Text stays a list: it is tokenised
        under the forward lock (a Hugging Face tokenizer must not be used by two threads at once)."""
        import torch

        if modality != "image":
            return list(payloads)
        first = payloads[0]
        out = torch.empty((len(payloads), *first.shape), dtype=first.dtype, pin_memory=self.device.startswith("cuda"))
        return torch.stack(list(payloads), out=out)

    def _forward(self, modality: str, payloads: Any) -> np.ndarray:
        import torch

        if modality == "image":
            batch = payloads if isinstance(payloads, torch.Tensor) else self._collate(modality, payloads)
        else:
            batch = pin(self.tokenizer(list(payloads)), self.device)
        with torch.inference_mode(), self.autocast():
            x = batch.to(self.device, non_blocking=True)
            out = self.model.encode_image(x) if modality == "image" else self.model.encode_text(x)
        return out.float().cpu().numpy()
