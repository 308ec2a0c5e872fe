"""Training, inference and pipeline speed on this machine, with pass/miss against the targets.

    python -m emopipe_studies.bench                 # measurements + full and no-op `dvc repro` in a sandbox
    python -m emopipe_studies.bench --no-repro      # measurements only (a minute on 2 CPU cores)

Rows:
- model-only train img/s: forward + backward + AdamW step of the params' model on random
  tensors already in memory (batch and input size from params), median over repeats;
- end-to-end train img/s: one real epoch of `fit` on data/packed/train, exactly as the
  train stage runs it (augmentation, normalisation, loss, optimiser; no validation), images
  per epoch-second; its ratio to model-only is the data path's overhead (target >= 0.9);
- inference img/s: `predict_proba` on the test set at eval.batch_size, median over repeats;
- peak RSS of the bench process; wall time of a full `dvc repro` and of the no-op `dvc repro`
  right after it in a sandbox copy (`make_sandbox`), and the repro's largest process's peak RSS.
Targets are reported, never enforced: the exit code is 0 when one is missed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import typer
from torch import nn

from emopipe import numerics
from emopipe.cli import run
from emopipe.config import Params, TrainParams, load_params
from emopipe.data import store
from emopipe.data.store import TensorSet
from emopipe.engine.evaluate import predict_proba
from emopipe.engine.fit import fit
from emopipe.errors import MissingFileError, ParamError
from emopipe.io import write_json
from emopipe.machine import cpu_model
from emopipe.modeling.checkpoint import params_spec
from emopipe.modeling.models import factory
from emopipe.runtime import Runtime, configure_threads, seed_everything, select_runtime
from emopipe_ci.harness import REPO, CommandFailed, load_overrides, make_sandbox, repro

app = typer.Typer(add_completion=False, help=__doc__)

GB = 1024  # MB
# key: (comparison, limit, shown as)
TARGETS: dict[str, tuple[str, float, str]] = {
    "e2e_ratio": (">=", 0.9, ">= 0.90"),
    "peak_rss_mb": ("<=", 3 * GB, "<= 3 GB"),
    "repro_s": ("<=", 300, "<= 300 s"),
    "noop_repro_s": ("<=", 5, "<= 5 s"),
    "repro_peak_rss_mb": ("<=", 3 * GB, "<= 3 GB"),
}
# key: (row label, number format), in table order
ROWS: dict[str, tuple[str, str]] = {
    "model_only_img_s": ("model-only train, img/s", "{:.1f}"),
    "e2e_img_s": ("end-to-end train (1 epoch of fit), img/s", "{:.1f}"),
    "epoch_s": ("end-to-end epoch time, s", "{:.2f}"),
    "e2e_ratio": ("end-to-end / model-only", "{:.3f}"),
    "inference_img_s": ("inference (predict_proba), img/s", "{:.1f}"),
    "peak_rss_mb": ("peak RSS of the bench process, MB", "{:.0f}"),
    "repro_s": ("full dvc repro (sandbox), s", "{:.1f}"),
    "noop_repro_s": ("no-op dvc repro right after, s", "{:.2f}"),
    "repro_peak_rss_mb": ("peak RSS of the repro's largest process, MB", "{:.0f}"),
}
REPRO_KEYS = ("repro_s", "noop_repro_s", "repro_peak_rss_mb")


# ---- measurements -------------------------------------------------------------------------

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(step: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall time of `step` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(max(1, repeats)):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_only_rate(model: nn.Module, runtime: Runtime, t: TrainParams, n_classes: int, channels: int, size: int,
                    warmup: int, repeats: int) -> float:
    """Train images/s of the model alone: one optimiser step on a fixed random batch in memory."""
    model = model.to(runtime.device).train()
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    g = torch.Generator().manual_seed(0)
    x = runtime.prepare(torch.randn(t.batch_size, channels, size, size, generator=g).to(runtime.device))
    y = torch.randint(0, n_classes, (t.batch_size,), generator=g).to(runtime.device)

    def step() -> None:
        with runtime.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=t.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return t.batch_size / median_seconds(step, runtime.device, warmup, repeats)


def end_to_end_epoch(new_model: Callable[[], nn.Module], train: TensorSet, spec: dict, t: TrainParams, seed: int,
                     runtime: Runtime, warmup: int) -> tuple[float, float, nn.Module]:
    """(images/s, seconds, trained model) of one epoch of the real `fit`, without validation.

    A short untimed `fit` on the first `warmup` batches comes first, so one-off set-up costs
    (kernel selection, allocator growth) stay out of the epoch, as they do in model-only.
    """
    one_epoch = dataclasses.replace(t, epochs=1)
    if warmup:
        head = train.subset(np.arange(min(len(train), warmup * t.batch_size)))
        fit(new_model(), head, None, spec, one_epoch, seed, runtime, progress=False)
    model = new_model()
    _sync(runtime.device)
    start = time.perf_counter()
    result = fit(model, train, None, spec, one_epoch, seed, runtime, progress=False)
    _sync(runtime.device)
    seconds = time.perf_counter() - start
    return len(train) / seconds, seconds, result.model


def inference_rate(model: nn.Module, images: torch.Tensor, spec: dict, runtime: Runtime, batch_size: int,
                   warmup: int, repeats: int) -> float:
    """Images/s of `predict_proba` over `images` (at most 4 batches of them, to bound the time)."""
    images = images[: 4 * batch_size]
    seconds = median_seconds(lambda: predict_proba(model, images, spec, runtime, batch_size), runtime.device,
                             min(warmup, 2), repeats)
    return len(images) / seconds


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MB (RUSAGE_CHILDREN: of the largest waited-for descendant)."""
    kb = resource.getrusage(who).ru_maxrss
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)  # macOS reports bytes


