"""The `omnivec` command line. Only `ingest` imports Prefect; search/status/errors stay fast."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from omnivec.config import Settings, load_settings
from omnivec.errors import OmnivecError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Turn images, text and audio into versioned vectors in a LanceDB store, and search them.")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="settings file (default ./omnivec.toml)")]
StoreOpt = Annotated[str | None, typer.Option("--store", help="store folder [env OMNIVEC_STORE; default ./omnivec-data]")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="clip space model: open_clip name, hf-hub:org/name or local-dir:/path")]
PretrainedOpt = Annotated[str | None, typer.Option("--pretrained", help="clip space weights: pretrained tag or checkpoint path ('none' = random init)")]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda | mps")]
TextOpt = Annotated[str | None, typer.Option("--text-model", help="text space model: sentence-transformers id or folder")]
ClapOpt = Annotated[str | None, typer.Option("--clap-model", help="clap space model: Hugging Face id or a save_pretrained folder")]


def _settings(config: Path | None, store: str | None = None, model: str | None = None,
              pretrained: str | None = None, device: str | None = None, clap_model: str | None = None,
              text_model: str | None = None, **flat: Any) -> Settings:
    spaces: dict[str, dict[str, Any]] = {"clip": {"model": model, "pretrained": pretrained},
                                         "clap": {"model": clap_model}, "text": {"model": text_model}}
    overrides: dict[str, Any] = {"store": store, "device": device, "spaces": spaces, **flat}
    return load_settings(config, overrides)


def _guard(fn: Callable[[], T]) -> T:
    """Run a command body; user errors become one clear message and exit code 2."""
    try:
        return fn()
    except OmnivecError as exc:
        err.print(f"[bold red]error:[/] {exc.render()}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2) from None


class _Bar:
    """A rich progress bar on stderr, fed by the pipeline's progress hook."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TimeRemainingColumn(), console=err, transient=False)
        self._task: Any = None

    def start(self, total: int, description: str) -> None:
        if total and err.is_terminal:
            self._p.start()
            self._task = self._p.add_task(description, total=total)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._p.advance(self._task, n)

    def stop(self) -> None:
        if self._task is not None:
            self._p.stop()
            self._task = None


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="folders (recursive) and files to ingest")],
    store: StoreOpt = None, model: ModelOpt = None, pretrained: PretrainedOpt = None, clap_model: ClapOpt = None,
    text_model: TextOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="items per forward pass")] = None,
    device: DeviceOpt = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="batches in flight")] = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="glob a path must match (repeatable)")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="glob that drops a path (repeatable)")] = None,
    include_hidden: Annotated[bool | None, typer.Option("--include-hidden", help="also read hidden files and folders")] = None,
    retry_errors: Annotated[bool, typer.Option("--retry-errors", help="retry files that failed before and did not change")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="exit 1 if any file failed or a space was unavailable")] = False,
    local: Annotated[bool, typer.Option("--local", help="run without Prefect (no dashboard record)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the run report as JSON")] = False,
    config: ConfigOpt = None,
) -> None:
    """Ingest folders and files: discover, embed what is new or changed, commit, tag the run."""

    def body() -> Any:
        from omnivec.sources import discover
        from omnivec.store import Store

        s = _settings(config, store, model, pretrained, device, clap_model, text_model, batch_size=batch_size, workers=workers,
                      include=include or None, exclude=exclude or None, include_hidden=include_hidden)
        discover([str(p) for p in paths], s.include, s.exclude, s.include_hidden)  # fail fast, exit 2
        Store(s.store, create=True)
        from omnivec.progress import set_reporter

        set_reporter(_Bar())
        if local:
            from omnivec.pipeline.run import ingest as run_local

            return run_local([str(p) for p in paths], s, retry_errors=retry_errors)
        from flows.ingest import run_ingest_flow

        return run_ingest_flow([str(p) for p in paths], s, retry_errors=retry_errors)

    report = _guard(body)
    if as_json:
        print(json.dumps({"run_name": report.run_name, "run_id": report.run_id, "store": report.store,
                          "modalities": report.rows(), "failed": report.failed,
                          "embedded": report.embedded, "unavailable": report.unavailable, "drift": report.drift,
                          "seconds": round(report.wall_seconds, 3)}))
    else:
        _print_report(report)
    if strict and (report.failed or report.unavailable):
        raise typer.Exit(1)


