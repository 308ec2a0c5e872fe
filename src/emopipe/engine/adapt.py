"""Few-shot adaptation to a second domain, by method, and its before/after report.

    finetune  every weight trains on the shots
    head      only the classifier trains; the backbone runs in inference mode, so its batch-norm
              statistics stay the source's
    bn        no labels, no gradients: batch-norm statistics re-estimated on the shots' images. Each
              domain keeps its own statistics: the source model still serves the source domain
    replay    finetune with source train images mixed in (`replay` per shot), against forgetting

A new method is one function `(model, shots, source_train, spec, cfg, runtime, progress) -> Adapted`
and one line in METHODS.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from emopipe.data.store import TensorSet, concat
from emopipe.engine.evaluate import evaluate
from emopipe.engine.fit import FitConfig, fit
from emopipe.errors import ParamError
from emopipe.modeling.checkpoint import normalize
from emopipe.runtime import Runtime


@dataclass(frozen=True)
class AdaptConfig:
    method: str
    fit: FitConfig  # epochs, lr, batch size, augmentation and seed of the adaptation
    replay: float = 1.0  # replay: source images per shot

    @classmethod
    def from_params(cls, adapt, seed: int, weight_decay: float, label_smoothing: float, class_weights: bool,
                    method: str | None = None) -> AdaptConfig:
        """The `adapt` params section with the train section's loss settings; `method` replaces the
        section's (the adaptation study compares them). Arguments, not the params object, so a stage's
        declared params stay what it reads (tests/test_dag.py)."""
        fit_cfg = FitConfig(adapt.epochs, adapt.batch_size, adapt.lr, weight_decay, label_smoothing, class_weights, False,
                            adapt.augment, seed)
        return cls(method or adapt.method, fit_cfg, adapt.replay)


@dataclass
class Adapted:
    target: nn.Module  # serves the new domain
    source: nn.Module  # serves the source domain afterwards: `target` itself, except for `bn`


def finetune(model: nn.Module, shots: TensorSet, source_train: TensorSet, spec: dict, cfg: AdaptConfig, runtime: Runtime,
             progress: bool) -> Adapted:
    target = fit(copy.deepcopy(model), shots, None, spec, cfg.fit, runtime, progress).model
    return Adapted(target, target)


def head(model: nn.Module, shots: TensorSet, source_train: TensorSet, spec: dict, cfg: AdaptConfig, runtime: Runtime,
         progress: bool) -> Adapted:
    """The classifier alone: progressive unfreezing that never unfreezes (frozen blocks run in eval mode)."""
    frozen = dataclasses.replace(cfg.fit, freeze_epochs=cfg.fit.epochs)
    target = fit(copy.deepcopy(model), shots, None, spec, frozen, runtime, progress).model
    return Adapted(target, target)


def batch_norm(model: nn.Module, shots: TensorSet, source_train: TensorSet, spec: dict, cfg: AdaptConfig, runtime: Runtime,
               progress: bool) -> Adapted:
    """Re-estimate every batch-norm layer's running mean and variance on the shots' images (labels unused)."""
    target = copy.deepcopy(model).to(runtime.device)
    layers = [m for m in target.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        raise ParamError(f"adapt.method=bn re-estimates batch-norm statistics, but {type(model).__name__} has no batch-norm "
                         "layer: train with model_args.batch_norm: true (small, wider, cnn) or pick another adapt.method")
    target.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over all the batches below
        layer.train()
    with torch.no_grad():
        for start in range(0, len(shots), cfg.fit.batch_size):
            target(runtime.prepare(normalize(shots.images[start : start + cfg.fit.batch_size].to(runtime.device), spec)))
    for layer, original in zip(layers, (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))):
        layer.momentum = original.momentum
    return Adapted(target.eval(), model)


def replay(model: nn.Module, shots: TensorSet, source_train: TensorSet, spec: dict, cfg: AdaptConfig, runtime: Runtime,
           progress: bool) -> Adapted:
    """Fine-tune on the shots plus `replay` × len(shots) source train images drawn with the adaptation seed."""
    n = min(len(source_train), round(cfg.replay * len(shots)))
    drawn = torch.randperm(len(source_train), generator=torch.Generator().manual_seed(cfg.fit.seed))[:n]
    target = fit(copy.deepcopy(model), concat(shots, source_train.subset(drawn)), None, spec, cfg.fit, runtime, progress).model
    return Adapted(target, target)


METHODS: dict[str, Callable[..., Adapted]] = {"finetune": finetune, "head": head, "bn": batch_norm, "replay": replay}


def _scores(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("accuracy", "macro_f1")}


def adapt_and_report(model: nn.Module, shots: TensorSet, target_eval: TensorSet, source_test: TensorSet, source_train: TensorSet,
                     spec: dict, cfg: AdaptConfig, runtime: Runtime, batch_size: int = 128, progress: bool = False) -> tuple[Adapted, dict]:
    """Adapt with `cfg.method`; report the target domain before/after (gain), the source test split
    before/after (forgetting) and the shots used per class. Target metrics average over the
    classes the target domain holds. Dropout draws from the global generator: seed it first
    (`seed_everything`) to compare methods from the same random state."""
    before = evaluate(model, target_eval, spec, runtime, batch_size, source="the shift domain's evaluation set")[0]
    in_before = evaluate(model, source_test, spec, runtime, batch_size, source="the test split")[0]
    adapted = METHODS[cfg.method](model, shots, source_train, spec, cfg, runtime, progress)
    after = evaluate(adapted.target, target_eval, spec, runtime, batch_size)[0]
    in_after = evaluate(adapted.source, source_test, spec, runtime, batch_size)[0]
    used = torch.bincount(shots.labels, minlength=len(shots.classes)).tolist()
    return adapted, {
        "method": cfg.method,
        "classes": sorted({target_eval.classes[i] for i in target_eval.labels.tolist()}),
        "shots_used": {c: n for c, n in zip(shots.classes, used) if n},
        "before": before,
        "after": after,
        "gain": round(after["macro_f1"] - before["macro_f1"], 4),
        "in_domain_before": _scores(in_before),
        "in_domain_after": _scores(in_after),
        "forgetting": round(in_before["macro_f1"] - in_after["macro_f1"], 4),
    }
