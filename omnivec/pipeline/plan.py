"""Compare what discovery found with what the store holds: new, changed, unchanged, deleted."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from omnivec.pipeline.spaces import SpaceState
from omnivec.sources import Discovery, SourceFile
from omnivec.store.store import Store


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One file a batch must read: hashed, and decoded + embedded for ``spaces`` if needed."""

    uri: str
    item_id: str
    modality: str
    size: int
    mtime_ns: int
    spaces: tuple[str, ...]  # spaces that take this modality
    prev_hash: str | None = None  # content hash the store holds for it
    have: tuple[str, ...] = ()  # spaces whose vectors match prev_hash
    first_run: str | None = None
    kind: str = "new"  # new | changed | resumed (had no vectors in some space)
    inside: tuple[str, ...] | None = None  # real paths the file must resolve into when read (None: any)


@dataclass(slots=True)
class Deleted:
    item_id: str
    uri: str
    modality: str


@dataclass(slots=True)
class Plan:
    work: dict[str, list[WorkItem]] = field(default_factory=dict)  # modality -> items to read
    unchanged: Counter[str] = field(default_factory=Counter)
    deleted: list[Deleted] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)
    solved: list[str] = field(default_factory=list)  # item_ids whose discovery problem is gone

    def count(self, kind: str) -> Counter[str]:
        return Counter(w.modality for items in self.work.values() for w in items if w.kind == kind)

    @property
    def total_work(self) -> int:
        return sum(len(v) for v in self.work.values())


def make_plan(
    discovery: Discovery,
    store: Store,
    spaces: dict[str, SpaceState],
    retry_errors: bool = False,
) -> Plan:
    """Decide per file what this run must do. Unchanged files (same size and mtime) cost only
    the stat already made; files whose stat changed are hashed later to confirm."""
    items = store.read("items", ["item_id", "uri", "modality", "content_hash", "size", "mtime_ns",
                                 "status", "first_run"]).to_pylist()
    known = {r["item_id"]: r for r in items}
    embedded = {name: store.embedded_hashes(name, st.space_id) if st.space_id else {} for name, st in spaces.items()}
    plan = Plan(problems=list(discovery.problems))
    seen: set[str] = set()

    def takers(modality: str) -> tuple[str, ...]:
        return tuple(n for n, s in spaces.items() if modality in s.modalities)

    for f in discovery.files:
        item_id = f.item_id
        seen.add(item_id)
        wanted = takers(f.modality)
        row = known.get(item_id)
        if row is None:
            _add(plan, f, item_id, wanted, kind="new", inside=discovery.inside)
            continue
        prev = row["content_hash"]
        have = tuple(n for n in wanted if prev is not None and embedded[n].get(item_id) == prev)
        runnable = {n for n in wanted if spaces[n].available}
        same_stat = row["size"] == f.size and row["mtime_ns"] == f.mtime_ns
        if same_stat and (row["status"] == "error" and not retry_errors or runnable <= set(have)):
            plan.unchanged[f.modality] += 1  # quarantined failures are not retried unless asked
            continue
        kind = "resumed" if same_stat else "changed"
        _add(plan, f, item_id, wanted, kind, row["content_hash"], have, row["first_run"], discovery.inside)
    for row in items:
        if row["item_id"] not in seen and discovery.owns(row["uri"]):
            plan.deleted.append(Deleted(row["item_id"], row["uri"], row["modality"]))
    now = {uri for uri, _ in plan.problems}
    for row in store.read("errors", ["item_id", "uri"], where="stage = 'discover'").to_pylist():
        if row["uri"] not in now and discovery.owns(row["uri"]):  # a dangling link removed or mended
            plan.solved.append(row["item_id"])
    return plan


def _add(plan: Plan, f: SourceFile, item_id: str, wanted: tuple[str, ...], kind: str,
         prev_hash: str | None = None, have: tuple[str, ...] = (), first_run: str | None = None,
         inside: tuple[str, ...] | None = None) -> None:
    plan.work.setdefault(f.modality, []).append(
        WorkItem(f.uri, item_id, f.modality, f.size, f.mtime_ns, wanted, prev_hash, have, first_run, kind, inside)
    )