def _print_report(report: Any) -> None:
    table = Table(title=f"run {report.run_name}")
    rows = report.rows()
    for col in (rows[0] if rows else {"modality": None}):
        table.add_column(col, justify="left" if col == "modality" else "right")
    for r in rows:
        table.add_row(*("" if v is None else str(v) for v in r.values()))
    out.print(table)
    for space, reason in report.unavailable.items():
        err.print(f"[yellow]space {space} unavailable; its items stay pending.[/]\n{reason}", highlight=False)
    for space in report.drifted:
        d = report.drift[space]
        err.print(f"[yellow]drift canary: space {space} re-embedded {d['segments']} stored segments, min cosine "
                  f"{d['min_cosine']}: vectors are no longer computed the way they were stored.[/]", highlight=False)
    out.print(f"embedded {report.embedded}, failed {report.failed} "
              f"(errors in store: {report.errors_total}; see `omnivec errors`), "
              f"{report.wall_seconds:.1f} s, store {report.store}", highlight=False)


@app.command()
def search(
    query: Annotated[str | None, typer.Argument(help="text to search for")] = None,
    image: Annotated[Path | None, typer.Option("--image", help="search with an image file instead")] = None,
    audio: Annotated[Path | None, typer.Option("--audio", help="search with an audio file instead")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, help="number of results")] = 10,
    modality: Annotated[str | None, typer.Option("--modality", help="only results of this modality: image | text | audio")] = None,
    space: Annotated[str | None, typer.Option("--space", help="space to search (default: clap for audio, else clip)")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="search the store as a run (name), a version (number) or a time (ISO-8601) left it")] = None,
    where: Annotated[list[str] | None, typer.Option("--where", help="filter (repeatable): modality=M, uri=GLOB, after=ISO, before=ISO, run=NAME")] = None,
    hybrid: Annotated[bool, typer.Option("--hybrid", help="also rank text chunks by full-text (BM25) search and fuse")] = False,
    assets: Annotated[bool, typer.Option("--assets", help="return assets (grouped files) by their fused vectors")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print results as a JSON list")] = False,
    store: StoreOpt = None, model: ModelOpt = None, pretrained: PretrainedOpt = None, clap_model: ClapOpt = None,
    text_model: TextOpt = None, device: DeviceOpt = None, config: ConfigOpt = None,
) -> None:
    """Search the store with a text query, an image or an audio file (no Prefect involved)."""

    def body() -> Any:
        from omnivec.query import search as run_search

        if sum(x is not None for x in (query, image, audio)) != 1:
            raise OmnivecError("give one of: a text query, --image FILE, --audio FILE")
        s = _settings(config, store, model, pretrained, device, clap_model, text_model)
        if assets:
            from omnivec.query_assets import search_assets

            if where or hybrid or modality or as_of:
                raise OmnivecError("--assets takes no --where, --hybrid, --modality or --as-of")
            return search_assets(query, image=image, audio=audio, k=k, space=space, settings=s)
        return run_search(query, image=image, audio=audio, k=k, modality=modality, space=space, where=where,
                          hybrid=hybrid, as_of=as_of, settings=s)

    hits = _guard(body)
    if as_json:
        print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False))
        return
    title = f"top {len(hits)} for {query!r}" if query else f"top {len(hits)} for {image or audio}"
    if assets:
        _print_assets(hits, title)
    else:
        _print_hits(hits, title)


def _print_assets(hits: list[Any], title: str) -> None:
    table = Table(title=title)
    for col in ("#", "score", "asset", "members", "ranks"):
        table.add_column(col, overflow="fold")
    for i, h in enumerate(hits, 1):
        members = "\n".join(f"{m['modality']}: {m['uri']}" for m in h.members)
        table.add_row(str(i), f"{h.score:.4f}", h.key, members, ", ".join(f"{n}#{r}" for n, r in h.ranks.items()))
    out.print(table)


def _print_hits(hits: list[Any], title: str) -> None:
    table = Table(title=title)
    for col in ("#", "score", "modality", "uri", "match", "ranks"):
        table.add_column(col, overflow="fold")
    for i, h in enumerate(hits, 1):
        if h.start_s is not None:
            snippet = f"{h.start_s:.1f}-{h.end_s:.1f} s"
        else:
            snippet = (h.text or "")[:60] + ("..." if h.text and len(h.text) > 60 else "")
        table.add_row(str(i), f"{h.score:.4f}", h.modality, h.uri, snippet,
                      ", ".join(f"{n}#{r}" for n, r in h.ranks.items()))
    out.print(table)


