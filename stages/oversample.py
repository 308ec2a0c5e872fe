"""Stage oversample: add copies of minority-class images to the train split (never val/test)."""
from pathlib import Path

import pandas as pd
import typer

from emopipe.cli import run
from emopipe.config import load_params
from emopipe.data.oversample import oversample
from emopipe.io import write_csv

app = typer.Typer(add_completion=False, help=__doc__)
PARAMS = ["data_seed", "oversample"]


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    train: Path = typer.Option(Path("data/split/train.csv"), help="train split manifest"),
    out: Path = typer.Option(Path("data/oversampled/train.csv"), help="output manifest"),
) -> None:
    p = load_params(params, only=PARAMS)
    frame = pd.read_csv(train)
    result = oversample(frame, p.oversample.method, p.oversample.targets, p.data_seed)
    write_csv(out, result)
    before, after = frame["label"].value_counts(), result["label"].value_counts()
    typer.echo(pd.DataFrame({"before": before, "after": after}).sort_index().to_string())


if __name__ == "__main__":
    run(app)
