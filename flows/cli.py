"""The `omnivec` command line. Only `ingest`, `demo`, `reembed` and `maintain` import Prefect;
search, status and errors stay fast."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from flows.cli_common import (
    ClapOpt,
    ConfigOpt,
    DaskOpt,
    DeviceOpt,
    ModelOpt,
    PrecisionOpt,
    PretrainedOpt,
    RunnerOpt,
    StoreOpt,
    TextOpt,
    ThreadsOpt,
    _Bar,
    _guard,
    _settings,
    app,
    err,
    out,
    plain,
)
from omnivec.config import load_settings
from omnivec.errors import OmnivecError


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="folders (recursive) and files to ingest")],
    store: StoreOpt = None, model: ModelOpt = None, pretrained: PretrainedOpt = None, clap_model: ClapOpt = None,
    text_model: TextOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="items per forward pass")] = None,
    device: DeviceOpt = None, precision: PrecisionOpt = None, threads: ThreadsOpt = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="batches in flight (and local Dask workers)")] = None,
    task_runner: RunnerOpt = None, dask_address: DaskOpt = None,
    include: Annotated[list[str] | None, typer.Option("--include", help="glob a path must match (repeatable)")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="glob that drops a path (repeatable)")] = None,
    include_hidden: Annotated[bool | None, typer.Option("--include-hidden", help="also read hidden files and folders")] = None,
    follow_links: Annotated[bool | None, typer.Option("--follow-links", help="read symlinked files whose target lies outside the sources")] = None,
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
                      task_runner=task_runner, dask_address=dask_address, include=include or None, exclude=exclude or None, include_hidden=include_hidden,
                      follow_links=follow_links, precision=precision, threads=threads)
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
                          "links_skipped": report.links_skipped,
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
        table.add_row(*(plain(v) for v in r.values()))
    out.print(table)
    for space, reason in report.unavailable.items():
        err.print(Text(f"space {space} unavailable; its items stay pending.", "yellow"), plain(reason),
                  sep="\n", highlight=False)
    for space in report.drifted:
        d = report.drift[space]
        err.print(Text(f"drift canary: space {space} re-embedded {d['segments']} stored segments, min cosine "
                       f"{d['min_cosine']}: vectors are no longer computed the way they were stored.", "yellow"),
                  highlight=False)
    for space, reason in sorted(report.canary_skipped.items()):
        out.print(Text(f"drift canary skipped for space {space}: {reason}", "dim"), highlight=False)
    if report.links_skipped:
        err.print(Text(report.links_line(), "yellow"), highlight=False)
    out.print(f"embedded {report.embedded}, failed {report.failed} "
              f"(errors in store: {report.errors_total}; see `omnivec errors`), "
              f"{report.wall_seconds:.1f} s, store {report.store}", highlight=False, markup=False)


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
    text_model: TextOpt = None, device: DeviceOpt = None, precision: PrecisionOpt = None, threads: ThreadsOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Search the store with a text query, an image or an audio file (no Prefect involved)."""

    def body() -> Any:
        from omnivec.query import search as run_search

        if sum(x is not None for x in (query, image, audio)) != 1:
            raise OmnivecError("give one of: a text query, --image FILE, --audio FILE")
        s = _settings(config, store, model, pretrained, device, clap_model, text_model, precision=precision,
                      threads=threads)
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
    table = Table(title=plain(title))
    for col in ("#", "score", "asset", "members", "ranks"):
        table.add_column(col, overflow="fold")
    for i, h in enumerate(hits, 1):
        members = "\n".join(f"{m['modality']}: {m['uri']}" for m in h.members)
        table.add_row(str(i), f"{h.score:.4f}", plain(h.key), plain(members),
                      plain(", ".join(f"{n}#{r}" for n, r in h.ranks.items())))
    out.print(table)


