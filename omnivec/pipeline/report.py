"""What a run did, in numbers: per-modality counts, stage seconds, throughput."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

COUNT_KEYS = ("new", "changed", "resumed", "unchanged", "deleted", "failed", "pending")


@dataclass(slots=True)
class RunReport:
    run_id: str
    run_name: str
    store: str
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # modality -> kind -> n
    seconds: dict[str, Counter[str]] = field(default_factory=dict)  # modality -> stage -> s
    wall_seconds: float = 0.0
    unavailable: dict[str, str] = field(default_factory=dict)  # space -> reason
    errors_total: int = 0
    tagged: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    links_skipped: int = 0  # symlinked files whose target lies outside the source folders: not read
    drift: dict[str, dict[str, Any]] = field(default_factory=dict)  # space -> canary result, or skipped + reason

    @property
    def drifted(self) -> list[str]:
        return [s for s, d in self.drift.items() if d.get("ok") is False]

    @property
    def canary_skipped(self) -> dict[str, str]:
        """space -> why its drift canary did not run (a space this run wrote no vectors to)."""
        return {s: d.get("reason", "") for s, d in self.drift.items() if d.get("skipped")}

    @property
    def failed(self) -> int:
        return sum(c["failed"] for c in self.counts.values())

    @property
    def embedded(self) -> int:
        return sum(c["new"] + c["changed"] + c["resumed"] for c in self.counts.values())

    def links_line(self) -> str:
        return (f"{self.links_skipped} symlinked file(s) point outside the source folders and were not read; "
                "--follow-links (follow_links = true) reads them")

    def rows(self) -> list[dict[str, Any]]:
        """One row per modality, for tables (Prefect artifact, CLI)."""
        out = []
        for modality in sorted(self.counts):
            c = self.counts[modality]
            secs = sum(self.seconds.get(modality, Counter()).values())
            done = c["new"] + c["changed"] + c["resumed"]
            out.append({"modality": modality, **{k: c[k] for k in COUNT_KEYS},
                        "seconds": round(secs, 2),
                        "items_per_s": round(done / secs, 1) if secs > 0 else None})
        return out

    def to_markdown(self) -> str:
        lines = [f"# omnivec ingest `{self.run_name}`", "",
                 f"Store: `{self.store}`  ", f"Wall time: {self.wall_seconds:.1f} s  ",
                 f"Embedded: {self.embedded}, failed: {self.failed}, "
                 f"errors in store: {self.errors_total}", ""]
        rows = self.rows()
        if rows:
            head = list(rows[0])
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join("" if r[h] is None else str(r[h]) for h in head) + " |"
                      for r in rows]
        if self.links_skipped:
            lines += ["", self.links_line()]
        for space in self.drifted:
            d = self.drift[space]
            lines += ["", f"**Drift canary: space `{space}` re-embedded {d['segments']} stored segments with "
                      f"min cosine {d['min_cosine']}**: something changed how this space computes vectors "
                      "(library, preprocessing, precision) without changing its recipe."]
        if self.canary_skipped:
            lines += ["", "Drift canary skipped: " + "; ".join(
                f"`{space}` ({reason})" for space, reason in sorted(self.canary_skipped.items())) + "."]
        for space, reason in self.unavailable.items():
            lines += ["", f"**Space `{space}` unavailable**; its items stay pending.", "", "```",
                      reason, "```"]
        if self.tagged:
            lines += ["", f"Table versions tagged `{self.run_name}`: "
                      + ", ".join(f"{t}@{v}" for t, v in sorted(self.tagged.items()))]
        return "\n".join(lines)
