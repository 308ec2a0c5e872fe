"""Stage evaluate: test-split metrics (metrics/eval.json), confusion matrix as DVC plot data and PNG."""
from pathlib import Path

import pandas as pd
import typer

from emopipe.cli import run
from emopipe.data import store
from emopipe.engine.evaluate import confusion, evaluate
from emopipe.engine.plots import confusion_png
from emopipe.io import write_csv, write_json
from emopipe.stage import load_params, open_model

app = typer.Typer(add_completion=False, help=__doc__)


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
    data: Path = typer.Option(Path("data/packed/test.pt"), help="packed test split"),
    metrics: Path = typer.Option(Path("metrics/eval.json"), help="metrics file to write"),
    plots: Path = typer.Option(Path("plots/eval"), help="folder for predictions.csv and confusion.png"),
) -> None:
    p = load_params(params)
    runtime, net, meta = open_model(model, p.train.precision)
    test = store.load(data)
    result, probs = evaluate(net, test, meta["input"], runtime, p.eval.batch_size, tta=p.eval.tta, source=str(data),
                              scales=tuple(p.eval.tta_scales))
    write_json(metrics, result)
    write_csv(plots / "predictions.csv", predictions_frame(test, probs))
    matrix = confusion(test.labels.numpy(), probs.argmax(1), len(test.classes))
    confusion_png(matrix, test.classes, plots / "confusion.png", f"{meta['arch']} on test: macro-F1 {result['macro_f1']:.3f}")
    typer.echo(f"test: accuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}")


if __name__ == "__main__":
    run(app)
