"""Stage adapt: adapt to k images per class of the shifted domain (adapt.method), then re-evaluate:
target before/after (gain) and the main domain's test split before/after (forgetting)."""
from pathlib import Path

import typer

from emopipe.cli import run
from emopipe.config import load_params
from emopipe.data import store
from emopipe.engine.adapt import adapt_and_report
from emopipe.engine.evaluate import NO_SHIFT
from emopipe.io import write_json
from emopipe.modeling.checkpoint import load_checkpoint, save_checkpoint
from emopipe.runtime import seed_everything, start

app = typer.Typer(add_completion=False, help=__doc__)
PARAMS = ["seed", "shift.source", "adapt", "eval.batch_size", "train.weight_decay", "train.label_smoothing",
          "train.class_weights", "train.precision"]


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    model: Path = typer.Option(Path("models/model.pt"), help="checkpoint to adapt"),
    data: Path = typer.Option(Path("data/packed"), help="pack stage output"),
    model_out: Path = typer.Option(Path("models/adapted.pt"), help="adapted checkpoint to write"),
    metrics: Path = typer.Option(Path("metrics/adapt.json"), help="metrics file to write"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    p = load_params(params, only=PARAMS)
    seed_everything(p.seed)
    runtime = start(p.train.precision)
    net, meta = load_checkpoint(model, runtime.device)
    spec = meta["input"]
    if p.shift.source == "none":  # nothing to adapt to: the adapted checkpoint is the source model
        save_checkpoint(model_out, net, meta["arch"], meta["arch_args"], meta["classes"], spec)
        write_json(metrics, NO_SHIFT)
        typer.echo(f"adapt: skipped ({NO_SHIFT['skipped']})")
        return
    shots, shift_eval, test, train = (store.load(data / n) for n in ("shift_adapt", "shift_eval", "test", "train"))
    a = p.adapt
    adapted, report = adapt_and_report(net, shots, shift_eval, test, train, spec, a, p.train, p.seed, runtime, p.eval.batch_size, progress)
    save_checkpoint(model_out, adapted.target, meta["arch"], meta["arch_args"], meta["classes"], spec)
    write_json(metrics, {"shots_per_class": a.shots, **report})
    typer.echo(f"adapt ({a.method}, {a.shots}/class): shift macro-F1 {report['before']['macro_f1']:.3f} -> {report['after']['macro_f1']:.3f}; "
               f"in-domain {report['in_domain_before']['macro_f1']:.3f} -> {report['in_domain_after']['macro_f1']:.3f}")


if __name__ == "__main__":
    run(app)
