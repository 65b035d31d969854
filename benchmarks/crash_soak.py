"""Crash soak: SIGKILL writers at random moments, let the next run finish, compare with a clean run.

The promise under test: whatever happens to a run, the store afterwards equals what one clean run
would have produced, with nothing lost, duplicated or corrupted.

Each trial copies a starting store (empty, or a store that already ingested an earlier version of the
corpus, so that the run also deletes, changes, fixes and breaks files), starts ``omnivec ingest`` in a
subprocess (the CLI with ``--local``; in the first ``--flow-trials`` trials, the Prefect flow on a
temporary server) and SIGKILLs its whole process group, 1 to ``--kills`` times, then runs the ingest to
completion (CLI, ``--local``) and compares the store with a reference store that a clean run of the
same corpus produced:

* the same items (uri, modality, content_hash, size, mtime, status), errors (error_id, stage, class,
  message, attempts), spaces, assets and asset vectors;
* the same vectors bit for bit (sorted by vector_id; ``--batch-size 1`` makes every forward pass a
  single segment, so a vector does not depend on which other items a resumed run batches it with);
* the same search results (a hybrid search: vector and full-text), the same table schemas, a full-text
  index that covers every row;
* and on its own: no duplicate key in any table at its latest version or at any tagged version, every
  table readable at every tag, errors that match the items (no error rows for files that are now ok,
  none missing for failed files), vectors only for stored, readable content, and a runs log whose
  every run has its tag on every table it recorded;
* right after each killed ingest, before any recovery: a search over the store returns no hit whose
  vector row no `items` row covers; after a kill between a commit's vector merge and its items merge,
  the next writer (an ingest of another folder, or ``maintain --local``, on a copy) leaves no vector
  row that no `items` row covers.

``--other-trials`` of the trials (default 6, spread over the soak) kill ``omnivec maintain --local``,
``omnivec reembed --local`` or ``omnivec restore --to RUN`` instead, on a store an ingest left, then
run the same command to completion and compare with a clean run of it (``soak_targets.py`` says what
"equal" means for each).

A kill is either timed (a delay drawn over the span of the clean run's store writes, counted from
the run's first write, since start-up time varies a lot) or aimed at a store write (the child kills
itself during its N-th write, MS ms in or at its last instant if it is shorter, or right after it:
a merge, delete, table creation, key declaration, index build or tag; for maintain and restore also
a compaction, vector index build or refresh, version cleanup or table restore), so that kills land
inside commits and between the steps of a commit; a fifth of an ingest's random kills are aimed
right after a commit's vector merge (``merge:vectors#K@after``). The child is this script in ``child`` mode: it traces
every store write and phase to a file (what was in flight when it died), then runs the CLI.
``--flush-rows`` makes the committer flush small groups of rows, so a run makes many commits.
The drift canary (read-only) is off unless ``--canary``.

    .venv/bin/python benchmarks/crash_soak.py                    # 20 trials (2 through the flow, 6 not ingests)
    .venv/bin/python benchmarks/crash_soak.py --trials 40 --flow-trials 0 --seed 7
    .venv/bin/python benchmarks/crash_soak.py --trials 1 --other-trials 0 --aim 'merge:items#1@during+0'
    .venv/bin/python benchmarks/crash_soak.py --trials 1 --flow-trials 0 --other restore --other-trials 1 \
        --aim 'restore:items#1@after'

Prints a table of kills and trials and a summary line; exits 1 on any mismatch.

The parts live in five files: this one (launching and killing the children, the trials, the
command line), ``soak_corpus.py`` (the corpus, version 1 and 2), ``soak_trace.py`` (the child's
tracer and reading its trace), ``soak_compare.py`` (comparing a store with a clean one, the
invariants any store must hold, the searches, and the checks right after a kill) and
``soak_targets.py`` (maintain, reembed and restore as targets).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
HERE = Path(__file__).resolve().parent  # soak_trace.py, soak_compare.py (this file is loaded by path or run)
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import soak_targets  # noqa: E402
from soak_compare import QUERY, check, check_killed, compare, ingest_here, invariants, settings_for  # noqa: E402, F401
from soak_corpus import build_corpus, mutate_corpus  # noqa: E402
from soak_targets import TARGETS  # noqa: E402
from soak_trace import Trace, Tracer, in_flight, install_tracer, read_trace  # noqa: E402

# ----------------------------------------------------------------------------------------------
# child: run the CLI with the tracer of soak_trace.py installed
# ----------------------------------------------------------------------------------------------


def child_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="crash_soak.py child")
    ap.add_argument("--trace", required=True)
    ap.add_argument("--flush-rows", type=int, default=0)
    ap.add_argument("--die-at", default="", help="N (the N-th store write) or kind:table#k")
    ap.add_argument("--die-when", choices=("during", "after"), default="during")
    ap.add_argument("--die-ms", type=float, default=0.0, help="during: ms after the write starts")
    ap.add_argument("cli", nargs=argparse.REMAINDER, help="-- then the omnivec command line")
    a = ap.parse_args(argv)
    cli = a.cli[1:] if a.cli[:1] == ["--"] else a.cli
    if "--local" not in cli:
        import tasks.ingest  # noqa: F401  (so its prepare/finish get traced too)
    install_tracer(Tracer(a.trace, a.die_at, a.die_when, a.die_ms), a.flush_rows)
    sys.argv = ["omnivec", *cli]
    from flows.cli import main

    main()


# ----------------------------------------------------------------------------------------------
# parent: launch and kill (the trace is read by soak_trace.py)
# ----------------------------------------------------------------------------------------------


@dataclass
class Launch:
    rc: int | None
    killed: bool
    trace: Trace
    point: str
    category: str
    what: str
    seconds: float
    stderr: str = ""
    window: bool = False  # died between a commit's vector merge and its items merge


def child_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMNIVEC_") and k != "PREFECT_API_URL"}
    env.update({"OMNIVEC_SPACES__TEXT__ENABLED": "false", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "PREFECT_HOME": str(workdir / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_LOGGING_TO_API_ENABLED": "false", "PYTHONPATH": str(ROOT)})
    return env


def ingest_args(ws: Workspace, store: Path, flow: bool = False) -> list[str]:
    args = ["ingest", str(ws.corpus), "--store", str(store), "--model", f"local-dir:{ws.clip}",
            "--batch-size", str(ws.batch_size), "--workers", "2", "--json"]
    if ws.clap:
        args += ["--clap-model", str(ws.clap)]
    return args if flow else [*args, "--local"]


def command_args(ws: Workspace, scenario: str, store: Path, flow: bool = False) -> list[str]:
    """The command line of a scenario: an ingest (``fresh``, ``incremental``) or another target."""
    if scenario in TARGETS:
        return soak_targets.command(scenario, store, ws.clip2, ws.restore_to, ws.batch_size)
    return ingest_args(ws, store, flow)


def start_child(ws: Workspace, store: Path, trace: Path, flow: bool = False, die_at: str = "",
                die_when: str = "during", die_ms: float = 0.0, scenario: str = "fresh") -> subprocess.Popen[str]:
    trace.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "child", "--trace", str(trace),
           "--flush-rows", str(ws.flush_rows)]
    if die_at:
        cmd += ["--die-at", die_at, "--die-when", die_when, "--die-ms", f"{die_ms:.1f}"]
    cmd += ["--", *command_args(ws, scenario, store, flow)]
    env = child_env(ws.root)
    if not ws.canary:
        env["OMNIVEC_CANARY_SAMPLE"] = "0"
    if not ws.clap:
        env["OMNIVEC_SPACES__CLAP__ENABLED"] = "false"
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish_child(proc: subprocess.Popen[str], trace: Path, t0: float, point: str, timeout: float = 900) -> Launch:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        return Launch(proc.returncode, False, read_trace(trace), point, "hung", f"no exit after {timeout:.0f} s",
                      time.monotonic() - t0, err[-2000:])
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group (a Prefect server)
    tr = read_trace(trace)
    killed = proc.returncode == -signal.SIGKILL
    cat, what = in_flight(tr, finished=not killed)
    if not killed and proc.returncode != 0:
        cat, what = "failed", f"exit {proc.returncode}"
    return Launch(proc.returncode, killed, tr, point, cat, what, time.monotonic() - t0, err[-2000:],
                  killed and tr.ghost_window)


def start_aimed(ws: Workspace, store: Path, trace: Path, aim: str, flow: bool = False,
                scenario: str = "fresh") -> tuple[subprocess.Popen[str], str]:
    """Start a run that kills itself at ``aim``: ``kind:table#k[@after|@during+MS]`` (the k-th
    write of that kind on a table whose name starts with ``table``; during it, MS ms after it starts,
    or right after it). ``merge:vectors#k@after`` dies between a commit's vector and items merges."""
    target, _, how = aim.partition("@")
    when, _, after_ms = (how or "during+0").partition("+")
    proc = start_child(ws, store, trace, flow, target, when, float(after_ms or 0), scenario)
    return proc, f"{target} {when}" + (f" +{after_ms or 0}ms" if when == "during" else "")


