"""Stage split: stratified, leakage-free 70/15/15 split of the main domain; k-shot/eval split of the shift domain."""
from pathlib import Path

import pandas as pd
import typer

from emopipe.cli import run
from emopipe.data.dedup import duplicate_groups
from emopipe.data.split import count_table, stratified_group_split, take_shots
from emopipe.io import atomic_path, write_csv, write_json
from emopipe.params import ParamError, load_params

app = typer.Typer(add_completion=False, help=__doc__)


def _groups(frame: pd.DataFrame, distance: int):
    return duplicate_groups(frame["sha256"].tolist(), frame["phash"].tolist(), max_distance=distance)


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    raw: Path = typer.Option(Path("data/raw"), help="download stage output"),
    out: Path = typer.Option(Path("data/split"), help="output folder"),
    metrics: Path = typer.Option(Path("metrics/data.json"), help="data metrics file"),
) -> None:
    p = load_params(params)
    main_set = pd.read_csv(raw / "main" / "manifest.csv")
    shift_set = pd.read_csv(raw / "shift" / "manifest.csv")
    stray = sorted(set(shift_set["label"]) - set(main_set["label"]))
    if stray:
        raise ParamError(f"shift domain classes {stray} are not in the main domain ({sorted(main_set['label'].unique())}); fix shift.* so its folders use the same class names")

    groups = _groups(main_set, p.split.near_duplicate_distance)
    fractions = {"train": p.split.train, "val": p.split.val, "test": p.split.test}
    main_set = main_set.assign(group=groups, split=stratified_group_split(main_set["label"], groups, fractions, p.seed))
    shift_groups = _groups(shift_set, p.split.near_duplicate_distance)
    shift_set = shift_set.assign(group=shift_groups, split=take_shots(shift_set["label"], shift_groups, p.adapt.shots, p.seed))

    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name in fractions:
            write_csv(tmp / f"{name}.csv", main_set[main_set["split"] == name])
        for name in ("adapt", "eval"):
            write_csv(tmp / f"shift_{name}.csv", shift_set[shift_set["split"] == name])
    rejects = {d: pd.read_csv(raw / d / "rejects.csv") for d in ("main", "shift")}
    write_json(metrics, {
        "classes": len(main_set["label"].unique()),
        "images": {"main": len(main_set), "shift": len(shift_set)},
        "near_duplicates": {"main": int(len(main_set) - main_set["group"].nunique()), "shift": int(len(shift_set) - shift_set["group"].nunique())},
        "rejected": {d: {"total": len(r), **r["reason"].str.split(":").str[0].value_counts().sort_index().to_dict()} for d, r in rejects.items()},
        "counts": count_table(main_set),
        "shift_counts": count_table(shift_set),
    })
    typer.echo(main_set.groupby(["split", "label"]).size().unstack(fill_value=0).to_string())


if __name__ == "__main__":
    run(app)
