"""Stage split: the main domain's leakage-free split (stratified holdout 70/15/15, the source's own splits, or k person-grouped folds); k-shot/eval split of the shift domain."""
from pathlib import Path

import pandas as pd
import typer

from emopipe.cli import run
from emopipe.config import load_params
from emopipe.data.report import data_report
from emopipe.data.split import main_splits, shift_classes, split_groups, take_shots
from emopipe.io import atomic_path, write_csv, write_json

app = typer.Typer(add_completion=False, help=__doc__)
PARAMS = ["data_seed", "split", "adapt.shots"]


def describe(how: dict) -> str:
    """One line on where the test split came from (printed; the same facts go to metrics/data.json)."""
    if how["mode"] == "source":
        leaks = how["source_leaks"]
        return (f"splits: the source's own (train/test folders found; split.use_source_splits: false pools and re-splits); "
                f"{leaks['images']} image(s) in {leaks['groups']} group(s) also in a later split: {leaks['action']}")
    found = " (the source's own train/test folders are pooled)" if how["source_splits_found"] else ""
    return f"splits: {how['mode']}{found}" + (f", {how['folds']} folds, fold 0 below" if how["mode"] == "kfold" else "")


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    faces: Path = typer.Option(Path("data/faces"), help="faces stage output (manifests)"),
    raw: Path = typer.Option(Path("data/raw"), help="download stage output (rejects reports)"),
    out: Path = typer.Option(Path("data/split"), help="output folder"),
    metrics: Path = typer.Option(Path("metrics/data.json"), help="data metrics file"),
) -> None:
    p = load_params(params, only=PARAMS)
    main_set = pd.read_csv(faces / "main" / "manifest.csv")
    shift_set, unknown = shift_classes(pd.read_csv(faces / "shift" / "manifest.csv"), set(main_set["label"]), p.split.unknown_shift_classes)

    s = p.split
    main_set, groups, unmatched_main = split_groups(main_set, s.near_duplicate_distance, s.near_duplicate_correlation, s.group_pattern)
    main_set, how = main_splits(main_set.assign(group=groups), groups, s, p.data_seed)
    shift_pattern = s.person_pattern("shift")
    shift_set, shift_groups, unmatched_shift = split_groups(shift_set, s.near_duplicate_distance, s.near_duplicate_correlation, shift_pattern)
    shift_set = shift_set.assign(group=shift_groups, split=take_shots(shift_set["label"], shift_groups, p.adapt.shots, p.data_seed))

    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name in ("train", "val", "test"):
            write_csv(tmp / f"{name}.csv", main_set[main_set["split"] == name])
        if how["mode"] == "source":
            write_csv(tmp / "leaks.csv", main_set[main_set["split"] == "leak"])
        for name in ("adapt", "eval"):
            write_csv(tmp / f"shift_{name}.csv", shift_set[shift_set["split"] == name])
    domains = ("main", "shift")
    rejects = {d: pd.read_csv(raw / d / "rejects.csv") for d in domains}
    drops = {d: pd.read_csv(faces / d / "drops.csv") for d in domains}
    kept = main_set[main_set["split"] != "leak"]
    report = data_report(kept, shift_set, rejects, drops) | {"shift_classes": sorted(shift_set["label"].unique()), "shift_dropped": unknown}
    if how["mode"] != "holdout" or how["source_splits_found"]:
        report["splits"] = how
    sets = {"main": (main_set, unmatched_main), "shift": (shift_set, unmatched_shift)}
    if persons := {d: f["person"].nunique() for d, (f, _) in sets.items() if "person" in f.columns}:
        report["persons"] = {"pattern": s.group_pattern, "shift_pattern": shift_pattern, **persons,
                             "unmatched_names": {d: sets[d][1] for d in persons}}
    write_json(metrics, report)
    typer.echo(describe(how))
    typer.echo(kept.groupby(["split", "label"]).size().unstack(fill_value=0).to_string())


if __name__ == "__main__":
    run(app)
