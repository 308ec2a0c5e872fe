"""The adaptation study: each `adapt.method`'s target gain and forgetting, over seeds, as JSON and markdown.

    emopipe adaptation --study reports/adaptation-study.yaml --muxspace ../shared/datasets/muxspace-dev \\
        --seeds 0 --seeds 1 --seeds 2 --seeds 3 --seeds 4 --out reports/adaptation.json

Per setting of the study file (params merged over params.yaml as a recipe is; `MUXSPACE` in a value is replaced
by --muxspace, and a setting that names it is skipped without the folder), a sandbox copy of the
repository runs `dvc repro train` once: the data stages and one source model (seed 0). Then, for
every seed, the shift domain's shots are drawn again (`adapt.shots` per class, whole person and
duplicate groups, as the split stage draws them) and every method adapts the same source model
on the same shots from the same random state (engine.adapt.adapt_and_report, the adapt stage's
code). Gain (target macro-F1 after − before) and forgetting (in-domain macro-F1 before − after)
are paired over the seeds: mean and 95% Student-t interval. Each setting records its seeds and
machine; with `--only`, the other settings already in --out are kept.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import time
from pathlib import Path

import pandas as pd
import typer
import yaml

from emopipe.cli import run
from emopipe.config import load_params
from emopipe.data import store
from emopipe.data.split import take_shots
from emopipe.engine.adapt import METHODS, adapt_and_report
from emopipe.io import write_json
from emopipe.machine import available_cores, cpu_model
from emopipe.modeling.checkpoint import load_checkpoint
from emopipe.runtime import seed_everything, start
from emopipe.stats import paired_difference
from emopipe_ci.harness import make_sandbox, repro
from emopipe_studies.report import write_report

app = typer.Typer(add_completion=False, help=__doc__)
PLACEHOLDER = "MUXSPACE"


def substitute(tree, folder: Path | None):
    """`tree` with PLACEHOLDER in its strings replaced by `folder` (None: leave as is)."""
    if isinstance(tree, dict):
        return {k: substitute(v, folder) for k, v in tree.items()}
    if isinstance(tree, list):
        return [substitute(v, folder) for v in tree]
    return tree.replace(PLACEHOLDER, str(folder)) if isinstance(tree, str) and folder is not None else tree


def needs_folder(tree) -> bool:
    return PLACEHOLDER in yaml.safe_dump(tree)


def shift_pool(repo: Path) -> tuple[pd.DataFrame, store.TensorSet]:
    """The shift domain's images (shots and evaluation images together) and their split rows, from the sandbox."""
    split, packed = repo / "data" / "split", repo / "data" / "packed"
    frame = pd.concat([pd.read_csv(split / f"shift_{n}.csv") for n in ("adapt", "eval")], ignore_index=True)
    return frame, store.concat(store.load(packed / "shift_adapt"), store.load(packed / "shift_eval"))


def draw(pool: tuple[pd.DataFrame, store.TensorSet], shots: int, seed: int) -> tuple[store.TensorSet, store.TensorSet]:
    """(shots, evaluation images) drawn from the pool with `seed`, whole duplicate/person groups."""
    frame, images = pool
    role = take_shots(frame["label"], frame["group"].to_numpy(), shots, seed)
    return images.subset((role == "adapt").nonzero()[0]), images.subset((role == "eval").nonzero()[0])


def run_setting(repo: Path, methods: list[str], seeds: list[int]) -> dict:
    """Every method over every seed on the sandbox's source model: per-run reports and paired summaries."""
    p = load_params(repo / "params.yaml")
    runtime = start(p.train.precision)
    model, meta = load_checkpoint(repo / "models" / "model.pt", runtime.device)
    train, test = (store.load(repo / "data" / "packed" / n) for n in ("train", "test"))
    pool = shift_pool(repo)
    runs: dict[str, dict[int, dict]] = {m: {} for m in methods}
    for seed in seeds:
        shots, target = draw(pool, p.adapt.shots, seed)
        for method in methods:
            started = time.monotonic()
            seed_everything(seed)  # every method from the same random state: paired comparisons
            _, report = adapt_and_report(model, shots, target, test, train, meta["input"], dataclasses.replace(p.adapt, method=method),
                                         p.train, seed, runtime, p.eval.batch_size)
            runs[method][seed] = {"seconds": round(time.monotonic() - started, 1), **{k: report[k] for k in (
                "shots_used", "gain", "forgetting")}, "before": report["before"]["macro_f1"], "after": report["after"]["macro_f1"],
                "in_domain_before": report["in_domain_before"]["macro_f1"], "in_domain_after": report["in_domain_after"]["macro_f1"]}
            typer.echo(f"  seed {seed} {method}: gain {report['gain']:+.3f}, forgetting {report['forgetting']:+.3f}", err=True)
    return {"classes": report["classes"], "shots_per_class": p.adapt.shots, "methods": {m: summarise(runs[m]) for m in methods}}