def _print_hits(hits: list[Any], title: str) -> None:
    table = Table(title=plain(title))
    for col in ("#", "score", "modality", "uri", "match", "ranks"):
        table.add_column(col, overflow="fold")
    for i, h in enumerate(hits, 1):
        if h.start_s is not None:
            snippet = f"{h.start_s:.1f}-{h.end_s:.1f} s"
        else:
            snippet = (h.text or "")[:60] + ("..." if h.text and len(h.text) > 60 else "")
        table.add_row(str(i), f"{h.score:.4f}", h.modality, plain(h.uri), plain(snippet),
                      plain(", ".join(f"{n}#{r}" for n, r in h.ranks.items())))
    out.print(table)


@app.command()
def status(store: StoreOpt = None, config: ConfigOpt = None,
           as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Spaces, row counts, last runs and the error count of a store, and whether every table is whole
    (exit code 2 when one is damaged)."""

    def body() -> dict[str, Any]:
        from omnivec.status import store_status

        return store_status(_settings(config, store).store)

    info = _guard(body)
    if as_json:
        print(json.dumps(info, default=str))
    else:
        _print_status(info)
    if info["problems"]:
        raise typer.Exit(2)


def _known(value: Any) -> str:
    return "?" if value is None else str(value)


def _print_status(info: dict[str, Any]) -> None:
    by_status = ", ".join(f"{k} {v}" for k, v in info["items_by_status"].items()) or "none"
    out.print(f"store {info['store']}: {_known(info['items'])} items ({by_status}), {_known(info['errors'])} errors",
              highlight=False, markup=False)
    t = Table(title="spaces")
    for col in ("name", "space_id", "model", "pretrained", "dimension", "vectors", "status"):
        t.add_column(col)
    for sp in info["spaces"]:
        t.add_row(*(plain(sp[k]) for k in ("name", "space_id", "model", "pretrained", "dimension")),
                  _known(sp["vectors"]), plain(sp["status"]))
    out.print(t)
    r = Table(title="last runs")
    for col in ("run", "ended", "seconds", "counts"):
        r.add_column(col)
    for run in info["runs"]:
        r.add_row(plain(run["run_name"]), str(run["ended_at"])[:19], f"{run['seconds'] or 0:.1f}",
                  plain(run["counts"]))
    out.print(r)
    for table, n in info["orphans"].items():
        out.print(f"note: {n} rows of {table} belong to no row of items (a run stopped between its writes: "
                  "the next ingest of those files completes them; or items lost rows)", highlight=False,
                  markup=False)
    if info["problems"]:
        out.print(Text(f"damaged: {len(info['problems'])} table(s) of this store cannot be read as recorded",
                       "bold red"))
        for p in info["problems"]:
            out.print(plain(f"  {p['table']}: " + "; ".join(p["problems"])), soft_wrap=True)
            for i, remedy in enumerate(p["remedies"], 1):
                out.print(plain(f"    {i}. {remedy}"), soft_wrap=True)


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
        t.add_row(plain(row["uri"]), plain(row["stage"]), plain(row["space"]),
                  plain(f"{row['error_class']}: {row['message']}"), str(row["attempts"]))
    out.print(t)


@app.command("sample-corpus")
def sample_corpus(folder: Annotated[Path, typer.Argument(help="where to write the corpus")]) -> None:
    """Write a small generated corpus (shape images, short texts, sounds) to FOLDER."""
    from omnivec.sample import build_sample_corpus

    root = build_sample_corpus(folder)
    out.print(f"sample corpus written to {root}", highlight=False, markup=False)


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
        out.print(f"sample corpus: {corpus} (18 images, 6 texts, {n_audio} audio files)", highlight=False,
                  markup=False)
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


import flows.cli_admin  # noqa: E402, F401  (registers the store commands after the everyday ones)
import flows.cli_api  # noqa: E402, F401


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    handler = logging.StreamHandler(sys.stderr)  # omnivec's own notices (a writer waiting for the lock...)
    handler.setFormatter(logging.Formatter("omnivec: %(message)s"))
    core = logging.getLogger("omnivec")
    core.addHandler(handler)
    core.setLevel(logging.INFO)
    core.propagate = False
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
