"""What every `omnivec` command shares: the app, options, settings from flags, errors, progress."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

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
RunnerOpt = Annotated[str | None, typer.Option("--task-runner", help="where batches run: threads | dask [env OMNIVEC_TASK_RUNNER]")]
DaskOpt = Annotated[str | None, typer.Option("--dask-address", help="join this Dask scheduler (tcp://host:8786) instead of starting a local cluster [env OMNIVEC_DASK_ADDRESS]")]
ClapOpt = Annotated[str | None, typer.Option("--clap-model", help="clap space model: Hugging Face id or a save_pretrained folder")]
PrecisionOpt = Annotated[str | None, typer.Option("--precision", help="fp32 | bf16 | fp16 (GPU autocast) | int8 (CPU, dynamic quantisation); part of a space's identity; default: a stored space's own, fp32 for a new one [env OMNIVEC_PRECISION]")]
ThreadsOpt = Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads [env OMNIVEC_THREADS; default: the usable cores]")]


def _settings(config: Path | None, store: str | None = None, model: str | None = None,
              pretrained: str | None = None, device: str | None = None, clap_model: str | None = None,
              text_model: str | None = None, **flat: Any) -> Settings:
    spaces: dict[str, dict[str, Any]] = {"clip": {"model": model, "pretrained": pretrained},
                                         "clap": {"model": clap_model}, "text": {"model": text_model}}
    overrides: dict[str, Any] = {"store": store, "device": device, "spaces": spaces, **flat}
    return load_settings(config, overrides)


def plain(value: Any) -> Text:
    """User text (a uri, a model name, a message) as rich shows it: verbatim, never read as markup
    (a file named ``[bold]x.txt``, a remedy naming ``[spaces.clap]``)."""
    return Text("" if value is None else str(value))


def _guard(fn: Callable[[], T]) -> T:
    """Run a command body; user errors become one clear message and exit code 2."""
    try:
        return fn()
    except OmnivecError as exc:
        err.print(Text.assemble(("error:", "bold red"), " ", exc.render()), highlight=False, soft_wrap=True)
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


