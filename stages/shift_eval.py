"""Stage shift_eval: the model on the shifted domain, plain and with flip test-time augmentation."""
from pathlib import Path

import typer

from emopipe.cli import run
from emopipe.data import store
from emopipe.engine.evaluate import evaluate
from emopipe.io import write_json
from emopipe.stage import load_params, open_model

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    model: Path = typer.Option(Path("models/model.pt"), help="checkpoint"),
    data: Path = typer.Option(Path("data/packed/shift_eval.pt"), help="packed shift-domain evaluation set"),
    metrics: Path = typer.Option(Path("metrics/shift.json"), help="metrics file to write"),
) -> None:
    p = load_params(params)
    runtime, net, meta = open_model(model, p.train.precision)
    shift = store.load(data)
    plain, _ = evaluate(net, shift, meta["input"], runtime, p.eval.batch_size, source=str(data))
    tta, _ = evaluate(net, shift, meta["input"], runtime, p.eval.batch_size, tta=True)
    write_json(metrics, {"plain": plain, "tta": tta})
    typer.echo(f"shift: macro-F1 {plain['macro_f1']:.3f} plain, {tta['macro_f1']:.3f} with flip TTA")


if __name__ == "__main__":
    run(app)
