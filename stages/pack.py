"""Stage pack: decode and resize every image once into a uint8 array per split (data/packed/<split>/)."""
from pathlib import Path

import pandas as pd
import typer

from emopipe.cli import run
from emopipe.config import load_params
from emopipe.data import store
from emopipe.io import atomic_path

app = typer.Typer(add_completion=False, help=__doc__)
PARAMS = ["input"]


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    split: Path = typer.Option(Path("data/split"), help="split stage output"),
    train: Path = typer.Option(Path("data/oversampled/train.csv"), help="oversampled train manifest"),
    out: Path = typer.Option(Path("data/packed"), help="output folder"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    p = load_params(params, only=PARAMS)
    manifests = {"train": pd.read_csv(train)} | {name: pd.read_csv(split / f"{name}.csv") for name in ("val", "test", "shift_adapt", "shift_eval")}
    # Class names come from the data: every label of the main domain, in sorted order.
    classes = sorted(set(pd.concat([manifests[n] for n in ("train", "val", "test")])["label"]))
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for name, frame in manifests.items():
            store.pack(tmp / name, frame, classes, p.input.size, p.input.channels, progress)
    typer.echo(f"packed {sum(map(len, manifests.values()))} images at {p.input.size}px, {len(classes)} classes: {', '.join(classes)}")


if __name__ == "__main__":
    run(app)
