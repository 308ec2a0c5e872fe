"""Stage split: stratified, leakage-free 70/15/15 split of the main domain; k-shot/eval split of the shift domain."""
from pathlib import Path

import pandas as pd
import typer

from emopipe.cli import run
from emopipe.data.report import data_report
from emopipe.data.split import (
    shift_classes,
    split_groups,
    stratified_group_split,
    take_shots,
)
from emopipe.io import atomic_path, write_csv, write_json
from emopipe.stage import group_pattern, load_params

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    faces: Path = typer.Option(Path("data/faces"), help="faces stage output (manifests)"),
    raw: Path = typer.Option(Path("data/raw"), help="download stage output (rejects reports)"),
    out: Path = typer.Option(Path("data/split"), help="output folder"),
    metrics: Path = typer.Option(Path("metrics/data.json"), help="data metrics file"),
) -> None:
    p = load_params(params)
    main_set = pd.read_csv(faces / "main" / "manifest.csv")
    shift_set, unknown = shift_classes(pd.read_csv(faces / "shift" / "manifest.csv"), set(main_set["label"]), p.split.unknown_shift_classes)

    s = p.split
    main_set, groups, unmatched_main = split_groups(main_set, s.near_duplicate_distance, s.group_pattern)
    fractions = {"train": s.train, "val": s.val, "test": s.test}
    main_set = main_set.assign(group=groups, split=stratified_group_split(main_set["label"], groups, fractions, p.data_seed))
    shift_pattern = group_pattern("shift", s.group_pattern, s.shift_group_pattern)
    shift_set, shift_groups, unmatched_shift = split_groups(shift_set, s.near_duplicate_distance, shift_pattern)
    shift_set = shift_set.assign(group=shift_groups, split=take_shots(shift_set["label"], shift_groups, p.adapt.shots, p.data_seed))

    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name in fractions:
            write_csv(tmp / f"{name}.csv", main_set[main_set["split"] == name])
        for name in ("adapt", "eval"):
            write_csv(tmp / f"shift_{name}.csv", shift_set[shift_set["split"] == name])
    domains = ("main", "shift")
    rejects = {d: pd.read_csv(raw / d / "rejects.csv") for d in domains}
    drops = {d: pd.read_csv(faces / d / "drops.csv") for d in domains}
    report = data_report(main_set, shift_set, rejects, drops) | {"shift_classes": sorted(shift_set["label"].unique()), "shift_dropped": unknown}
    sets = {"main": (main_set, unmatched_main), "shift": (shift_set, unmatched_shift)}
    if persons := {d: f["person"].nunique() for d, (f, _) in sets.items() if "person" in f.columns}:
        report["persons"] = {"pattern": s.group_pattern, "shift_pattern": shift_pattern, **persons,
                             "unmatched_names": {d: sets[d][1] for d in persons}}
    write_json(metrics, report)
    typer.echo(main_set.groupby(["split", "label"]).size().unstack(fill_value=0).to_string())


if __name__ == "__main__":
    run(app)
