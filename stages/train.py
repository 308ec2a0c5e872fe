"""Stage train: train the model named by `model` (registry) and keep its best epoch by validation macro-F1."""
from pathlib import Path

import pandas as pd
import typer

from emopipe.checkpoint import input_spec, save_checkpoint
from emopipe.cli import run
from emopipe.data import store
from emopipe.io import write_csv, write_json
from emopipe.models import build, count_parameters
from emopipe.params import load_params
from emopipe.plots import curves_png
from emopipe.runtime import configure_threads, seed_everything, select_runtime
from emopipe.train import FitConfig, fit

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    data: Path = typer.Option(Path("data/packed"), help="pack stage output"),
    model_out: Path = typer.Option(Path("models/model.pt"), help="checkpoint to write"),
    metrics: Path = typer.Option(Path("metrics/train.json"), help="training metrics file"),
    plots: Path = typer.Option(Path("plots/train"), help="folder for history.csv and curves.png"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    p = load_params(params)
    seed_everything(p.seed)
    threads = configure_threads()
    runtime = select_runtime(p.train.precision)
    train_set, val_set = store.load(data / "train.pt"), store.load(data / "val.pt")
    faces = {"enabled": p.faces.enabled, "margin": p.faces.margin, "size": p.faces.size}
    spec = input_spec(p.input.size, p.input.channels, faces)
    model = build(p.model, len(train_set.classes), p.input.channels, **p.model_args)
    t = p.train
    cfg = FitConfig(t.epochs, t.batch_size, t.lr, t.weight_decay, t.label_smoothing, t.class_weights, t.weighted_sampler, t.augment, p.seed)
    result = fit(model, train_set, val_set, spec, cfg, runtime, progress)

    save_checkpoint(model_out, result.model, p.model, p.model_args, train_set.classes, spec)
    history = pd.DataFrame(result.history)
    write_csv(plots / "history.csv", history)
    curves_png(history, plots / "curves.png", result.best_epoch)
    best = result.history[result.best_epoch - 1]
    write_json(metrics, {
        "parameters": count_parameters(result.model),
        "best_epoch": result.best_epoch,
        "val_macro_f1": best["val_macro_f1"],
        "val_accuracy": best["val_accuracy"],
    })
    typer.echo(f"{p.model}: best epoch {result.best_epoch}, val macro-F1 {best['val_macro_f1']:.3f} "
               f"({result.seconds:.0f} s, {runtime.device.type}/{runtime.precision}, {threads} threads)")


if __name__ == "__main__":
    run(app)
