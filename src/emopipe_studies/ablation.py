"""The seed grid: queue, run and report the ablation study with DVC's experiment queue.

    python -m emopipe_studies.ablation --epochs 30 --jobs 2             # 24 experiments, then reports/ablation.md
    python -m emopipe_studies.ablation --dry-run                          # print the `dvc exp run --queue` commands

Phase 1: model {small, wider} × train.augment {none, basic, targeted}, oversample.method=none,
seeds 0..N-1. The phase-1 variant with the best mean *validation* macro-F1 (metrics/train.json;
the test set is never used to choose) goes to phase 2: best + oversample.method=balance and
best + train.loss=focal, same seeds. Each worker of `dvc queue start -j J` inherits the
environment of that command, so OMP_NUM_THREADS/MKL_NUM_THREADS = cores // J is set there.
"""
from __future__ import annotations

import contextlib
import shlex
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import typer
import yaml

from emopipe import numerics
from emopipe.cli import run as run_app
from emopipe.errors import UserError
from emopipe.machine import available_cores
from emopipe_ci.harness import (
    SHARED_CORES_ENV,
    CommandFailed,
    parse_assignments,
    run,
    tool_env,
)
from emopipe_studies import report

MODELS = ("small", "wider")
AUGMENTS = ("none", "basic", "targeted")
PHASE2 = (("balance", {"oversample.method": "balance"}), ("focal", {"train.loss": "focal"}))
GRID_KEYS = {"model", "train.augment", "oversample.method", "train.loss", "seed", "train.epochs"}
DEFAULT_EPOCHS: int | None = None  # None: params.yaml's train.epochs of --repo
PLACEHOLDER = "BEST"
# What the grid runs: the stages its report reads (test and shift metrics). explain (Grad-CAM pictures) and adapt
# (~20 s per experiment on one thread) carry nothing the report uses.
TARGETS = ("evaluate", "shift_eval")
# The seed study's claims, each a one-param change tested on every pair of grid runs that differ in it alone.
CLAIMS = [
    report.Claim("wider beats small", "model", "small", "wider"),
    report.Claim("augmentation helps", "train.augment", "none", "basic"),
    report.Claim("targeted augmentation helps on the shifted domain", "train.augment", "basic", "targeted", report.SHIFT_F1),
    report.Claim("targeted augmentation helps on the shifted domain (vs none)", "train.augment", "none", "targeted", report.SHIFT_F1),
    report.Claim("oversampling (balance) helps", "oversample.method", "none", "balance"),
    report.Claim("oversampling (balance) helps on the shifted domain", "oversample.method", "none", "balance", report.SHIFT_F1),
    report.Claim("focal loss helps", "train.loss", "ce", "focal"),
    report.Claim("focal loss helps on the shifted domain", "train.loss", "ce", "focal", report.SHIFT_F1),
]

app = typer.Typer(add_completion=False, help=__doc__)


@dataclass(frozen=True)
class Planned:
    phase: int
    variant: str
    seed: int
    name: str
    overrides: tuple[tuple[str, str], ...]

    def command(self) -> list[str]:
        cmd = ["dvc", "exp", "run", "--queue", "--name", self.name]
        for key, value in self.overrides:
            cmd += ["-S", f"{key}={value}"]
        return cmd + list(TARGETS)


def phase1_variants() -> list[tuple[str, dict[str, str]]]:
    return [(f"{m}-{a}", {"model": m, "train.augment": a, "oversample.method": "none"})
            for m in MODELS for a in AUGMENTS]


def phase2_variants(best: str, best_overrides: dict[str, str]) -> list[tuple[str, dict[str, str]]]:
    return [(f"{best}-{suffix}", {**best_overrides, **change}) for suffix, change in PHASE2]


def expand(phase: int, variants, seeds: int, epochs: int, extra: dict[str, str], prefix: str) -> list[Planned]:
    return [Planned(phase, variant, seed, f"{prefix}{variant}-s{seed}",
                    tuple({**grid, "seed": str(seed), "train.epochs": str(epochs), **extra}.items()))
            for variant, grid in variants for seed in range(seeds)]


def parse_extra(items: list[str] | None) -> dict[str, str]:
    """--extra KEY=VALUE pairs, as `dvc exp run -S` takes them; the grid's own keys are refused."""
    extra = dict(parse_assignments(items, "--extra"))
    if clash := sorted(set(extra) & GRID_KEYS):
        raise typer.BadParameter(f"--extra {clash[0]} is set by the grid itself")
    return extra


