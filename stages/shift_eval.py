"""Stage shift_eval: the model on the shifted domain, plain and with flip test-time augmentation
(and with `eval.tta: multiscale`, multi-scale too); metrics averaged over the classes that domain holds."""
from pathlib import Path

import typer

from emopipe.cli import run
from emopipe.config import load_params
from emopipe.data import store
from emopipe.engine.evaluate import NO_SHIFT, evaluate
from emopipe.io import write_json
from emopipe.modeling.checkpoint import load_checkpoint
from emopipe.runtime import start

app = typer.Typer(add_completion=False, help=__doc__)
PARAMS = ["shift.source", "eval", "train.precision"]


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    model: Path = typer.Option(Path("models/model.pt"), help="checkpoint"),
    data: Path = typer.Option(Path("data/packed/shift_eval"), help="packed shift-domain evaluation set"),
    metrics: Path = typer.Option(Path("metrics/shift.json"), help="metrics file to write"),
) -> None:
    p = load_params(params, only=PARAMS)
    if p.shift.source == "none":
        write_json(metrics, NO_SHIFT)
        typer.echo(f"shift: skipped ({NO_SHIFT['skipped']})")
        return
    runtime = start(p.train.precision)
    net, meta = load_checkpoint(model, runtime.device)
    shift = store.load(data)
    policies = ["none", "flip"] + (["multiscale"] if p.eval.tta == "multiscale" else [])
    results = {policy: evaluate(net, shift, meta["input"], runtime, p.eval.batch_size, tta=policy, source=str(data),
                                scales=tuple(p.eval.tta_scales))[0] for policy in policies}
    present = sorted({shift.classes[i] for i in shift.labels.tolist()})
    out = {"classes": present, "plain": results.pop("none"), "tta": results.pop("flip"), **results}
    write_json(metrics, out)
    typer.echo(f"shift ({len(present)} classes): macro-F1 {out['plain']['macro_f1']:.3f} plain, {out['tta']['macro_f1']:.3f} with flip TTA"
               + (f", {out['multiscale']['macro_f1']:.3f} multi-scale" if "multiscale" in out else ""))


if __name__ == "__main__":
    run(app)
