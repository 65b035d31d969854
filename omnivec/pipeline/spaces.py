"""Load the encoders of the enabled spaces, recording which are unavailable and why."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa

from omnivec.config import Settings, SpaceSettings
from omnivec.encoders import encoder_class, load_encoder
from omnivec.errors import ModelUnavailableError
from omnivec.store.schema import SPACES, vectors_table_name
from omnivec.store.store import Store


@dataclass(frozen=True, slots=True)
class SpaceState:
    """What a run knows about one space: its modalities and, when loaded, its identity."""

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


def load_spaces(settings: Settings) -> dict[str, SpaceState]:
    """Load every enabled space's encoder once; a model that cannot load leaves its space
    unavailable (its items stay pending) instead of failing the run."""
    states: dict[str, SpaceState] = {}
    for name, cfg in settings.enabled_spaces().items():
        modalities = encoder_class(cfg.encoder).modalities
        try:
            enc = load_encoder(cfg, settings.device)
        except ModelUnavailableError as exc:
            states[name] = SpaceState(name, modalities, unavailable=exc.render())
            continue
        states[name] = SpaceState(name, modalities, enc.space_id, enc.dimension, enc.recipe)
    return states


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