def run_killed(ws: Workspace, store: Path, trace: Path, rng: random.Random, flow: bool = False,
               aim: str = "", scenario: str = "fresh", done: int = 0, merged: int = 0) -> Launch:
    """One run of a scenario's command killed at a random moment: timed, aimed at a store write (``aim``:
    a given one, ``kind:table#k[@after|@during+MS]``), or for an ingest, right after a commit's vector
    merge. Write numbers are drawn from the clean run of the same scenario (less the ``done`` writes of
    earlier kills on this store, plus the writes every run makes), vector merges likewise (less the
    ``merged`` ones of earlier kills), delays from the span of its writes (for the flow: of the clean
    flow run's)."""
    ref = ws.ref_by.get(scenario, Trace())
    span = (ws.ref_flow if flow else ref).work_seconds
    t0 = time.monotonic()
    if aim:
        proc, point = start_aimed(ws, store, trace, aim, flow, scenario)
        return finish_child(proc, trace, t0, point)
    draw = rng.random()
    merges = len(vector_merges(ref))
    if draw < 0.2 and scenario not in TARGETS and merges:  # between a commit's vector and items merges
        k = rng.randint(1, max(1, merges - merged))
        proc, point = start_aimed(ws, store, trace, f"merge:vectors#{k}@after", flow, scenario)
        return finish_child(proc, trace, t0, point)
    if draw < 0.6 and ref.ops:
        n = rng.randint(1, min(len(ref.ops), max(8, len(ref.ops) - done + 12)))
        when = rng.choice(("during", "during", "after"))
        op = ref.ops[n - 1]
        ms = rng.uniform(0, max(1.0, 1000 * ((op.end or op.begin) - op.begin))) if when == "during" else 0.0
        point = f"write #{n} {when}" + (f" +{ms:.0f}ms" if when == "during" else "")
        proc = start_child(ws, store, trace, flow, str(n), when, ms, scenario)
        return finish_child(proc, trace, t0, point)
    delay = rng.uniform(0, span)
    proc = start_child(ws, store, trace, flow, scenario=scenario)
    point = f"t+{delay:.2f}s"
    while proc.poll() is None:  # the clock starts at the run's first store write (start-up time varies a lot)
        if read_trace(trace).first_write is not None:
            time.sleep(delay)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    return finish_child(proc, trace, t0, point)


