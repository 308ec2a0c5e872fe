"""Loss registry: `train.loss` names a per-sample loss. A new loss is one decorated function.

A loss takes (logits, targets, class weights or None, settings with `label_smoothing` and
`focal_gamma`) and returns one loss per sample; `weighted_mean` says whether a batch's loss is
divided by the summed weights of its samples (as `F.cross_entropy` averages) or by their count.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Loss:
    per_sample: Callable[..., torch.Tensor]
    weighted_mean: bool


LOSSES: dict[str, Loss] = {}


def register(name: str, weighted_mean: bool):
    def add(fn: Callable[..., torch.Tensor]):
        LOSSES[name] = Loss(fn, weighted_mean)
        return fn

    return add


@register("ce", weighted_mean=True)
def cross_entropy(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, cfg) -> torch.Tensor:
    """Cross-entropy with label smoothing."""
    return F.cross_entropy(logits, y, weight=weight, label_smoothing=cfg.label_smoothing, reduction="none")


@register("focal", weighted_mean=False)
def focal(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None, cfg) -> torch.Tensor:
    """(1 - p_t)^γ · CE (Lin et al. 2017): easy, confident samples count less."""
    ce = cross_entropy(logits, y, weight, cfg)
    p_true = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    return (1 - p_true) ** cfg.focal_gamma * ce


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """'Balanced' weights n / (K · count_c); a class absent from training gets weight 0.

    Computed on the training set as packed, i.e. after oversampling.
    """
    counts = torch.bincount(labels, minlength=n_classes).float()
    weights = len(labels) / (n_classes * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def loss_weights(labels: torch.Tensor, n_classes: int, cfg) -> torch.Tensor | None:
    """Per-class factors: balanced class weights (`cfg.class_weights`) times `cfg.focal_alpha`, or None."""
    weight = class_weights(labels, n_classes) if cfg.class_weights else None
    if cfg.focal_alpha is not None:
        alpha = torch.tensor(cfg.focal_alpha, dtype=torch.float32)
        weight = alpha if weight is None else weight * alpha
    return weight
