"""Measure a recipe on a photo folder: test macro-F1 over seeds and wall minutes per run, as JSON.

    python -m emopipe_studies.measure real-photos --data ../shared/datasets/muxspace-dev --seeds 0 1 2 \\
        --grouped '^(.+)_\\d+\\.\\w+$' --out reports/real-photos.json

A sandbox copy of this repository gets the recipe, the folder (as the main domain, with no shift
domain) and any `--set` merged into its params.yaml. The data stages run once (timed apart); then each seed runs
`dvc repro evaluate` (train + evaluate, timed). `--grouped PATTERN` repeats the seeds on the
person-grouped split (`split.group_pattern`), so the figure for new people stands beside the
stratified one. Minutes per run = data stages + one seed's train and evaluate, on this machine.
`--baseline OTHER.json` (another measurement of the same folder, e.g. without a `--set`) adds the
paired difference per split: mean Δ test macro-F1 over the seeds both ran, with its 95% t interval.
Each split also gets `seed_ensemble`: the seeds' models as one (test probabilities averaged), and
its gain over the single models' mean with a 95% bootstrap interval over test images.
"""
from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from emopipe.apps.recipe import recipe_file
from emopipe.cli import run
from emopipe.config import merge
from emopipe.engine.metrics import classification_metrics
from emopipe.io import write_json
from emopipe.machine import available_cores, cpu_model
from emopipe.stats import bootstrap_interval, interval_verdict, paired_difference
from emopipe_ci.harness import (
    as_tree,
    load_overrides,
    make_sandbox,
    parse_assignments,
    read_params,
    repro,
    set_params,
)

app = typer.Typer(add_completion=False, help=__doc__)


