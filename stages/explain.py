"""Stage explain: what the model looks at (first-layer filters, feature maps, Grad-CAM) as PNGs in plots/explain."""
from pathlib import Path

import typer

from emopipe.cli import run
from emopipe.config import load_params
from emopipe.data import store
from emopipe.engine.explain import write_explanations
from emopipe.modeling.checkpoint import load_checkpoint
from emopipe.runtime import start

app = typer.Typer(add_completion=False, help=__doc__)
PARAMS = ["eval.batch_size", "train.precision"]


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    model: Path = typer.Option(Path("models/model.pt"), help="checkpoint"),
    data: Path = typer.Option(Path("data/packed/test"), help="packed test split"),
    out: Path = typer.Option(Path("plots/explain"), help="folder for filters.png, feature_maps.png and gradcam.png"),
    examples: int = typer.Option(6, min=1, help="Grad-CAM images per row (correct, wrong)"),
) -> None:
    p = load_params(params, only=PARAMS)
    runtime = start(p.train.precision)
    net, meta = load_checkpoint(model, runtime.device)
    test = store.load(data)
    write_explanations(net, test, meta["input"], runtime, out, p.eval.batch_size, examples)
    typer.echo(f"explain: wrote {out}/filters.png, feature_maps.png, gradcam.png ({meta['arch']}, {len(test)} test images)")


if __name__ == "__main__":
    run(app)