def vector_merges(trace: Trace) -> list[Any]:
    """The vector merges a run finished."""
    return [o for o in trace.ops if o.kind == "merge" and o.table.startswith("vectors_") and o.end is not None]


# ----------------------------------------------------------------------------------------------
# the soak
# ----------------------------------------------------------------------------------------------


@dataclass
class Workspace:
    root: Path
    corpus: Path
    clip: Path
    clap: Path | None
    base: Path  # a store that ingested version 1 of the corpus
    clip2: Path | None = None  # the model a reembed moves the clip space to
    other: Path | None = None  # a folder that is not the corpus (the next writer after a kill ingests it)
    restore_to: str = ""  # the run a restore goes back to (the base store's)
    clean: dict[str, Path] = field(default_factory=dict)  # scenario -> reference store
    ref_by: dict[str, Trace] = field(default_factory=dict)
    ref_flow: Trace = field(default_factory=Trace)
    batch_size: int = 1
    flush_rows: int = 48
    canary: bool = False
    changes: list[str] = field(default_factory=list)


def _workspace(root: Path, notes: int, audio: bool, clip: Path | None, clap: Path | None, **kw: Any) -> Workspace:
    """Models (clip, a second clip for reembeds, clap), corpus v1 and a folder that is not the corpus."""
    from omnivec.testing import make_tiny_clap, make_tiny_open_clip

    root.mkdir(parents=True, exist_ok=True)
    clip = clip or make_tiny_open_clip(root / "models" / "clip")
    if audio:
        clap = clap or make_tiny_clap(root / "models" / "clap")
    corpus = build_corpus(root / "corpus", notes, audio)
    other = root / "other"
    other.mkdir(exist_ok=True)
    (other / "elsewhere.txt").write_text("a note kept in another folder")
    return Workspace(root, corpus, clip, clap if audio else None, root / "base",
                     make_tiny_open_clip(root / "models" / "clip2", seed=1), other, **kw)


