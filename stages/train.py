"""Stage train: train the model named by `model` (registry) and keep its best epoch by validation macro-F1.

metrics/train.json and plots/train/history.csv are rewritten after every epoch, so a running experiment
shows its progress (`dvc exp show`, `dvc plots show`); the final files hold the best epoch.
With `train.processes: N > 1` the stage relaunches itself under torchrun (DDP, N processes);
started by torchrun directly it joins that job. Rank 0 writes every output.
"""
import os
import sys
from pathlib import Path

import pandas as pd
import typer

from emopipe import numerics
from emopipe.cli import run
from emopipe.config import load_params
from emopipe.data import store
from emopipe.engine.crossval import cross_validate, pool
from emopipe.engine.fit import check_training_choices, fit
from emopipe.engine.plots import curves_png
from emopipe.io import write_csv, write_json
from emopipe.modeling.checkpoint import params_spec, save_checkpoint
from emopipe.modeling.models import count_parameters, factory
from emopipe.runtime import (
    Distributed,
    configure_threads,
    seed_everything,
    select_runtime,
    torchrun,
)
from emopipe.versions import package_versions

app = typer.Typer(add_completion=False, help=__doc__)
# faces: recorded in the checkpoint, so predict crops new photos as the training images were
PARAMS = ["seed", "data_seed", "model", "model_args", "input", "train", "oversample", "faces"]


def epoch_summary(history: list[dict], best_epoch: int) -> dict:
    best = next(row for row in history if row["epoch"] == best_epoch)
    return {"best_epoch": best_epoch, "epochs_run": history[-1]["epoch"],
            "val_macro_f1": best["val_macro_f1"], "val_accuracy": best["val_accuracy"]}


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    data: Path = typer.Option(Path("data/packed"), help="pack stage output"),
    split: Path = typer.Option(Path("data/split"), help="split stage output (duplicate groups, for train.cv_folds > 1)"),
    model_out: Path = typer.Option(Path("models/model.pt"), help="checkpoint to write"),
    metrics: Path = typer.Option(Path("metrics/train.json"), help="training metrics file"),
    plots: Path = typer.Option(Path("plots/train"), help="folder for history.csv and curves.png"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    p = load_params(params, only=PARAMS)
    check_training_choices(p.model, p.train)
    numerics.require(p.train.precision)
    if p.train.processes > 1 and "LOCAL_RANK" not in os.environ:
        raise typer.Exit(torchrun(p.train.processes, sys.argv))
    dist = Distributed.from_env()
    seed_everything(p.seed)
    threads = configure_threads(dist.world_size)
    runtime = select_runtime(p.train.precision, dist.device)
    train_set, val_set = store.load(data / "train"), store.load(data / "val")
    spec = params_spec(p.input, p.faces)
    new_model = factory(p.model, p.model_args, p.input.channels, train_set.classes)

    cv = None
    if p.train.cv_folds > 1:
        groups = pd.concat([pd.read_csv(split / f"{n}.csv") for n in ("train", "val")]).set_index("image")["group"]
        data_pool = pool(train_set, val_set)
        cv = cross_validate(new_model, data_pool, groups.loc[data_pool.paths].to_numpy(), p.train.cv_folds, p.oversample,
                            p.data_seed, spec, p.train, p.seed, runtime, progress)
    def live(history: list[dict], best_epoch: int) -> None:
        """After each epoch: the history so far and the best epoch so far, for `dvc exp show` / `dvc plots`
        on a running experiment (the VS Code extension reads the same files)."""
        write_csv(plots / "history.csv", pd.DataFrame(history))
        write_json(metrics, epoch_summary(history, best_epoch))

    result = fit(new_model(), train_set, val_set, spec, p.train, p.seed, runtime, progress, dist, on_epoch=live)
    dist.close()
    if not dist.is_main:
        return

    save_checkpoint(model_out, result.model, p.model, p.model_args, train_set.classes, spec)
    history = pd.DataFrame(result.history)
    write_csv(plots / "history.csv", history)
    curves_png(history, plots / "curves.png", result.best_epoch)
    best = next(row for row in result.history if row["epoch"] == result.best_epoch)
    write_json(metrics, {
        "parameters": count_parameters(result.model),
        **epoch_summary(result.history, result.best_epoch),
        "processes": dist.world_size,
        "numerics": numerics.describe(runtime.device.type, runtime.precision, threads),
        "versions": package_versions(),
    } | ({"cv": cv} if cv else {}))
    typer.echo(f"{p.model}: best epoch {result.best_epoch}, val macro-F1 {best['val_macro_f1']:.3f} "
               f"({result.seconds:.0f} s, {runtime.device.type}/{runtime.precision}, {dist.world_size}×{threads} threads)"
               + (f"; {cv['folds']}-fold CV macro-F1 {cv['val_macro_f1']['mean']:.3f} ± {cv['val_macro_f1']['std']:.3f}" if cv else ""))


if __name__ == "__main__":
    run(app)