def read(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def seed_ensemble(predictions: list[pd.DataFrame], resamples: int = 1000) -> dict:
    """The seeds' models as one: their test probabilities (predictions.csv) averaged image by image.

    The gain over the single models' mean macro-F1 is one number per test set, not per seed, so its
    95% interval comes from resampling test images (the same draw for the ensemble and each seed).
    """
    first = predictions[0]
    if any(not p["path"].equals(first["path"]) for p in predictions[1:]):
        raise ValueError("seed_ensemble: the seeds scored different test images; they must share the packed data")
    columns = [c for c in first.columns if c.startswith("p_")]
    classes = [c.removeprefix("p_") for c in columns]
    index = {c: i for i, c in enumerate(classes)}
    y = first["actual"].map(index).to_numpy()
    probs = np.stack([p[columns].to_numpy() for p in predictions])  # seeds × images × classes
    preds = [probs.mean(axis=0).argmax(axis=1)] + [p["predicted"].map(index).to_numpy() for p in predictions]

    def gain(rows: np.ndarray) -> float:
        ensemble, *singles = (classification_metrics(y[rows], pred[rows], classes)["macro_f1"] for pred in preds)
        return ensemble - statistics.fmean(singles)

    low, high = bootstrap_interval(gain, len(y), resamples)
    ensemble = classification_metrics(y, preds[0], classes)
    return {"models": len(predictions), "macro_f1": ensemble["macro_f1"], "accuracy": ensemble["accuracy"],
            "gain_vs_single_mean": round(gain(np.arange(len(y))), 4), "ci95": [round(float(low), 4), round(float(high), 4)],
            "verdict": interval_verdict(low, high)}


def run_seeds(repo: Path, seeds: list[int], data_seconds: float) -> dict:
    """Each seed through train + evaluate; per-run results, their summary and their ensemble."""
    runs, predictions = [], []
    for seed in seeds:
        set_params(repo, {"seed": seed})
        seconds = repro(repo, "evaluate")
        ev = read(repo, "eval")
        predictions.append(pd.read_csv(repo / "plots" / "eval" / "predictions.csv"))
        runs.append({"seed": seed, "macro_f1": ev["macro_f1"], "accuracy": ev["accuracy"],
                     "val_macro_f1": read(repo, "train").get("val_macro_f1"), "train_eval_minutes": round(seconds / 60, 2)})
        typer.echo(f"seed {seed}: test macro-F1 {ev['macro_f1']:.4f}, accuracy {ev['accuracy']:.4f}, {seconds / 60:.1f} min", err=True)
    f1s = [r["macro_f1"] for r in runs]
    data = read(repo, "data")
    return {
        "seeds": seeds,
        "macro_f1_mean": round(statistics.fmean(f1s), 4),
        "macro_f1_std": round(statistics.stdev(f1s), 4) if len(f1s) > 1 else None,
        "accuracy_mean": round(statistics.fmean(r["accuracy"] for r in runs), 4),
        "split_counts": {split: sum(c.values()) for split, c in data["counts"].items()},
        "persons": data.get("persons"),
        "data_stage_minutes": round(data_seconds / 60, 2),
        "runs": runs,
        "seed_ensemble": seed_ensemble(predictions) if len(predictions) > 1 else None,
    }


def stratified_figures(out: Path, recipe: str, dataset: str, params: dict, seeds: list[int], grouped: str | None) -> dict:
    """The measurement in `out` to resume from; a one-line error when it measured something else."""
    if not grouped:
        raise typer.BadParameter("--resume runs only the person-grouped split: give --grouped PATTERN")
    if not out.is_file():
        raise typer.BadParameter(f"--resume: {out} does not exist; run without --resume first")
    kept = json.loads(out.read_text())
    wanted = {"recipe": recipe, "dataset": dataset, "params": params, "seeds": seeds}
    if differs := [key for key, value in wanted.items() if kept.get(key) != value]:
        raise typer.BadParameter(f"--resume: {out} measured another {', '.join(differs)}; run without --resume "
                                 "or give the same recipe, --data, --set and --seeds")
    return kept


def load_baseline(baseline: Path, dataset: str) -> dict:
    """The measurement to pair against, checked before any run: it exists and measured the same folder."""
    if not baseline.is_file():
        raise typer.BadParameter(f"--baseline {baseline} does not exist; give a JSON written by `emopipe measure`")
    base = json.loads(baseline.read_text())
    if base.get("dataset") != dataset:
        raise typer.BadParameter(f"--baseline {baseline} measured {base.get('dataset')!r}, not {dataset!r}")
    return base


def paired_against(result: dict, base: dict) -> dict:
    """result − base test macro-F1, paired by seed, on each split both measured."""
    diffs = {}
    for split in ("stratified", "person_grouped"):
        ours, theirs = (result, base) if split == "stratified" else (result.get(split), base.get(split))
        if ours and theirs:
            d = paired_difference(*({r["seed"]: r["macro_f1"] for r in m["runs"]} for m in (ours, theirs)))
            if d is not None:
                diffs[split] = {"n_pairs": d.n, "mean": round(d.mean, 4), "verdict": d.verdict,
                                "ci95": None if d.half_width is None else [round(d.low, 4), round(d.high, 4)]}
    return {"baseline_params": base.get("params"), "test_macro_f1": diffs}


@app.command()
def main(
    recipe: str = typer.Argument(..., help="recipe name in recipes/ (e.g. real-photos) or a YAML file"),
    data: Path = typer.Option(..., help="photo folder (class per sub-folder): the main domain"),
    seeds: list[int] = typer.Option([0, 1, 2], "--seeds", help="seeds to run (repeat the option)"),
    grouped: str = typer.Option(None, help="also run the person-grouped split with this split.group_pattern"),
    sets: list[str] = typer.Option(None, "--set", help="KEY=VALUE param override on top of the recipe (repeatable)"),
    workdir: Path = typer.Option(Path(".measure"), help="sandbox folder (replaced)"),
    out: Path = typer.Option(Path("reports/real-photos.json"), help="JSON written here (atomically)"),
    resume: bool = typer.Option(False, help="keep the stratified figures already in --out (same recipe, data, "
                                "overrides and seeds) and run only the person-grouped split"),
    baseline: Path = typer.Option(None, help="another measurement JSON of the same folder: add the paired Δ "
                                  "test macro-F1 (95% t interval over shared seeds) against it"),
) -> None:
    """Run the recipe on the folder over the seeds and write the measurement."""
    if not data.is_dir():
        raise typer.BadParameter(f"--data {data} is not a folder; give the class-per-folder photo tree")
    base = load_baseline(baseline, data.resolve().name) if baseline is not None else None
    overrides = load_overrides(recipe_file(recipe))
    merge(overrides, as_tree(parse_assignments(sets, "--set")))
    merge(overrides, {"data": {"source": "folder", "folder": str(data.resolve())}, "shift": {"source": "none"},
                      "split": {"group_pattern": None}})
    reported = overrides | {"data": {"source": "folder", "folder": data.name}}
    kept = stratified_figures(out, recipe, data.resolve().name, reported, seeds, grouped) if resume else None
    shutil.rmtree(workdir, ignore_errors=True)
    repo = make_sandbox(workdir, overrides)  # merged as `emopipe recipe` applies a recipe
    faces = read_params(repo)["faces"]

    if kept:
        result = kept
        typer.echo(f"--resume: stratified figures kept from {out}", err=True)
    else:
        data_seconds = repro(repo, "pack")
        result = {
            "dataset": data.resolve().name,
            "recipe": recipe,
            "params": reported,
            "split": "stratified",
            **run_seeds(repo, seeds, data_seconds),
            "detector": faces["detector"] if faces["enabled"] else "none",
            "detection_rate": (read(repo, "data").get("faces") or {}).get("detection_rate", {}).get("main"),
            "machine": {"cpu": cpu_model(), "cores": available_cores()},
        }
        minutes = result["data_stage_minutes"] + statistics.fmean(r["train_eval_minutes"] for r in result["runs"])
        result["minutes_per_run"] = round(minutes, 2)
        result["minutes_per_run_2cpu"] = round(minutes, 2) if available_cores() == 2 else None
        write_json(out, result)  # now, and again with the grouped figures: a stopped run keeps what it measured
    if grouped:
        # Data stages: re-split and pack only, or (after --resume, in a fresh sandbox) every data stage.
        set_params(repo, {"split": {"group_pattern": grouped}})
        regroup = repro(repo, "pack")
        result["person_grouped"] = {"group_pattern": grouped, **run_seeds(repo, seeds, regroup)}
        write_json(out, result)
    if base is not None:
        result["paired_vs_baseline"] = {"baseline": str(baseline), **paired_against(result, base)}
        write_json(out, result)
    minutes = result["minutes_per_run"]
    typer.echo(f"{out}: macro-F1 {result['macro_f1_mean']:.4f} ± {result['macro_f1_std'] or 0:.4f} over seeds {seeds}, "
               f"{minutes:.1f} min per run")


if __name__ == "__main__":
    run(app)