def pick_best(exps: list[report.Exp], prefix: str, seeds: int) -> tuple[str | None, dict[str, tuple[float, int]]]:
    """(best phase-1 variant by mean val macro-F1, {variant: (mean val macro-F1, n)}); never looks at test metrics."""
    scores: dict[str, tuple[float, int]] = {}
    for variant, _ in phase1_variants():
        names = {f"{prefix}{variant}-s{s}" for s in range(seeds)}
        vals = [v for e in exps if e.name in names and e.ok
                and (v := e.metric("train", ("val_macro_f1",))) is not None]
        if vals:
            scores[variant] = (statistics.fmean(vals), len(vals))
    best = max(scores, key=lambda v: scores[v][0], default=None)  # ties: first in grid order
    return best, scores


# ---------------------------------------------------------------------------- running
def worker_env(jobs: int, numerics_mode: str = "portable") -> tuple[dict[str, str], int]:
    """Environment of the queue workers: cores // jobs threads each, and the numerics mode (native: the
    machine's best kernels, ~1.7× faster fp32 training, numbers not bit-identical to `dvc repro`'s)."""
    threads = max(1, available_cores() // jobs)
    env = {k: v for k, v in tool_env().items() if numerics_mode == "portable" or k not in numerics.PORTABLE_ENV}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **{numerics.MODE_VARIABLE: numerics_mode})
    if jobs > 1:
        env.update(SHARED_CORES_ENV)
    return env, threads


def queue_status(repo: Path) -> tuple[dict[str, str], int]:
    """({experiment name: Queued|Running|Success|Failed}, number of workers), from DVC's queue API
    (what `dvc queue status` prints, as data)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        queue = dvc_repo.experiments.celery_queue
        statuses = {entry["name"]: entry["status"] for entry in queue.status() if entry.get("name")}
        return statuses, len(queue.worker_status())


def queue_experiments(repo: Path, planned: list[Planned], label: str) -> None:
    """Queue every planned experiment from one DVC process (`dvc exp run --queue` each would start
    DVC, ~3 s, per experiment). Not DVC's sweep syntax: each experiment is named by variant and seed,
    which --resume, the clash check and the report read."""
    from dvc.repo import Repo

    with contextlib.chdir(repo), Repo(str(repo)) as dvc_repo:  # DVC resolves stage targets from the cwd
        for p in planned:
            typer.echo(f"[{label}] queue {p.name}")
            dvc_repo.experiments.run(targets=list(TARGETS), params=[f"{k}={v}" for k, v in p.overrides], queue=True, name=p.name)


def start_queue(repo: Path, jobs: int, env: dict) -> None:
    """`dvc queue start -j J` with `env`. Not through pipes: the spawned workers would inherit them and
    keep them open, so waiting for the command's output would wait for the whole queue."""
    with tempfile.TemporaryFile("w+") as log:
        code = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=repo, env=env,
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT).returncode
        log.seek(0)
        text = log.read().strip()
    if code:
        raise CommandFailed(f"`dvc queue start -j {jobs}` failed ({code}) in {repo}:\n{text}")


def log_excerpt(repo: Path, name: str, lines: int = 12) -> str:
    """The end of `dvc queue logs NAME`, without rich's traceback boxes and repeated lines."""
    done = run(repo, "dvc", "queue", "logs", name, check=False)
    kept: list[str] = []
    for line in (done.stdout + done.stderr).strip().splitlines():
        if not line.strip().startswith(("│", "╭", "╰")) and (not kept or kept[-1] != line):
            kept.append(line)
    return "\n".join(kept[-lines:])


def show_failures(repo: Path, names: list[str]) -> list[tuple[str, str]]:
    failures = [(n, log_excerpt(repo, n)) for n in names]
    for name, excerpt in failures:
        typer.echo(f"--- {name} failed; last lines of `dvc queue logs {name}`:\n{excerpt}", err=True)
    return failures