def prepare(root: Path, notes: int = 60, batch_size: int = 1, flush_rows: int = 48, audio: bool = True,
            clip: Path | None = None, clap: Path | None = None, flow: bool = False, canary: bool = False,
            log: Callable[[str], None] = print, targets: tuple[str, ...] = TARGETS) -> Workspace:
    """Models, corpus v1, the base store (v1 ingested), corpus v2 and the clean reference stores (of
    the ingests, and of ``targets`` run on their starting stores)."""
    ws = _workspace(root, notes, audio, clip, clap, batch_size=batch_size, flush_rows=flush_rows, canary=canary)
    log("ingesting corpus version 1 into the base store ...")
    done = finish_child(start_child(ws, ws.base, root / "base.trace"), root / "base.trace", time.monotonic(), "")
    if done.rc != 0:
        raise RuntimeError(f"the base run failed: {done.stderr}")
    ws.changes = mutate_corpus(ws.corpus)
    for scenario in ("fresh", "incremental"):
        store = root / f"clean-{scenario}"
        if scenario == "incremental":
            shutil.copytree(ws.base, store)
        log(f"clean run ({scenario}) ...")
        trace = root / f"clean-{scenario}.trace"
        done = finish_child(start_child(ws, store, trace), trace, time.monotonic(), "")
        if done.rc != 0:
            raise RuntimeError(f"the clean {scenario} run failed: {done.stderr}")
        ws.clean[scenario] = store
        ws.ref_by[scenario] = done.trace
        log(f"  {len(done.trace.ops)} store writes over {done.trace.work_seconds:.1f} s "
            f"({done.seconds:.1f} s with start-up)")
    if flow:
        store, trace = root / "clean-flow", root / "clean-flow.trace"
        log("clean run through the Prefect flow (measures its work) ...")
        done = finish_child(start_child(ws, store, trace, flow=True), trace, time.monotonic(), "")
        if done.rc != 0:
            raise RuntimeError(f"the clean flow run failed: {done.stderr}")
        ws.ref_flow = done.trace
        problems = compare(store, ws.clean["fresh"])
        if problems:
            raise RuntimeError(f"a clean flow run differs from a clean local run: {problems}")
    ws.restore_to = soak_targets.first_run(ws.base)
    for target in targets:
        store, trace = root / f"clean-{target}", root / f"clean-{target}.trace"
        start_store(ws, target, store)
        log(f"clean run ({target}) ...")
        done = finish_child(start_child(ws, store, trace, scenario=target), trace, time.monotonic(), "")
        if done.rc != 0:
            raise RuntimeError(f"the clean {target} run failed: {done.stderr}")
        ws.clean[target] = store
        ws.ref_by[target] = done.trace
        log(f"  {len(done.trace.ops)} store writes over {done.trace.work_seconds:.1f} s "
            f"({done.seconds:.1f} s with start-up)")
    for scenario, store in ws.clean.items():
        bad = invariants(store)
        if bad:
            raise RuntimeError(f"the clean {scenario} store breaks the invariants: {bad}")
    return ws


def prepare_here(root: Path, clip: Path, clap: Path | None, notes: int = 10, flush_rows: int = 48,
                 targets: tuple[str, ...] = TARGETS) -> Workspace:
    """A smaller workspace whose base and clean stores are written in this process (for the tests:
    no traces, so kills must be aimed)."""
    ws = _workspace(root, notes, clap is not None, clip, clap, flush_rows=flush_rows)
    ingest_here(ws, ws.base)
    ws.changes = mutate_corpus(ws.corpus)
    ws.clean["fresh"] = root / "clean-fresh"
    ws.clean["incremental"] = root / "clean-incremental"
    shutil.copytree(ws.base, ws.clean["incremental"])
    for store in list(ws.clean.values()):
        ingest_here(ws, store)
    ws.restore_to = soak_targets.first_run(ws.base)
    for target in targets:
        ws.clean[target] = root / f"clean-{target}"
        start_store(ws, target, ws.clean[target])
        run_here(ws, target, ws.clean[target])
    return ws


