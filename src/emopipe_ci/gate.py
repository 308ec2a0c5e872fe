"""The metric gate: the real pipeline on a small config over a few seeds, against a measured reference.

    python -m emopipe_ci.gate measure --params tests/tiny_params.yaml --seeds 5 --out .ci/gate-reference.json
    python -m emopipe_ci.gate check --reference .ci/gate-reference.json --workdir .gate --md .gate/report.md

`measure` runs the config with seeds 0..N-1 and stores every gated metric's values, mean and
sample std. `check` runs the first `gate_seeds` of those seeds and compares the mean of each
metric with the reference mean over the same seeds. Each metric's tolerance comes from its
measured spread: Z · std / √gate_seeds (at least a floor), i.e. how far the mean of
`gate_seeds` fresh draws may fall by chance. The default numerics are bit-identical, so unchanged
code reproduces the reference exactly; a change that only reorders floats acts like a new
seed draw and stays within the tolerance; a real regression falls below it.
"""
from __future__ import annotations

import json
import math
import shutil
import statistics
from pathlib import Path

import typer

from emopipe.cli import run
from emopipe_ci.harness import load_overrides, make_sandbox, repro, set_params

# metric -> +1 when higher is better, -1 when lower is better
GATED = {
    "eval.accuracy": 1,
    "eval.macro_f1": 1,
    "shift.plain.macro_f1": 1,
    "shift.tta.macro_f1": 1,
    "adapt.after.macro_f1": 1,
    "adapt.forgetting": -1,
}
Z = 3.0  # one-sided: a harmless change fails one metric by chance with p ≈ 0.001
FLOOR = 0.01  # no tolerance below this, even for a metric that did not vary over the seeds

app = typer.Typer(add_completion=False, help=__doc__)


def read_metrics(folder: Path) -> dict[str, float]:
    """Flatten metrics/<name>.json into {'<name>.<key>...': number} for the gated keys."""
    found = {}
    for key in GATED:
        name, *path = key.split(".")
        file = folder / f"{name}.json"
        if not file.exists():
            continue
        value = json.loads(file.read_text())
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            found[key] = float(value)
    return found


def run_seeds(workdir: Path, params: Path, seeds: list[int]) -> list[dict[str, float]]:
    """The pipeline in a sandbox copy of the repo on `params`, once per seed; gated metrics per run."""
    shutil.rmtree(workdir, ignore_errors=True)
    repo = make_sandbox(workdir, load_overrides(params))
    runs = []
    for seed in seeds:
        set_params(repo, {"seed": seed})
        repro(repo)
        runs.append(read_metrics(repo / "metrics"))
        typer.echo(f"seed {seed}: " + ", ".join(f"{k} {v:.4f}" for k, v in runs[-1].items()), err=True)
    return runs


def tolerance(std: float, gate_seeds: int) -> float:
    return round(max(FLOOR, Z * std / math.sqrt(gate_seeds)), 4)


def summarize(runs: list[dict[str, float]], seeds: list[int], gate_seeds: int) -> dict:
    """Reference file content: per metric the values by seed, mean, sample std and the gate's tolerance."""
    metrics = {}
    for key in GATED:
        values = [run[key] for run in runs if key in run]
        if len(values) != len(runs):
            continue
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        metrics[key] = {"values": values, "mean": round(statistics.fmean(values), 4), "std": round(std, 4),
                        "tolerance": tolerance(std, gate_seeds)}
    return {"seeds": seeds, "gate_seeds": gate_seeds, "z": Z, "floor": FLOOR, "metrics": metrics}


def compare(reference: dict, current: dict[str, float]) -> tuple[bool, list[dict]]:
    """(passed, rows). `current` holds the mean over the first `gate_seeds` seeds; so does the reference side."""
    k = reference["gate_seeds"]
    rows, ok = [], True
    for key, ref in reference["metrics"].items():
        expected = statistics.fmean(ref["values"][:k])
        new = current.get(key)
        row = {"metric": key, "reference": expected, "current": new, "tolerance": ref["tolerance"],
               "direction": "higher" if GATED[key] > 0 else "lower"}
        if new is None:
            row |= {"diff": None, "verdict": "FAIL (missing)"}
        else:
            worse_by = (expected - new) * GATED[key]
            row |= {"diff": new - expected,
                    "verdict": "FAIL" if worse_by > ref["tolerance"] else ("better" if -worse_by > ref["tolerance"] else "ok")}
        ok &= not row["verdict"].startswith("FAIL")
        rows.append(row)
    return ok, rows


def markdown(rows: list[dict]) -> str:
    """The comparison as a markdown table, like `dvc metrics diff --md`."""
    def num(x, signed=False):
        return "—" if x is None else (f"{x:+.4f}" if signed else f"{x:.4f}")

    lines = ["| metric | better | reference | current | diff | tolerance | verdict |", "|---|---|---:|---:|---:|---:|---|"]
    lines += [f"| {r['metric']} | {r['direction']} | {num(r['reference'])} | {num(r['current'])} | {num(r['diff'], True)} "
              f"| {r['tolerance']:.4f} | {r['verdict']} |" for r in rows]
    return "\n".join(lines)


def mean_of(runs: list[dict[str, float]]) -> dict[str, float]:
    keys = set.intersection(*(set(r) for r in runs)) if runs else set()
    return {k: statistics.fmean(r[k] for r in runs) for k in keys}


@app.command()
def measure(
    params: Path = typer.Option(Path("tests/tiny_params.yaml"), help="config merged over params.yaml"),
    seeds: int = typer.Option(5, min=2, help="seeds 0..N-1 to measure the spread over"),
    gate_seeds: int = typer.Option(3, min=1, help="seeds the gate runs (the first ones)"),
    workdir: Path = typer.Option(Path(".gate-measure"), help="sandbox folder (replaced)"),
    out: Path = typer.Option(Path(".ci/gate-reference.json"), help="reference file to write"),
) -> None:
    """Measure each gated metric's mean and spread over seeds; write the reference."""
    if gate_seeds > seeds:
        raise typer.BadParameter(f"--gate-seeds {gate_seeds} exceeds --seeds {seeds}")
    seed_list = list(range(seeds))
    ref = summarize(run_seeds(workdir, params, seed_list), seed_list, gate_seeds) | {"config": str(params)}
    out.write_text(json.dumps(ref, indent=2) + "\n")
    typer.echo(f"wrote {out}")


@app.command()
def check(
    reference: Path = typer.Option(Path(".ci/gate-reference.json"), help="reference from `measure`"),
    workdir: Path = typer.Option(Path(".gate"), help="sandbox folder (replaced)"),
    md: Path = typer.Option(None, help="also write the table to this markdown file"),
) -> None:
    """Run the reference's config over its gate seeds; exit 1 when a metric fell beyond its tolerance."""
    if not reference.is_file():
        raise typer.BadParameter(f"--reference {reference} does not exist; measure one with `make gate-reference`")
    ref = json.loads(reference.read_text())
    seeds = ref["seeds"][: ref["gate_seeds"]]
    ok, rows = compare(ref, mean_of(run_seeds(workdir, Path(ref["config"]), seeds)))
    table = markdown(rows) + f"\n\nmetric gate: {'passed' if ok else 'FAILED'} (mean over seeds {seeds}; tolerance = {ref['z']:g}·std/√{len(seeds)}, at least {ref['floor']})\n"
    typer.echo(table)
    if md:
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(table)
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    run(app)