def fmt_time(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def run_phase(repo: Path, planned: list[Planned], jobs: int, env: dict, poll: float, label: str) -> tuple[float, list[str]]:
    """Queue, start, wait. Returns (wall seconds, names of failed experiments)."""
    if not planned:
        return 0.0, []
    start = time.monotonic()
    queue_experiments(repo, planned, label)
    start_queue(repo, jobs, env)
    names, last, printed, idle_polls = [p.name for p in planned], None, 0.0, 0
    while True:
        try:
            time.sleep(poll)
        except KeyboardInterrupt:
            typer.echo("\ninterrupted; the queued experiments keep running (`dvc queue status`, `dvc queue stop`, "
                       "`dvc queue kill NAME`); rerun with --resume to continue", err=True)
            raise
        statuses, workers = queue_status(repo)
        ours = [statuses.get(n, "Missing") for n in names]
        counts = {s: ours.count(s) for s in ("Success", "Failed", "Running", "Queued", "Missing")}
        now = time.monotonic()
        if counts != last or now - printed >= 60:
            typer.echo(f"[{label}] {fmt_time(now - start)}  done {counts['Success']}/{len(names)}  failed {counts['Failed']}"
                       f"  running {counts['Running']}  queued {counts['Queued']}")
            last, printed = counts, now
        if not counts["Running"] and not counts["Queued"]:
            break
        idle_polls = idle_polls + 1 if counts["Queued"] and not counts["Running"] and not workers else 0
        if idle_polls >= 2:  # workers gone with work left (e.g. killed): start them again
            typer.echo(f"[{label}] no workers but tasks queued: restarting the queue")
            start_queue(repo, jobs, env)
            idle_polls = 0
    seconds = time.monotonic() - start
    failed = [n for n, s in zip(names, ours) if s != "Success"]
    typer.echo(f"[{label}] finished in {fmt_time(seconds)}; failed: {', '.join(failed) or 'none'}")
    return seconds, failed


def missing_dirs(repo: Path) -> list[str]:
    """Directory outputs/deps in the workspace dvc.lock whose .dir object is not in the local cache.

    DVC 3.67 fails a queued experiment ("failed to load directory ...") when it restores a stage from
    the run-cache while dvc.lock still names such a directory, so the grid would fail after its first run.
    A dependency on a folder whose subfolders are outputs (pack reads data/raw, made of data/raw/main and
    data/raw/shift) is never cached as a whole and needs not be: DVC restores the outputs themselves.
    """
    lock = yaml.safe_load((repo / "dvc.lock").read_text()) if (repo / "dvc.lock").exists() else {}
    cache = Path(run(repo, "dvc", "cache", "dir").stdout.strip())
    uncached = uncached_outputs(repo)
    stages = list((lock.get("stages") or {}).values())
    outputs = {o["path"] for stage in stages for o in stage.get("outs") or []}
    missing = set()
    for stage in stages:
        deps = [d for d in stage.get("deps") or [] if not any(o.startswith(d["path"].rstrip("/") + "/") for o in outputs)]
        for entry in (stage.get("outs") or []) + deps:
            md5 = str(entry.get("md5") or "")
            if md5.endswith(".dir") and entry["path"] not in uncached and not (cache / "files" / "md5" / md5[:2] / md5[2:]).exists():
                missing.add(entry["path"])
    return sorted(missing)


def uncached_outputs(repo: Path) -> set[str]:
    """Paths of the `cache: false` outputs (plots, metrics), which are never in the cache.

    Empty when DVC's Python package is not importable here (the `dvc` command may come from
    another environment); DVC failing to read the repository is an error that names it.
    """
    try:
        from dvc.exceptions import DvcException
        from dvc.repo import Repo
    except ImportError:
        return set()
    try:
        with Repo(str(repo)) as dvc_repo:
            return {str(o.def_path) for o in dvc_repo.index.outs if not o.use_cache}
    except DvcException as e:
        raise UserError(f"DVC cannot read the outputs of {repo}: {e}") from e


def preflight(repo: Path, names: list[str], resume: bool, check_cache: bool = True) -> set[str]:
    """Names already done (with --resume); refuses clashes with existing experiments or queue entries."""
    if check_cache and (missing := missing_dirs(repo)):
        raise typer.BadParameter(
            f"dvc.lock names directories missing from the DVC cache ({', '.join(missing)}): queued experiments "
            "would fail restoring stages from the run-cache. Run `dvc repro` (or `dvc pull`) and commit first, "
            "or pass --no-check-cache.")
    _, exps = report.parse_exp_show(report.exp_show(repo))
    statuses, workers = queue_status(repo)
    if workers:
        typer.echo(f"warning: {workers} DVC queue worker(s) already running; they keep their own environment "
                   "(OMP_NUM_THREADS), so the thread budget may be exceeded", err=True)
    if run(repo, "git", "status", "--porcelain", "--untracked-files=no").stdout.strip():
        typer.echo("note: uncommitted changes in the workspace are part of every queued experiment", err=True)
    done = {e.name for e in exps if e.ok} & set(names) if resume else set()
    clash = sorted(({e.name for e in exps} | set(statuses)) & set(names) - done)
    if clash:
        raise typer.BadParameter(
            f"experiments already exist: {', '.join(clash)}. Use --prefix for a new set, --resume to keep "
            "finished ones, or remove them (`dvc exp remove NAME`, `dvc queue remove NAME`).")
    return done


@app.command()
def main(
    repo: Path = typer.Option(Path("."), help="DVC repository (experiments run from its HEAD + workspace)"),
    jobs: int = typer.Option(2, help="parallel queue workers (`dvc queue start -j`)"),
    seeds: int = typer.Option(4, help="seeds per variant: seed=0..N-1"),
    epochs: int = typer.Option(DEFAULT_EPOCHS, help="train.epochs of every experiment (default: params.yaml's)"),
    extra: list[str] = typer.Option(None, "--extra", help="KEY=VALUE override for every experiment (repeatable)"),
    prefix: str = typer.Option("", help="prepended to every experiment name, e.g. 'mux-'"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the commands only"),
    from_json: Path = typer.Option(None, "--from-json", help="dry run: phase-1 results from this `dvc exp show --json` file"),
    resume: bool = typer.Option(False, help="skip experiments of the grid that already finished"),
    check_cache: bool = typer.Option(True, help="refuse to start when dvc.lock names directories missing from the cache"),
    poll: float = typer.Option(15.0, help="seconds between `dvc queue status` polls"),
    numerics_mode: str = typer.Option("portable", "--numerics", help="portable: every run bit-identical to its `dvc repro` on any "
                                      "CPU; native: ~1.7× faster training, numbers tied to this machine (see emopipe/numerics.py)"),
    out: Path = typer.Option(Path("reports/ablation.md"), help="markdown report (relative to --repo)"),
) -> None:
    """Run (or print) the seed grid and write the report."""
    if not (repo / "params.yaml").is_file():
        raise typer.BadParameter(f"--repo {repo} has no params.yaml; give the DVC repository to run the grid in")
    extras = parse_extra(extra)
    if numerics_mode not in ("portable", "native"):
        raise typer.BadParameter(f"--numerics {numerics_mode!r}: choose portable or native")
    if epochs is None:
        epochs = int(yaml.safe_load((repo / "params.yaml").read_text())["train"]["epochs"])
    p1_variants = phase1_variants()
    phase1 = expand(1, p1_variants, seeds, epochs, extras, prefix)

    if dry_run:
        best, scores = (pick_best(report.parse_exp_show(report.load_json(from_json))[1], prefix, seeds)
                        if from_json else (None, {}))
        best_name = best or PLACEHOLDER
        grid = dict(p1_variants).get(best, {"model": f"<{PLACEHOLDER}>", "train.augment": f"<{PLACEHOLDER}>", "oversample.method": "none"})
        phase2 = expand(2, phase2_variants(best_name, grid), seeds, epochs, extras, prefix)
        typer.echo("# phase 1")
        typer.echo("\n".join(shlex.join(p.command()) for p in phase1))
        typer.echo(f"dvc queue start -j {jobs}   # with OMP_NUM_THREADS={worker_env(jobs)[1]}")
        ranking = ", ".join(f"{v} {m:.4f} (n={n})" for v, (m, n) in sorted(scores.items(), key=lambda x: -x[1][0]))
        typer.echo(f"# phase 2: best phase-1 variant by mean val macro-F1 = {best_name}" + (f"  [{ranking}]" if ranking else ""))
        typer.echo("\n".join(shlex.join(p.command()) for p in phase2))
        typer.echo(f"dvc queue start -j {jobs}")
        return

    repo = repo.resolve()
    env, threads = worker_env(jobs, numerics_mode)
    typer.echo(f"seed grid in {repo}: {seeds} seeds, train.epochs={epochs}, {jobs} workers × {threads} threads, {numerics_mode} numerics")
    total_start = time.monotonic()
    skip = preflight(repo, [p.name for p in phase1], resume, check_cache)
    t1, failed1 = run_phase(repo, [p for p in phase1 if p.name not in skip], jobs, env, poll, "phase 1")
    failures = show_failures(repo, failed1)

    _, exps = report.parse_exp_show(report.exp_show(repo))
    best, scores = pick_best(exps, prefix, seeds)
    if best is None:
        typer.echo("no phase-1 experiment finished; see the failures above", err=True)
        raise typer.Exit(1)
    typer.echo("phase-1 mean val macro-F1: " + ", ".join(f"{v} {m:.4f}" for v, (m, _) in sorted(scores.items(), key=lambda x: -x[1][0])))
    typer.echo(f"best phase-1 variant: {best}")
    phase2 = expand(2, phase2_variants(best, dict(p1_variants)[best]), seeds, epochs, extras, prefix)
    skip2 = preflight(repo, [p.name for p in phase2], resume, check_cache=False)
    t2, failed2 = run_phase(repo, [p for p in phase2 if p.name not in skip2], jobs, env, poll, "phase 2")
    failures += show_failures(repo, failed2)
    total = time.monotonic() - total_start

    commits, exps = report.parse_exp_show(report.exp_show(repo))
    planned = {p.name for p in phase1 + phase2}
    ours = [e for e in exps if e.name in planned]
    text = report.build_report(
        commits, ours,
        baseline=f"{prefix}{best}", compare=(f"{prefix}{best}", f"{prefix}{best}-balance"),
        read_predictions=lambda rev: report.git_show(repo, rev, report.PREDICTIONS),
        title="Ablation: seed grid",
        preamble=preamble(repo, seeds, epochs, jobs, threads, extras, best, scores, numerics_mode),
        appendix=claims_section([e for e in ours if e.ok]) + "\n\n" + appendix(t1, t2, total, failures),
    )
    out = out if out.is_absolute() else repo / out
    report.write_report(out, text)
    typer.echo(text, nl=False)
    typer.echo(f"report written to {out}")


def preamble(repo, seeds, epochs, jobs, threads, extras, best, scores, numerics_mode="portable") -> str:
    ranking = ", ".join(f"{v} {m:.4f} (n={n})" for v, (m, n) in sorted(scores.items(), key=lambda x: -x[1][0]))
    lines = [
        f"Phase 1: model {{{', '.join(MODELS)}}} × train.augment {{{', '.join(AUGMENTS)}}}, oversample.method=none; "
        f"phase 2: best + oversample.method=balance, best + train.loss=focal. Seeds 0..{seeds - 1}, "
        f"train.epochs={epochs}, {jobs} queue workers × OMP_NUM_THREADS={threads}, {numerics_mode} numerics"
        + (" (this machine's fastest kernels: the numbers are not bit-identical to `dvc repro` or other CPUs')" if numerics_mode == "native" else "")
        + "."
        + (f" Extra overrides: {', '.join(f'{k}={v}' for k, v in extras.items())}." if extras else ""),
        "",
        f"Phase-2 choice by mean validation macro-F1 (never test): **{best}** — {ranking}.",
    ]
    return "\n".join(lines)


def claims_section(exps: list[report.Exp]) -> str:
    lines = ["## The seed study's claims", "",
             "Each claim changes one param; its Δ pools every pair of grid runs that differ in that param alone "
             "(same seed and every other param), e.g. wider − small at each augmentation and seed. 95% Student-t "
             "interval over the pairs; **holds** when it lies above 0, **fails** when below, open otherwise.", ""]
    return "\n".join(lines + report.claims_table(exps, CLAIMS))


def appendix(t1: float, t2: float, total: float, failures: list[tuple[str, str]]) -> str:
    lines = ["## Wall time", "", "| phase | wall time |", "|---|---:|",
             f"| 1 | {fmt_time(t1)} |", f"| 2 | {fmt_time(t2)} |", f"| total | {fmt_time(total)} |"]
    if failures:
        lines += ["", "## Failed experiments", ""]
        for name, excerpt in failures:
            lines += [f"`dvc queue logs {name}` (last lines):", "", "```", excerpt, "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    run_app(app)