def run_here(ws: Workspace, scenario: str, store: Path) -> None:
    """A scenario's command run to completion in this process (no trace)."""
    if scenario in TARGETS:
        soak_targets.run_here(scenario, store, settings_for(ws, store), ws.clip2, ws.restore_to)
    else:
        ingest_here(ws, store)


@dataclass
class Trial:
    number: int
    path: str
    scenario: str
    kills: list[Launch]
    final: Launch | None = None
    problems: list[str] = field(default_factory=list)


def start_store(ws: Workspace, scenario: str, store: Path) -> None:
    """The store a scenario starts from: none (fresh), the base store (incremental), or the clean
    store of an ingest (maintain, reembed, restore)."""
    shutil.rmtree(store, ignore_errors=True)
    if scenario == "incremental":
        shutil.copytree(ws.base, store)
    elif scenario in TARGETS:
        shutil.copytree(ws.clean[soak_targets.START[scenario]], store)


def run_trial(ws: Workspace, number: int, rng: random.Random, kills: int, flow: bool, scenario: str,
              aims: list[str] | None = None) -> Trial:
    """Kill ``kills`` runs of a scenario's command on one store (each at a random moment, or at
    ``aims``), finish, check."""
    store = ws.root / "trials" / f"t{number:03d}"
    store.parent.mkdir(parents=True, exist_ok=True)
    start_store(ws, scenario, store)
    trial = Trial(number, "flow" if flow else "local", scenario, [])
    trace = ws.root / "trials" / f"t{number:03d}.trace"
    for k in range(len(aims) if aims else kills):
        done = sum(len([o for o in x.trace.ops if o.end is not None]) for x in trial.kills)
        merged = sum(len(vector_merges(x.trace)) for x in trial.kills)
        launch = run_killed(ws, store, trace, rng, flow, aims[k] if aims else "", scenario, done, merged)
        trial.kills.append(launch)
        if launch.category in ("failed", "hung"):
            trial.problems.append(f"a run after a kill {launch.what}: {launch.stderr.strip()[-300:]}")
            return trial
        if scenario not in TARGETS:
            trial.problems += check_killed(ws, store, launch, rng)
        if launch.category == "finished":
            break
    final = finish_child(start_child(ws, store, trace, scenario=scenario), trace, time.monotonic(), "")
    trial.final = final
    if final.rc != 0:
        trial.problems.append(f"the run after the kills failed (exit {final.rc}): {final.stderr.strip()[-400:]}")
        return trial
    trial.problems += check(ws, store, ws.clean[scenario], scenario)
    return trial


