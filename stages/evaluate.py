"""Stage evaluate: test-split metrics (metrics/eval.json), confusion matrix as DVC plot data and PNG.

With `split.protocol: kfold` the reported figure is the mean ± std over the person-grouped folds:
fold 0 is the trained model's test split, and a fresh model is trained for every other fold.
"""
from pathlib import Path

import pandas as pd
import typer

from emopipe.cli import run
from emopipe.config import load_params
from emopipe.data import store
from emopipe.engine.crossval import kfold_test, pool
from emopipe.engine.evaluate import evaluate, predict_proba
from emopipe.engine.metrics import confusion
from emopipe.engine.plots import confusion_png
from emopipe.io import write_csv, write_json
from emopipe.modeling.checkpoint import load_checkpoint
from emopipe.modeling.models import factory
from emopipe.runtime import start

app = typer.Typer(add_completion=False, help=__doc__)
# split.protocol: kfold trains a model per extra fold, as the train stage does (seed, model, train, oversample)
PARAMS = ["eval", "train", "seed", "data_seed", "model", "model_args", "input.channels", "oversample",
          "split.protocol", "split.train", "split.val"]


def predictions_frame(data: store.TensorSet, probs) -> pd.DataFrame:
    """One row per image: path, actual, predicted and per-class probabilities."""
    frame = pd.DataFrame({
        "path": data.paths,
        "actual": [data.classes[i] for i in data.labels.tolist()],
        "predicted": [data.classes[i] for i in probs.argmax(1)],
    })
    return frame.join(pd.DataFrame(probs.round(4), columns=[f"p_{c}" for c in data.classes]))


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    model: Path = typer.Option(Path("models/model.pt"), help="checkpoint"),
    data: Path = typer.Option(Path("data/packed"), help="pack stage output (test; train and val for k-fold)"),
    split: Path = typer.Option(Path("data/split"), help="split stage output (folds, for split.protocol: kfold)"),
    metrics: Path = typer.Option(Path("metrics/eval.json"), help="metrics file to write"),
    plots: Path = typer.Option(Path("plots/eval"), help="folder for predictions.csv and confusion.png"),
    progress: bool = typer.Option(True, help="show progress bars (k-fold training)"),
) -> None:
    p = load_params(params, only=PARAMS)
    runtime = start(p.train.precision)
    net, meta = load_checkpoint(model, runtime.device)
    test = store.load(data / "test")
    if p.split.protocol == "kfold":
        everything = pool(store.load(data / "train"), store.load(data / "val"), test)
        frame = pd.concat([pd.read_csv(split / f"{n}.csv") for n in ("train", "val", "test")]).set_index("image").loc[everything.paths]

        def predict(fold_model, part: store.TensorSet):
            return predict_proba(fold_model, part.images, meta["input"], runtime, p.eval.batch_size, p.eval.tta, tuple(p.eval.tta_scales))

        result, probs = kfold_test(factory(p.model, p.model_args, p.input.channels, test.classes), everything, frame,
                                   p.split.train / (p.split.train + p.split.val), p.oversample, p.data_seed, p.seed,
                                   meta["input"], p.train, runtime, predict, fold0=predict(net, test), progress=progress)
        test = everything
    else:
        result, probs = evaluate(net, test, meta["input"], runtime, p.eval.batch_size, tta=p.eval.tta, source=str(data / "test"),
                                 scales=tuple(p.eval.tta_scales))
    write_json(metrics, result)
    write_csv(plots / "predictions.csv", predictions_frame(test, probs))
    matrix = confusion(test.labels.numpy(), probs.argmax(1), len(test.classes))
    figure = f"{result['folds']}-fold macro-F1 {result['macro_f1']:.3f} ± {result['macro_f1_std']:.3f}" if "folds" in result \
        else f"test: macro-F1 {result['macro_f1']:.3f}"
    confusion_png(matrix, test.classes, plots / "confusion.png", f"{meta['arch']} on {figure}")
    typer.echo(f"{figure}, accuracy {result['accuracy']:.3f}")


if __name__ == "__main__":
    run(app)
