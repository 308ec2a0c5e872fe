"""Loss registry: `train.loss` names a per-sample loss. A new loss is one decorated function.

A loss takes (logits, targets, class weights or None, the train params: `label_smoothing`,
`focal_gamma`) and returns one loss per sample; `weighted_mean` says whether a batch's loss is
divided by the summed weights of its samples (as `F.cross_entropy` averages) or by their count.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from emopipe.config import TrainParams
from emopipe.errors import ParamError
from emopipe.registry import Registry


@dataclass(frozen=True)
class Loss:
    per_sample: Callable[..., torch.Tensor]
    weighted_mean: bool


LOSSES: Registry[Loss] = Registry("train.loss", "loss")


def register(name: str, weighted_mean: bool):
    def add(fn: Callable[..., torch.Tensor]):
        LOSSES.register(name)(Loss(fn, weighted_mean))
        return fn

    return add


@register("ce", weighted_mean=True)
def cross_entropy(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, t: TrainParams) -> torch.Tensor:
    """Cross-entropy with label smoothing."""
    return F.cross_entropy(logits, y, weight=weight, label_smoothing=t.label_smoothing, reduction="none")


@register("focal", weighted_mean=False)
def focal(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, t: TrainParams) -> torch.Tensor:
    """(1 - p_t)^γ · CE (Lin et al. 2017): easy, confident samples count less."""
    ce = cross_entropy(logits, y, weight, t)
    p_true = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    return (1 - p_true) ** t.focal_gamma * ce


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """'Balanced' weights n / (K · count_c); a class absent from training gets weight 0.

    Computed on the training set as packed, i.e. after oversampling.
    """
    counts = torch.bincount(labels, minlength=n_classes).float()
    weights = len(labels) / (n_classes * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def loss_weights(labels: torch.Tensor, classes: list[str], t: TrainParams) -> torch.Tensor | None:
    """Per-class factors: balanced class weights (`train.class_weights`) times `train.focal_alpha`
    (by class name, 1 for a class it does not name), or None for neither."""
    weight = class_weights(labels, len(classes)) if t.class_weights else None
    if t.focal_alpha:
        if unknown := sorted(set(t.focal_alpha) - set(classes)):
            raise ParamError(f"train.focal_alpha names class {unknown[0]!r}, not in the data (classes: {', '.join(classes)})")
        alpha = torch.tensor([float(t.focal_alpha.get(c, 1.0)) for c in classes], dtype=torch.float32)
        weight = alpha if weight is None else weight * alpha
    return weight