@app.command()
def status(store: StoreOpt = None, config: ConfigOpt = None,
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Spaces, row counts, last runs and the error count of a store."""

    def body() -> dict[str, Any]:
        from omnivec.status import store_status

        return store_status(_settings(config, store).store)

    info = _guard(body)
    if as_json:
        print(json.dumps(info, default=str))
        return
    out.print(f"store {info['store']}: {info['items']} items "
              f"({', '.join(f'{k} {v}' for k, v in info['items_by_status'].items()) or 'none'}), "
              f"{info['errors']} errors", highlight=False)
    t = Table(title="spaces")
    for col in ("name", "space_id", "model", "pretrained", "dimension", "vectors", "status"):
        t.add_column(col)
    for sp in info["spaces"]:
        t.add_row(sp["name"], sp["space_id"], sp["model"], str(sp["pretrained"]), str(sp["dimension"]),
                  str(sp["vectors"]), sp["status"])
    out.print(t)
    r = Table(title="last runs")
    for col in ("run", "ended", "seconds", "counts"):
        r.add_column(col)
    for run in info["runs"]:
        r.add_row(run["run_name"], str(run["ended_at"])[:19], f"{run['seconds']:.1f}", run["counts"])
    out.print(r)


@app.command()
def errors(store: StoreOpt = None, config: ConfigOpt = None,
           limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Files that could not be read, decoded or embedded, with the reason."""

    def body() -> list[dict[str, Any]]:
        from omnivec.status import store_errors

        return store_errors(_settings(config, store).store, limit)

    rows = _guard(body)
    if as_json:
        print(json.dumps(rows, default=str, ensure_ascii=False))
        return
    t = Table(title=f"{len(rows)} errors")
    for col in ("uri", "stage", "space", "error", "attempts"):
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(row["uri"], row["stage"], row["space"] or "", f"{row['error_class']}: {row['message']}",
                  str(row["attempts"]))
    out.print(t)


spaces_app = typer.Typer(help="List spaces; retire or reactivate one.", invoke_without_command=True,
                         no_args_is_help=False)
app.add_typer(spaces_app, name="spaces")


@spaces_app.callback()
def spaces(ctx: typer.Context, store: StoreOpt = None, config: ConfigOpt = None,
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every space identity in the store: name, space_id, model, dimension, rows, status, created."""
    if ctx.invoked_subcommand is not None:
        return

    def body() -> list[dict[str, Any]]:
        from omnivec.status import list_spaces

        return list_spaces(_settings(config, store).store)

    rows = _guard(body)
    if as_json:
        print(json.dumps(rows, default=str))
        return
    t = Table(title="spaces")
    for col in ("name", "space_id", "model", "pretrained", "dimension", "rows", "status", "default", "created"):
        t.add_column(col, overflow="fold")
    for r in rows:
        t.add_row(r["name"], r["space_id"], r["model"], str(r["pretrained"]), str(r["dimension"]), str(r["rows"]),
                  r["status"], "yes" if r["default"] else "", str(r["created"])[:19])
    out.print(t)


def _set_status(space_id: str, status: str, store: str | None, config: Path | None) -> None:
    def body() -> dict[str, Any]:
        from omnivec.store import Store

        return Store(_settings(config, store).store).set_space_status(space_id, status)

    row = _guard(body)
    out.print(f"space {row['name']} {row['space_id']} ({row['model']}) is now {status}", highlight=False)


@spaces_app.command("retire")
def spaces_retire(space_id: Annotated[str, typer.Argument(help="space_id (or a unique prefix)")],
                  store: StoreOpt = None, config: ConfigOpt = None) -> None:
    """Stop searching a space; its vectors and history stay (undo with `spaces activate`)."""
    _set_status(space_id, "retired", store, config)


@spaces_app.command("promote")
def spaces_promote(space_id: Annotated[str, typer.Argument(help="space_id (or a unique prefix)")],
                   store: StoreOpt = None, config: ConfigOpt = None) -> None:
    """Make a space the default of its name (used unless a model is chosen explicitly)."""

    def body() -> dict[str, Any]:
        from omnivec.store import Store

        return Store(_settings(config, store).store).promote(space_id)

    row = _guard(body)
    out.print(f"space {row['name']} {row['space_id']} ({row['model']}) is now the default", highlight=False)


@spaces_app.command("rollback")
def spaces_rollback(name: Annotated[str, typer.Argument(help="space name (clip, clap, text...)")],
                    store: StoreOpt = None, config: ConfigOpt = None) -> None:
    """Make the previously promoted space of a name the default again."""

    def body() -> dict[str, Any]:
        from omnivec.store import Store

        return Store(_settings(config, store).store).rollback(name)

    row = _guard(body)
    out.print(f"space {row['name']} is back on {row['space_id']} ({row['model']})", highlight=False)


@spaces_app.command("activate")
def spaces_activate(space_id: Annotated[str, typer.Argument(help="space_id (or a unique prefix)")],
                    store: StoreOpt = None, config: ConfigOpt = None) -> None:
    """Make a retired space searchable again."""
    _set_status(space_id, "active", store, config)


@app.command()
def runs(store: StoreOpt = None, config: ConfigOpt = None,
         limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Runs, newest first: name, time, counts and the tables tagged with the run's name."""

    def body() -> list[dict[str, Any]]:
        from omnivec.status import list_runs

        return list_runs(_settings(config, store).store)[:limit]

    rows = _guard(body)
    if as_json:
        print(json.dumps(rows, default=str))
        return
    t = Table(title="runs")
    for col in ("run", "status", "ended", "seconds", "counts", "tagged tables"):
        t.add_column(col, overflow="fold")
    for r in rows:
        counts = "; ".join(f"{m}: " + ", ".join(f"{k} {v}" for k, v in c.items() if v) if isinstance(c, dict)
                           else f"{m}: {c}" for m, c in r["counts"].items())
        t.add_row(r["run_name"], r["status"], str(r["ended_at"])[:19], f"{r['seconds']:.1f}", counts,
                  str(len(r["tagged_tables"])))
    out.print(t)


@app.command()
def restore(to: Annotated[str, typer.Option("--to", help="the run to roll back to (see `omnivec runs`)")],
            store: StoreOpt = None, config: ConfigOpt = None) -> None:
    """Roll every table back to a run's versions, as new versions: history is never destroyed."""

    def body() -> tuple[str, dict[str, int]]:
        from omnivec.store import Store
        from omnivec.store.history import restore as run_restore

        return run_restore(Store(_settings(config, store).store), to)

    tag, restored = _guard(body)
    out.print(f"restored {len(restored)} tables to run {to} (recorded as run {tag}; "
              f"{sum(1 for v in restored.values() if v == 0)} tables created later were emptied)", highlight=False)


@app.command()
def reembed(
    space: Annotated[str, typer.Option("--space", help="the space to re-embed (clip, clap, text...)")],
    model: Annotated[str, typer.Option("--model", help="the new model (what the space's encoder accepts)")],
    pretrained: PretrainedOpt = None,
    store: StoreOpt = None, device: DeviceOpt = None, config: ConfigOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    promote: Annotated[bool, typer.Option("--promote", help="make the new space the default of its name once complete")] = False,
    local: Annotated[bool, typer.Option("--local", help="run without Prefect")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Encode every stored item of a space's modalities into a new space; resumable, the old space stays."""

    def body() -> dict[str, Any]:
        s = _settings(config, store, device=device, batch_size=batch_size)
        from omnivec.progress import set_reporter

        set_reporter(_Bar())
        if local:
            from omnivec.pipeline.reembed import reembed as run_local

            return run_local(s, space, model, pretrained, promote)
        from flows.reembed import run_reembed_flow

        return run_reembed_flow(s, space, model, pretrained, promote)

    result = _guard(body)
    if as_json:
        print(json.dumps(result))
        return
    out.print(f"space {result['space']}: new space_id {result['space_id']} ({result['table']}); "
              f"{result['to_embed']} items embedded, {result['already_embedded']} already done, "
              f"{result['failed']} failed; run {result['run_name']}"
              + ("; promoted to the default" if result.get("promoted") else ""), highlight=False)


@app.command()
def maintain(store: StoreOpt = None, config: ConfigOpt = None,
             retention_days: Annotated[float, typer.Option("--retention-days", min=0, help="keep untagged versions younger than this")] = 30.0,
             index_threshold: Annotated[int, typer.Option("--index-threshold", min=1, help="build an ANN index on vector tables with at least this many rows")] = 100_000,
             local: Annotated[bool, typer.Option("--local", help="run without Prefect")] = False,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Compact tables, build/refresh indices, remove untagged versions past the retention period."""

    def body() -> list[dict[str, Any]]:
        from omnivec.store import Store

        uri = Store(_settings(config, store).store).uri
        if local:
            from omnivec.maintenance import maintain as run_local

            return [r.to_dict() for r in run_local(uri, retention_days, index_threshold)]
        from flows.maintain import maintain_flow

        return maintain_flow(store=uri, retention_days=retention_days, index_threshold=index_threshold)

    rows = _guard(body)
    if as_json:
        print(json.dumps(rows))
        return
    t = Table(title="maintain")
    for col in ("table", "rows", "fragments", "versions", "vector index", "bytes freed", "s"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["table"], str(r["rows"]), f"{r['fragments_before']} -> {r['fragments_after']}",
                  f"{r['versions_before']} -> {r['versions_after']}", r["vector_index"], f"{r['bytes_removed']:,}",
                  f"{r['seconds']:.2f}")
    out.print(t)


@app.command("sample-corpus")
def sample_corpus(folder: Annotated[Path, typer.Argument(help="where to write the corpus")]) -> None:
    """Write a small generated corpus (shape images, short texts) to FOLDER."""
    from omnivec.sample import build_sample_corpus

    root = build_sample_corpus(folder)
    out.print(f"sample corpus written to {root}", highlight=False)


@app.command()
def demo(
    folder: Annotated[Path, typer.Option("--dir", help="where the corpus, model and store go")] = Path("omnivec-demo"),
    query: Annotated[str, typer.Option("--query", help="the search to run after ingesting")] = "a red circle",
    audio_query: Annotated[str, typer.Option("--audio-query", help="a text search over the audio")] = "a pure sine tone",
    local: Annotated[bool, typer.Option("--local", help="run without Prefect")] = False,
) -> None:
    """Build a sample corpus, ingest it through the Prefect flow, and run two searches."""

    def body() -> list[tuple[str, list[Any]]]:
        from omnivec.pipeline.spaces import load_spaces
        from omnivec.sample import build_sample_corpus
        from omnivec.testing import make_tiny_clap, make_tiny_open_clip

        corpus = build_sample_corpus(folder / "corpus")
        n_audio = len(list((corpus / "audio").iterdir()))
        out.print(f"sample corpus: {corpus} (18 images, 6 texts, {n_audio} audio files)", highlight=False)
        s = load_settings(overrides={"store": str(folder / "store")})
        states = load_spaces(s)
        tiny: dict[str, Any] = {}
        if states["clip"].unavailable:
            tiny["clip"] = {"model": f"local-dir:{make_tiny_open_clip(folder / 'tiny-open-clip')}"}
        if states["clap"].unavailable:
            tiny["clap"] = {"model": str(make_tiny_clap(folder / "tiny-clap"))}
        if tiny:
            err.print(f"[yellow]The default model of space(s) {', '.join(tiny)} is not available offline, so "
                      "this demo uses tiny randomly initialised models there: the pipeline is real, their "
                      "ranking is not meaningful.[/] Run once with network access (or pass --model / "
                      "--clap-model to `omnivec ingest`) for real results.", highlight=False)
            s = load_settings(overrides={"store": str(folder / "tiny-store"), "spaces": tiny})
        from omnivec.progress import set_reporter

        set_reporter(_Bar())
        if local:
            from omnivec.pipeline.run import ingest as run_local

            report = run_local([str(corpus)], s)
        else:
            from flows.ingest import run_ingest_flow

            report = run_ingest_flow([str(corpus)], s)
        _print_report(report)
        from omnivec.query import search as run_search

        return [(f"top 5 for {query!r} (every space, fused)", run_search(query, k=5, settings=s)),
                (f"top 3 audio for {audio_query!r}", run_search(audio_query, k=3, modality="audio", settings=s))]

    for title, hits in _guard(body):
        _print_hits(hits, title)


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