def _fmt_row(cols: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()


HEADER = ["trial", "path", "start", "kill", "kill point", "in flight when killed", "writes", "result"]
WIDTHS = [5, 5, 11, 4, 32, 46, 6, 0]


def print_trial(t: Trial, out: Callable[[str], None] = print) -> None:
    result = "ok" if not t.problems else "MISMATCH"
    rows: list[Launch | None] = list(t.kills) or [None]
    for i, k in enumerate(rows):
        last = i == len(rows) - 1
        cols = [str(t.number) if i == 0 else "", t.path if i == 0 else "", t.scenario if i == 0 else "",
                str(i + 1), k.point if k else "-", k.what if k else "-",
                str(len([o for o in k.trace.ops if o.end is not None])) if k else "-", result if last else ""]
        out(_fmt_row(cols, WIDTHS))
    for p in t.problems:
        out(f"       ! {p}")


def summary(trials: list[Trial], seconds: float) -> str:
    kills = [k for t in trials for k in t.kills]
    cats = Counter(k.category for k in kills)
    bad = [t for t in trials if t.problems]
    parts = ", ".join(f"{n} {c}" for c, n in sorted(cats.items()))
    window = sum(k.window for t in trials if t.scenario not in TARGETS for k in t.kills)  # (a reembed has no items)
    targets = Counter(t.scenario if t.scenario in TARGETS else "ingest" for t in trials)
    what = ", ".join(f"{n} {t}" for t, n in sorted(targets.items()))
    verdict = "OK" if not bad else f"FAILED (trials {', '.join(str(t.number) for t in bad)})"
    return (f"crash soak: {len(trials)} trials ({what}), {len(kills)} kills ({parts}; {window} between vectors "
            f"and items), {len(bad)} mismatched in {seconds:.0f} s: {verdict}")


def schedule(trials: int, flow_trials: int, other_trials: int, others: tuple[str, ...]) -> dict[int, str]:
    """trial number -> scenario: the flow trials first (ingests), ``other_trials`` of the rest spread
    evenly from the last one back and taking ``others`` in turn, the remaining ones ingests into an
    empty store (odd numbers) or the base store (even)."""
    plan = {i: "incremental" if i % 2 == 0 else "fresh" for i in range(1, trials + 1)}
    rest = list(range(flow_trials + 1, trials + 1))
    n = min(other_trials, len(rest))
    for j in range(n):
        plan[rest[len(rest) - 1 - (j * len(rest)) // n]] = others[j % len(others)]
    return plan


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        child_main(argv[1:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--kills", type=int, default=3, help="most kills per trial (each trial draws 1..K)")
    ap.add_argument("--flow-trials", type=int, default=2,
                    help="of the trials, how many kill runs of the Prefect flow (a temporary server each: slow)")
    ap.add_argument("--notes", type=int, default=60, help="short text files in the corpus (more: longer runs)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--flush-rows", type=int, default=48, help="rows buffered per commit in the killed runs")
    ap.add_argument("--no-audio", action="store_true", help="leave out the audio space (clap) and files")
    ap.add_argument("--other-trials", type=int, default=6,
                    help="of the trials, how many kill another command than ingest (spread over the soak)")
    ap.add_argument("--other", default=",".join(TARGETS),
                    help=f"those commands, in turn (of: {', '.join(TARGETS)})")
    ap.add_argument("--aim", action="append", default=[], metavar="KIND:TABLE#K[@after|@during+MS]",
                    help="a kill point for one trial each, before the random ones (e.g. merge:items#1@during+0; "
                         "merge:vectors#1@after: between a commit's vector and items merges)")
    ap.add_argument("--canary", action="store_true",
                    help="keep the drift canary on in the soaked runs (read-only, a few seconds per run)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    a = ap.parse_args(argv)
    logging.getLogger("omnivec").setLevel(logging.ERROR)  # the next writers run here say what they removed
    others = tuple(t for t in a.other.split(",") if t)
    if any(t not in TARGETS for t in others) or (a.other_trials and not others):
        ap.error(f"--other takes a comma-separated list of: {', '.join(TARGETS)}")
    plan = schedule(a.trials, a.flow_trials, a.other_trials, others)
    seed = a.seed if a.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    root = a.workdir or Path(tempfile.mkdtemp(prefix="omnivec-soak-"))
    t0 = time.monotonic()
    print(f"crash soak: seed {seed}, work folder {root}", flush=True)
    try:
        ws = prepare(root, a.notes, a.batch_size, a.flush_rows, not a.no_audio, flow=a.flow_trials > 0,
                     canary=a.canary, log=lambda m: print(m, flush=True),
                     targets=tuple(t for t in others if t in plan.values()))
        print(f"corpus v2 vs v1: {'; '.join(ws.changes)}", flush=True)
        print(_fmt_row(HEADER, WIDTHS), flush=True)
        trials = []
        for i in range(1, a.trials + 1):
            flow = i <= a.flow_trials
            scenario = plan[i]
            aims = [a.aim[i - 1]] if i <= len(a.aim) else None
            trial = run_trial(ws, i, rng, rng.randint(1, a.kills), flow, scenario, aims)
            trials.append(trial)
            print_trial(trial, lambda line: print(line, flush=True))
            if not trial.problems:
                shutil.rmtree(root / "trials" / f"t{i:03d}", ignore_errors=True)
        print(summary(trials, time.monotonic() - t0), flush=True)
        return 1 if any(t.problems for t in trials) else 0
    finally:
        if not a.keep and a.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