def time_repro(root: Path) -> dict[str, float]:
    """Wall time of a full `dvc repro` in `root`, of the no-op one right after, and the largest process's peak RSS."""
    full, noop = repro(root), repro(root)
    return {"repro_s": full, "noop_repro_s": noop, "repro_peak_rss_mb": peak_rss_mb(resource.RUSAGE_CHILDREN)}


def measure(p: Params, data: Path, runtime: Runtime, warmup: int, repeats: int) -> dict[str, float]:
    """Every in-process measurement, on the packed train and test sets in `data`."""
    train, test = store.load(data / "train"), store.load(data / "test")
    expected = (p.input.channels, p.input.size, p.input.size)
    if tuple(train.images.shape[1:]) != expected:
        raise ParamError(f"{data} is packed at {'×'.join(map(str, train.images.shape[1:]))} but params say "
                         f"{'×'.join(map(str, expected))}: run `dvc repro pack`")
    spec = params_spec(p.input, p.faces)  # as the train stage
    build = factory(p.model, p.model_args, p.input.channels, train.classes)

    def new_model() -> nn.Module:
        torch.manual_seed(p.seed)  # as the train stage: seeded, then built
        return build()

    model_only = model_only_rate(new_model(), runtime, p.train, len(train.classes), p.input.channels, p.input.size, warmup, repeats)
    e2e, seconds, trained = end_to_end_epoch(new_model, train, spec, p.train, p.seed, runtime, warmup)
    inference = inference_rate(trained, test.images, spec, runtime, p.eval.batch_size, warmup, repeats)
    return {
        "model_only_img_s": model_only,
        "e2e_img_s": e2e,
        "epoch_s": seconds,
        "e2e_ratio": e2e / model_only,
        "inference_img_s": inference,
        "peak_rss_mb": peak_rss_mb(),
    }


# ---- report ------------------------------------------------------------------------------

def machine_facts(runtime: Runtime, threads: int) -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "threads": str(threads),
        "device / precision": f"{runtime.device.type}/{runtime.precision}" + (" channels_last" if runtime.channels_last else ""),
        "CPU": cpu_model(),
        "load average (1/5/15 min)": " ".join(f"{x:.2f}" for x in os.getloadavg()),  # > cores: timings are shared
    }


def verdicts(results: dict[str, float | None]) -> dict[str, str]:
    """pass / miss per target; skipped when the value was not measured."""
    out = {}
    for key, (op, limit, _) in TARGETS.items():
        value = results.get(key)
        if value is None:
            out[key] = "skipped"
        else:
            out[key] = "pass" if (value >= limit if op == ">=" else value <= limit) else "miss"
    return out


