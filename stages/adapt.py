"""Stage adapt: fine-tune on k images per class of the shifted domain, then re-evaluate (before/after)."""
from pathlib import Path

import typer

from emopipe.cli import run
from emopipe.data import store
from emopipe.engine.evaluate import evaluate
from emopipe.engine.fit import FitConfig, fit
from emopipe.io import write_json
from emopipe.modeling.checkpoint import save_checkpoint
from emopipe.runtime import seed_everything
from emopipe.stage import load_params, open_model

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = typer.Option("params.yaml", help="params file"),
    model: Path = typer.Option(Path("models/model.pt"), help="checkpoint to adapt"),
    data: Path = typer.Option(Path("data/packed"), help="pack stage output"),
    model_out: Path = typer.Option(Path("models/adapted.pt"), help="adapted checkpoint to write"),
    metrics: Path = typer.Option(Path("metrics/adapt.json"), help="metrics file to write"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    p = load_params(params)
    seed_everything(p.seed)
    runtime, net, meta = open_model(model, p.train.precision)
    shots, shift_eval, test = (store.load(data / f"{n}.pt") for n in ("shift_adapt", "shift_eval", "test"))
    spec, bs = meta["input"], p.eval.batch_size
    before, _ = evaluate(net, shift_eval, spec, runtime, bs, source=str(data / "shift_eval.pt"))
    in_domain_before, _ = evaluate(net, test, spec, runtime, bs, source=str(data / "test.pt"))

    a = p.adapt
    cfg = FitConfig(a.epochs, a.batch_size, a.lr, p.train.weight_decay, p.train.label_smoothing, p.train.class_weights, False, a.augment, p.seed)
    adapted = fit(net, shots, None, spec, cfg, runtime, progress).model
    after, _ = evaluate(adapted, shift_eval, spec, runtime, bs)
    in_domain_after, _ = evaluate(adapted, test, spec, runtime, bs)

    save_checkpoint(model_out, adapted, meta["arch"], meta["arch_args"], meta["classes"], spec)
    write_json(metrics, {
        "shots_per_class": a.shots,
        "before": before,
        "after": after,
        "in_domain_before": {k: in_domain_before[k] for k in ("accuracy", "macro_f1")},
        "in_domain_after": {k: in_domain_after[k] for k in ("accuracy", "macro_f1")},
        "forgetting": round(in_domain_before["macro_f1"] - in_domain_after["macro_f1"], 4),
    })
    typer.echo(f"adapt ({a.shots}/class): shift macro-F1 {before['macro_f1']:.3f} -> {after['macro_f1']:.3f}; "
               f"in-domain {in_domain_before['macro_f1']:.3f} -> {in_domain_after['macro_f1']:.3f}")


if __name__ == "__main__":
    run(app)