def summarise(by_seed: dict[int, dict]) -> dict:
    gain = paired_difference({s: r["after"] for s, r in by_seed.items()}, {s: r["before"] for s, r in by_seed.items()})
    forgetting = paired_difference({s: r["in_domain_before"] for s, r in by_seed.items()},
                                   {s: r["in_domain_after"] for s, r in by_seed.items()})
    return {
        "gain": {"mean": round(gain.mean, 4), "ci95": _half(gain)},
        "forgetting": {"mean": round(forgetting.mean, 4), "ci95": _half(forgetting)},
        "before": round(statistics.fmean(r["before"] for r in by_seed.values()), 4),
        "after": round(statistics.fmean(r["after"] for r in by_seed.values()), 4),
        "runs": {str(s): r for s, r in by_seed.items()},
    }


def _half(d) -> float | None:
    return None if d.half_width is None else round(d.half_width, 4)


def markdown(settings: dict[str, dict]) -> str:
    """One row per setting and method: target macro-F1 before → after, gain and forgetting (mean ± 95% CI)."""
    rows = ["| setting | method | target macro-F1 before → after | gain | forgetting (in-domain drop) |", "|---|---|---|---|---|"]
    for name, setting in settings.items():
        for method, m in setting["methods"].items():
            g, f = m["gain"], m["forgetting"]
            rows.append(f"| {name} | {method} | {m['before']:.3f} → {m['after']:.3f} | {g['mean']:+.3f} ± {g['ci95'] or 0:.3f} "
                        f"| {f['mean']:+.3f} ± {f['ci95'] or 0:.3f} |")
    return "\n".join(rows) + "\n"


@app.command()
def main(
    study: Path = typer.Option(Path("reports/adaptation-study.yaml"), help="settings: name -> params merged over params.yaml"),
    muxspace: Path = typer.Option(None, help="muxspace-dev folder, for settings that name MUXSPACE (skipped without it)"),
    seeds: list[int] = typer.Option([0, 1, 2, 3, 4], "--seeds", help="adaptation seeds (repeat the option)"),
    methods: list[str] = typer.Option(sorted(METHODS), "--methods", help="adapt.method values to compare (repeat the option)"),
    only: list[str] = typer.Option(None, "--only", help="run only these settings (repeatable)"),
    workdir: Path = typer.Option(Path(".adaptation"), help="sandbox parent folder (replaced unless --keep)"),
    keep: bool = typer.Option(False, help="reuse the sandboxes of an earlier run (their data and source models)"),
    out: Path = typer.Option(Path("reports/adaptation.json"), help="JSON written here (atomically), markdown beside it"),
) -> None:
    if unknown := sorted(set(methods) - set(METHODS)):
        raise typer.BadParameter(f"--methods {unknown}: not adapt methods ({', '.join(sorted(METHODS))})")
    if muxspace is not None and not muxspace.is_dir():
        raise typer.BadParameter(f"--muxspace {muxspace} is not a folder")
    if not study.is_file():
        raise typer.BadParameter(f"--study {study} does not exist; give a YAML file of settings (name: params)")
    settings = yaml.safe_load(study.read_text())
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    results, skipped = kept_settings(out, only), []
    for name, overrides in settings.items():
        if name.startswith("_"):  # YAML anchors shared by the settings
            continue
        if (only and name not in only) or (needs_folder(overrides) and muxspace is None):
            skipped.append(name)
            continue
        typer.echo(f"{name}: data stages and the source model", err=True)
        started = time.monotonic()
        repo = workdir / name.replace("/", "-")
        reused = keep and (repo / ".git").is_dir()
        if not reused:  # the setting merged as `emopipe recipe` applies a recipe
            make_sandbox(repo, substitute(overrides, muxspace and muxspace.resolve()))
        repro(repo, "train")  # with --keep, a no-op where the source model is up to date
        minutes = None if reused else round((time.monotonic() - started) / 60, 2)  # data stages + source model
        results[name] = {"params": overrides, "seeds": seeds, "machine": {"cpu": cpu_model(), "cores": available_cores()},
                         "source_model_minutes": minutes, **run_setting(repo, methods, seeds)}
        write(out, {"methods": methods, "settings": results, "skipped": [n for n in skipped if n not in results]})
    typer.echo(markdown(results))


def kept_settings(out: Path, only: list[str] | None) -> dict:
    """With --only, the other settings already measured in `out` stay in it (each records its seeds and machine)."""
    if not only or not out.is_file():
        return {}
    return {name: r for name, r in json.loads(out.read_text())["settings"].items() if name not in only}


def write(out: Path, result: dict) -> None:
    """The JSON, and its markdown table beside it."""
    write_json(out, result)
    write_report(out.with_suffix(".md"), markdown(result["settings"]))


if __name__ == "__main__":
    run(app)