def render(facts: dict[str, str], config: str, results: dict[str, float | None]) -> str:
    """One table: machine facts and config (left-aligned values), then every measurement with its target and verdict."""
    verdict = verdicts(results)
    measured = []
    for key, (label, fmt) in ROWS.items():
        value = results.get(key)
        target = TARGETS[key][2] if key in TARGETS else ""
        measured.append((label, fmt.format(value) if value is not None else "-", target, verdict.get(key, "")))
    w_label = max(len(r[0]) for r in measured)
    w_value = max(len("value"), *(len(r[1]) for r in measured))
    w_target = max(len(r[2]) for r in measured)
    header = f"{'row':<{w_label}}  {'value':>{w_value}}  {'target':<{w_target}}  verdict"
    lines = [header, "-" * len(header)]
    lines += [f"{name:<{w_label}}  {value}" for name, value in (facts | {"config": config}).items()]
    lines += [f"{a:<{w_label}}  {b:>{w_value}}  {c:<{w_target}}  {d}".rstrip() for a, b, c, d in measured]
    return "\n".join(lines)


# ---- CLI ---------------------------------------------------------------------------------

def packed(data: Path) -> bool:
    return (data / "train").is_dir() and (data / "test").is_dir()


@contextlib.contextmanager
def scratch(keep: bool) -> Iterator[Path]:
    """A temporary folder for the sandbox, removed afterwards unless `keep`."""
    tmp = Path(tempfile.mkdtemp(prefix="emopipe-bench-"))
    try:
        yield tmp
    finally:
        if keep:
            typer.echo(f"sandbox kept: {tmp / 'repo'}", err=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def sandbox_repro(tmp: Path, params: Path) -> tuple[Path, dict[str, float]]:
    """Copy the repo into `tmp` with these params (merged over params.yaml) and time its repros."""
    same = params.resolve() == (REPO / "params.yaml").resolve()
    root = make_sandbox(tmp / "repo", None if same else load_overrides(params))
    typer.echo(f"running a full `dvc repro` in {root} (minutes) ...", err=True)
    return root, time_repro(root)


@app.command()
def main(
    params: Path = typer.Option(Path("params.yaml"), help="params file: model, input size, batch size, precision"),
    data: Path = typer.Option(Path("data/packed"), help="pack stage output (train, test)"),
    repeats: int = typer.Option(20, min=1, help="timed repeats (median) of model-only steps and inference passes"),
    warmup: int = typer.Option(5, min=0, help="untimed warm-up steps before timing"),
    repro: bool = typer.Option(True, help="also time a full and a no-op `dvc repro` in a sandbox copy"),
    keep: bool = typer.Option(False, help="keep the sandbox of --repro"),
    json_out: Path = typer.Option(None, "--json", help="also write the results to this JSON file"),
) -> None:
    p = load_params(params)
    numerics.require(p.train.precision)
    if not packed(data) and not repro:
        raise MissingFileError(f"{data}/train and test are needed: run `dvc repro pack` first "
                                "(or drop --no-repro to bench on the sandbox's packed data)")
    seed_everything(p.seed)
    threads = configure_threads()
    runtime = select_runtime(p.train.precision)
    results: dict[str, float | None] = dict.fromkeys(REPRO_KEYS)
    with contextlib.ExitStack() as stack:
        if repro:
            tmp = stack.enter_context(scratch(keep))
            try:
                root, timings = sandbox_repro(tmp, params)
            except CommandFailed as err:  # a stage failed: its output is in the message
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(1) from None
            results.update(timings)
            if not packed(data):
                typer.echo(f"{data} not found here: benchmarking on the sandbox's {root / 'data/packed'}", err=True)
                data = root / "data/packed"
        results.update(measure(p, data, runtime, warmup, repeats))
    config = (f"{p.model}, {p.input.channels}×{p.input.size}×{p.input.size}, batch {p.train.batch_size}, "
              f"eval batch {p.eval.batch_size}, augment {p.train.augment}")
    facts = machine_facts(runtime, threads)
    typer.echo(render(facts, config, results))
    if json_out:
        write_json(json_out, {"machine": facts, "config": config, "results": results,
                              "targets": {k: {"target": TARGETS[k][2], "verdict": v} for k, v in verdicts(results).items()}})


if __name__ == "__main__":
    run(app)
