"""Learning-rate schedule registry: `train.scheduler` names a builder. A new schedule is one function.

A builder takes (optimizer, epochs, steps_per_epoch) and returns a `Schedule`, which knows
whether its scheduler steps after every batch, after every epoch, or on the validation metric.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.optim import Optimizer, lr_scheduler

from emopipe.registry import Registry


@dataclass(frozen=True)
class Schedule:
    scheduler: object | None
    steps: str = "never"  # never | batch | epoch | metric

    def after_batch(self) -> None:
        if self.steps == "batch":
            self.scheduler.step()

    def after_epoch(self, metric: float) -> None:
        """`metric`: higher is better (validation macro-F1, or minus the training loss without validation)."""
        if self.steps == "epoch":
            self.scheduler.step()
        elif self.steps == "metric":
            self.scheduler.step(metric)


SCHEDULERS: Registry[Callable[[Optimizer, int, int], Schedule]] = Registry("train.scheduler", "scheduler")
register = SCHEDULERS.register


@register("none")
def constant(optimizer: Optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    return Schedule(None)


@register("onecycle")
def onecycle(optimizer: Optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    """Warm-up to each group's lr, then anneal (Smith 2018); per batch."""
    max_lr = [g["lr"] for g in optimizer.param_groups]
    return Schedule(lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, epochs=epochs, steps_per_epoch=steps_per_epoch), "batch")


@register("cosine")
def cosine(optimizer: Optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    return Schedule(lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs), "epoch")


@register("plateau")
def plateau(optimizer: Optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    """Halve the lr after 2 epochs without a better validation macro-F1."""
    return Schedule(lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2), "metric")


def make_schedule(name: str, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    return SCHEDULERS.lookup(name)(optimizer, epochs, steps_per_epoch)
