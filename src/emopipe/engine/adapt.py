"""Few-shot adaptation to a second domain, by method, and its before/after report.

    finetune  every weight trains on the shots
    head      only the classifier trains; the backbone runs in inference mode, so its batch-norm
              statistics stay the source's
    bn        no labels, no gradients: batch-norm statistics re-estimated on the shots' images. Each
              domain keeps its own statistics: the source model still serves the source domain
    replay    finetune with source train images mixed in (`replay` per shot), against forgetting

A new method is one function `(model, shots, source_train, spec, a, t, seed, runtime, progress) -> Adapted`
registered in METHODS (the param `adapt.method`); `a` and `t` are the adapt and train params.
"""
from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from emopipe.config import AdaptParams, TrainParams, TransferParams
from emopipe.data.store import TensorSet, concat
from emopipe.engine.evaluate import evaluate
from emopipe.engine.fit import fit
from emopipe.errors import ParamError
from emopipe.modeling.checkpoint import normalize
from emopipe.registry import Registry
from emopipe.runtime import Runtime


def adaptation_training(a: AdaptParams, t: TrainParams) -> TrainParams:
    """The training run of finetune, head and replay: the adapt section's budget and augmentation, the
    train section's regularisation (weight decay, label smoothing, class weights); plain cross-entropy,
    a constant lr, no sampler, clipping or early stopping, and nothing frozen."""
    return TrainParams(
        epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, weight_decay=t.weight_decay, loss="ce", focal_gamma=0.0,
        focal_alpha={}, label_smoothing=t.label_smoothing, class_weights=t.class_weights, weighted_sampler=False,
        augment=a.augment, scheduler="none", early_stopping=0, grad_clip=0.0, cv_folds=1, processes=1, precision=t.precision,
        transfer=TransferParams(freeze_epochs=0, unfreeze_every=1, backbone_lr=a.lr),
    )


@dataclass
class Adapted:
    target: nn.Module  # serves the new domain
    source: nn.Module  # serves the source domain afterwards: `target` itself, except for `bn`


# (model, shots, source train images, input spec, adapt params, train params, seed, runtime, progress) -> Adapted
METHODS: Registry[Callable[..., Adapted]] = Registry("adapt.method", "adapt method")


@METHODS.register("finetune")
def finetune(model: nn.Module, shots: TensorSet, source_train: TensorSet, spec: dict, a: AdaptParams, t: TrainParams, seed: int,
             runtime: Runtime, progress: bool) -> Adapted:
    target = fit(copy.deepcopy(model), shots, None, spec, adaptation_training(a, t), seed, runtime, progress).model
    return Adapted(target, target)


@METHODS.register("head")
def head(model: nn.Module, shots: TensorSet, source_train: TensorSet, spec: dict, a: AdaptParams, t: TrainParams, seed: int,
         runtime: Runtime, progress: bool) -> Adapted:
    """The classifier alone: progressive unfreezing that never unfreezes (frozen blocks run in eval mode)."""
    training = adaptation_training(a, t)
    frozen = dataclasses.replace(training, transfer=dataclasses.replace(training.transfer, freeze_epochs=a.epochs))
    target = fit(copy.deepcopy(model), shots, None, spec, frozen, seed, runtime, progress).model
    return Adapted(target, target)


@METHODS.register("bn")
def batch_norm(model: nn.Module, shots: TensorSet, source_train: TensorSet, spec: dict, a: AdaptParams, t: TrainParams, seed: int,
               runtime: Runtime, progress: bool) -> Adapted:
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
        for start in range(0, len(shots), a.batch_size):
            target(runtime.prepare(normalize(shots.images[start : start + a.batch_size].to(runtime.device), spec)))
    for layer, original in zip(layers, (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))):
        layer.momentum = original.momentum
    return Adapted(target.eval(), model)


@METHODS.register("replay")
def replay(model: nn.Module, shots: TensorSet, source_train: TensorSet, spec: dict, a: AdaptParams, t: TrainParams, seed: int,
           runtime: Runtime, progress: bool) -> Adapted:
    """Fine-tune on the shots plus `adapt.replay` × len(shots) source train images drawn with the adaptation seed."""
    n = min(len(source_train), round(a.replay * len(shots)))
    drawn = torch.randperm(len(source_train), generator=torch.Generator().manual_seed(seed))[:n]
    mixed = concat(shots, source_train.subset(drawn))
    target = fit(copy.deepcopy(model), mixed, None, spec, adaptation_training(a, t), seed, runtime, progress).model
    return Adapted(target, target)


def _scores(metrics: dict) -> dict:
    return {k: metrics[k] for k in ("accuracy", "macro_f1")}


def adapt_and_report(model: nn.Module, shots: TensorSet, target_eval: TensorSet, source_test: TensorSet, source_train: TensorSet,
                     spec: dict, a: AdaptParams, t: TrainParams, seed: int, runtime: Runtime, batch_size: int,
                     progress: bool = False) -> tuple[Adapted, dict]:
    """Adapt with `a.method` (`seed`: its randomness); report the target domain before/after (gain),
    the source test split before/after (forgetting) and the shots used per class. Target metrics average over the
    classes the target domain holds. Dropout draws from the global generator: seed it first
    (`seed_everything`) to compare methods from the same random state."""
    method = METHODS.lookup(a.method)
    before = evaluate(model, target_eval, spec, runtime, batch_size, source="the shift domain's evaluation set")[0]
    in_before = evaluate(model, source_test, spec, runtime, batch_size, source="the test split")[0]
    adapted = method(model, shots, source_train, spec, a, t, seed, runtime, progress)
    after = evaluate(adapted.target, target_eval, spec, runtime, batch_size)[0]
    in_after = evaluate(adapted.source, source_test, spec, runtime, batch_size)[0]
    used = torch.bincount(shots.labels, minlength=len(shots.classes)).tolist()
    return adapted, {
        "method": a.method,
        "classes": sorted({target_eval.classes[i] for i in target_eval.labels.tolist()}),
        "shots_used": {c: n for c, n in zip(shots.classes, used) if n},
        "before": before,
        "after": after,
        "gain": round(after["macro_f1"] - before["macro_f1"], 4),
        "in_domain_before": _scores(in_before),
        "in_domain_after": _scores(in_after),
        "forgetting": round(in_before["macro_f1"] - in_after["macro_f1"], 4),
    }
