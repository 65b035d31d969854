"""`omnivec` commands that look after a store: spaces, runs, restore, reembed, maintain."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

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
    out,
    plain,
)

spaces_app = typer.Typer(help="List spaces; retire, activate, promote or roll back one.", invoke_without_command=True,
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
        t.add_row(*(plain(r[k]) for k in ("name", "space_id", "model", "pretrained", "dimension", "rows", "status")),
                  "yes" if r["default"] else "", str(r["created"])[:19])
    out.print(t)


def _space_op(store: str | None, config: Path | None, op: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Run one change on the `spaces` table of the configured store; user errors exit 2."""

    def body() -> dict[str, Any]:
        from omnivec.store import Store

        return op(Store(_settings(config, store).store))

    return _guard(body)


def _set_status(space_id: str, status: str, store: str | None, config: Path | None) -> None:
    row = _space_op(store, config, lambda st: st.set_space_status(space_id, status))
    out.print(f"space {row['name']} {row['space_id']} ({row['model']}) is now {status}", highlight=False, markup=False)


@spaces_app.command("retire")
def spaces_retire(space_id: Annotated[str, typer.Argument(help="space_id (or a unique prefix)")],
                  store: StoreOpt = None, config: ConfigOpt = None) -> None:
    """Stop searching a space; its vectors and history stay (undo with `spaces activate`)."""
    _set_status(space_id, "retired", store, config)


@spaces_app.command("promote")
def spaces_promote(space_id: Annotated[str, typer.Argument(help="space_id (or a unique prefix)")],
                   store: StoreOpt = None, config: ConfigOpt = None) -> None:
    """Make a space the default of its name (used unless a model is chosen explicitly)."""
    row = _space_op(store, config, lambda st: st.promote(space_id))
    out.print(f"space {row['name']} {row['space_id']} ({row['model']}) is now the default", highlight=False,
              markup=False)


@spaces_app.command("rollback")
def spaces_rollback(name: Annotated[str, typer.Argument(help="space name (clip, clap, text...)")],
                    store: StoreOpt = None, config: ConfigOpt = None) -> None:
    """Make the previously promoted space of a name the default again."""
    row = _space_op(store, config, lambda st: st.rollback(name))
    out.print(f"space {row['name']} is back on {row['space_id']} ({row['model']})", highlight=False, markup=False)


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
        t.add_row(plain(r["run_name"]), plain(r["status"]), str(r["ended_at"])[:19], f"{r['seconds'] or 0:.1f}",
                  plain(counts), str(len(r["tagged_tables"])))
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
              f"{sum(1 for v in restored.values() if v == 0)} tables created later were emptied)", highlight=False,
              markup=False)


@app.command()
def reembed(
    space: Annotated[str, typer.Option("--space", help="the space to re-embed (clip, clap, text...)")],
    model: Annotated[str, typer.Option("--model", help="the new model (what the space's encoder accepts)")],
    pretrained: PretrainedOpt = None,
    store: StoreOpt = None, device: DeviceOpt = None, precision: PrecisionOpt = None, threads: ThreadsOpt = None,
    config: ConfigOpt = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1)] = None,
    promote: Annotated[bool, typer.Option("--promote", help="make the new space the default of its name once complete")] = False,
    local: Annotated[bool, typer.Option("--local", help="run without Prefect")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="batches in flight (and local Dask workers)")] = None,
    task_runner: RunnerOpt = None, dask_address: DaskOpt = None,
) -> None:
    """Encode every stored item of a space's modalities into a new space; resumable, the old space stays."""

    def body() -> dict[str, Any]:
        s = _settings(config, store, device=device, batch_size=batch_size, workers=workers,
                      task_runner=task_runner, dask_address=dask_address, precision=precision, threads=threads)
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
              + ("; promoted to the default" if result.get("promoted") else ""), highlight=False, markup=False)


@app.command()
def maintain(store: StoreOpt = None, config: ConfigOpt = None,
             retention_days: Annotated[float, typer.Option("--retention-days", min=0, help="keep untagged versions younger than this")] = 30.0,
             index_threshold: Annotated[int, typer.Option("--index-threshold", min=1, help="build an ANN index on vector tables with at least this many rows")] = 100_000,
             local: Annotated[bool, typer.Option("--local", help="run without Prefect")] = False,
             as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Compact tables, build/refresh indices, remove untagged versions past the retention period."""

    def body() -> list[dict[str, Any]]:
        from omnivec.maintenance import retention
        from omnivec.store import Store

        retention(retention_days)  # refused before the store is locked or a flow starts
        uri = Store(_settings(config, store).store).uri
        if local:
            from omnivec.maintenance import maintain as run_local

            return [r.to_dict() for r in run_local(uri, retention_days, index_threshold)]
        from flows import temporary_server
        from flows.maintain import maintain_flow

        with temporary_server.for_flow_runs():
            return maintain_flow(store=uri, retention_days=retention_days, index_threshold=index_threshold)

    rows = _guard(body)
    if as_json:
        print(json.dumps(rows))
        return
    t = Table(title="maintain")
    for col in ("table", "rows", "fragments", "versions", "vector index", "bytes freed", "s"):
        t.add_column(col)
    for r in rows:
        t.add_row(plain(r["table"]), str(r["rows"]), f"{r['fragments_before']} -> {r['fragments_after']}",
                  f"{r['versions_before']} -> {r['versions_after']}", r["vector_index"], f"{r['bytes_removed']:,}",
                  f"{r['seconds']:.2f}")
    out.print(t)




@app.command("serve")
def serve_cmd(
    sources: Annotated[list[Path], typer.Argument(help="folders and files the scheduled ingest reads")],
    store: StoreOpt = None, model: ModelOpt = None, pretrained: PretrainedOpt = None, clap_model: ClapOpt = None,
    text_model: TextOpt = None, device: DeviceOpt = None, config: ConfigOpt = None,
    cron: Annotated[str, typer.Option("--cron", help="ingest schedule (cron)")] = "*/30 * * * *",
    maintain_cron: Annotated[str, typer.Option("--maintain-cron", help="maintain schedule (cron)")] = "0 3 * * *",
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="batches in flight (and local Dask workers)")] = None,
    task_runner: RunnerOpt = None, dask_address: DaskOpt = None,
) -> None:
    """Serve the ingest (scheduled), maintain (nightly) and reembed (manual) deployments; needs a Prefect server."""

    def body() -> None:
        from omnivec.sources import discover

        s = _settings(config, store, model, pretrained, device, clap_model, text_model, workers=workers,
                      task_runner=task_runner, dask_address=dask_address)
        discover([str(p) for p in sources], s.include, s.exclude, s.include_hidden)  # fail fast, exit 2
        from flows.serve import require_server, serve

        require_server()
        out.print(f"serving ingest ({cron}), maintain ({maintain_cron}) and reembed for store {s.store}; "
                  "Ctrl-C to stop (schedules stay active)", highlight=False, markup=False)
        serve([str(p) for p in sources], s, cron, maintain_cron)

    _guard(body)
