"""The enabled spaces: their identities, their encoders when a run needs them, which are unavailable and why."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from omnivec.config import Settings, SpaceSettings
from omnivec.encoders import encoder_class, is_loaded, known_identity, load_encoder
from omnivec.errors import ModelUnavailableError
from omnivec.store.schema import SPACES, vectors_table_name
from omnivec.store.store import Store

log = logging.getLogger("omnivec")


@dataclass(frozen=True, slots=True)
class SpaceState:
    """What a run knows about one space: its modalities and, when its model can load, its identity."""

    name: str
    modalities: frozenset[str]
    space_id: str | None = None  # None: the model could not be loaded
    dimension: int | None = None
    recipe: dict = field(default_factory=dict)
    unavailable: str | None = None  # the reason, with remedies

    @property
    def available(self) -> bool:
        return self.space_id is not None

    @property
    def table(self) -> str | None:
        return vectors_table_name(self.name, self.space_id) if self.space_id else None


def _load_state(name: str, cfg: SpaceSettings, device: str) -> SpaceState:
    modalities = encoder_class(cfg.encoder).modalities
    try:
        enc = load_encoder(cfg, device)
    except ModelUnavailableError as exc:
        return SpaceState(name, modalities, unavailable=exc.render())
    return SpaceState(name, modalities, enc.space_id, enc.dimension, enc.recipe)


def load_spaces(settings: Settings) -> dict[str, SpaceState]:
    """Load every enabled space's encoder once; a model that cannot load leaves its space
    unavailable (its items stay pending) instead of failing the run."""
    return {name: _load_state(name, cfg, settings.device) for name, cfg in settings.enabled_spaces().items()}


def identify_spaces(settings: Settings) -> tuple[dict[str, SpaceState], set[str]]:
    """Every enabled space's state, like :func:`load_spaces`, but a space whose identity is known without
    its model (:func:`omnivec.encoders.known_identity`) is not loaded here; returns the states and the
    names of those spaces, for :func:`load_deferred` once the run knows it has files for them."""
    states: dict[str, SpaceState] = {}
    deferred: set[str] = set()
    for name, cfg in settings.enabled_spaces().items():
        ident = known_identity(cfg, settings.device)
        if ident is None:
            states[name] = _load_state(name, cfg, settings.device)
            continue
        states[name] = SpaceState(name, encoder_class(cfg.encoder).modalities, ident.space_id, ident.dimension,
                                  ident.recipe)
        if not is_loaded(cfg, settings.device):
            deferred.add(name)
    return states, deferred


def load_deferred(states: dict[str, SpaceState], names: set[str], settings: Settings) -> dict[str, SpaceState]:
    """``states`` with the spaces ``names`` loaded: each as :func:`load_spaces` would give it (unavailable
    when its model cannot load after all; the identity its load computes)."""
    out = dict(states)
    for name in sorted(names):
        out[name] = _load_state(name, settings.spaces[name], settings.device)
        if out[name].available and out[name].space_id != states[name].space_id:
            log.warning("space %s: its model loaded as space_id %s, not the %s its files and libraries "
                        "promised; using the loaded one", name, out[name].space_id, states[name].space_id)
    return out


def register_spaces(store: Store, states: dict[str, SpaceState], settings: Settings) -> None:
    """Create each loaded space's table and `spaces` row. A model whose recipe differs from what a
    name held before is a new space (new space_id, new table); the old one stays searchable."""
    now = datetime.now(UTC)
    rows = []
    known = {r["space_id"] for r in store.space_rows()}
    has_default = {r["name"] for r in store.space_rows() if r["status"] == "active"}
    for st in states.values():
        if not st.available:
            continue
        assert st.space_id is not None and st.dimension is not None
        store.vectors_table(st.name, st.space_id, st.dimension, st.recipe)
        if st.space_id not in known:
            cfg = settings.spaces[st.name]
            rows.append({
                "name": st.name, "space_id": st.space_id, "encoder": cfg.encoder,
                "model": cfg.model, "pretrained": cfg.pretrained, "dimension": st.dimension,
                "modalities": sorted(st.modalities), "recipe": json.dumps(st.recipe, sort_keys=True),
                "table_name": vectors_table_name(st.name, st.space_id), "status": "active", "created_at": now,
                "settings": cfg.model_dump_json(), "is_default": st.name not in has_default,
                "default_since": now if st.name not in has_default else None,
            })
    if rows:
        store.upsert("spaces", pa.Table.from_pylist(rows, schema=SPACES))


def resolve_spaces(settings: Settings, store: Store) -> Settings:
    """Spaces whose model the user did not choose follow the store's default space for their name
    (the first space of the name, or the one promoted after a reembed)."""
    out = settings
    for name, cfg in settings.spaces.items():
        if settings.pinned(name):
            continue
        row = store.default_space(name)
        if row is None or not row.get("settings"):
            continue
        stored = SpaceSettings.model_validate_json(row["settings"])
        out = out.with_space(name, stored.model_copy(update={"enabled": cfg.enabled, "batch_size": cfg.batch_size}),
                             pinned=False)
    return out
