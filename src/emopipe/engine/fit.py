"""The training loop: sampler, loss, optimiser, schedule, per-epoch validation, early stopping.

One loop serves one process and DDP (`torchrun`): every rank draws the same global batch
(same generator), augments it identically and trains on its own slice; the loss is divided
by the *global* batch's weight, so the averaged gradient equals the one-process gradient and
class weighting, oversampling and the weighted sampler mean exactly what they mean on one
process.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from emopipe.config import TrainParams
from emopipe.data.augment import POLICIES, augment
from emopipe.data.store import TensorSet
from emopipe.engine.evaluate import predict_proba
from emopipe.engine.metrics import macro_f1
from emopipe.modeling.checkpoint import normalize
from emopipe.modeling.losses import LOSSES, loss_weights
from emopipe.modeling.models import MODELS, described
from emopipe.modeling.schedulers import SCHEDULERS, make_schedule
from emopipe.runtime import Distributed, Runtime


def check_training_choices(model: str, t: TrainParams) -> None:
    """The registered names a training run looks up (model, loss, schedule, augmentation), checked before
    any data is read: a bad one is a one-line ParamError naming its param."""
    MODELS.lookup(model)
    LOSSES.lookup(t.loss)
    SCHEDULERS.lookup(t.scheduler)
    POLICIES.lookup(t.augment)


@dataclass
class FitResult:
    model: nn.Module  # weights of the best epoch (by validation macro-F1), or the last without validation
    history: list[dict]
    best_epoch: int
    seconds: float


def epoch_order(labels: torch.Tensor, weighted: bool, generator: torch.Generator) -> torch.Tensor:
    """Sample order for one epoch: a permutation, or class-balanced draws with replacement."""
    if not weighted:
        return torch.randperm(len(labels), generator=generator)
    per_sample = (1.0 / torch.bincount(labels).float())[labels]
    return torch.multinomial(per_sample, len(labels), replacement=True, generator=generator)


class Unfreezer:
    """Progressive unfreezing: the head alone for `freeze_epochs`, then one block more every `every` epochs."""

    def __init__(self, model: nn.Module, freeze_epochs: int, every: int):
        self.groups, self.freeze_epochs, self.every = described(model, "transfer_groups").transfer_groups(), freeze_epochs, every

    def param_groups(self, lr: float, backbone_lr: float) -> list[dict]:
        head, *rest = self.groups
        return [{"params": list(head.parameters()), "lr": lr}] + [{"params": list(g.parameters()), "lr": backbone_lr} for g in rest]

    def trainable(self, epoch: int) -> int:
        """How many groups (head first) train in this 1-based epoch."""
        if epoch <= self.freeze_epochs:
            return 1
        return 2 + (epoch - self.freeze_epochs - 1) // self.every

    def apply(self, epoch: int) -> None:
        n = self.trainable(epoch)
        for i, group in enumerate(self.groups):
            group.requires_grad_(i < n)

    def hold_frozen(self, epoch: int) -> None:
        """Frozen blocks run in inference mode, as Keras runs them: their batch-norm statistics stay
        the pretrained ones instead of drifting toward the few images they never learn from."""
        for group in self.groups[self.trainable(epoch):]:
            group.eval()


def fit(model: nn.Module, train: TensorSet, val: TensorSet | None, spec: dict, t: TrainParams, seed: int, runtime: Runtime,
        progress: bool = True, dist: Distributed | None = None,
        on_epoch: Callable[[list[dict], int], None] | None = None) -> FitResult:
    """Train `model` as the train params `t` say (`seed`: batch order and augmentation); returns it
    with the weights of its best validation epoch.

    `on_epoch(history, best_epoch)` runs on the main rank after every epoch (live metrics files).
    """
    dist = dist or Distributed()
    n_classes = len(train.classes)
    generator = torch.Generator().manual_seed(seed)  # identical on every rank
    policy = POLICIES.lookup(t.augment)
    loss_fn = LOSSES.lookup(t.loss)
    weight = loss_weights(train.labels, train.classes, t)
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    freeze = t.transfer.freeze_epochs
    unfreezer = Unfreezer(model, freeze, t.transfer.unfreeze_every) if freeze else None
    if unfreezer:
        unfreezer.apply(1)
    params = unfreezer.param_groups(t.lr, t.transfer.backbone_lr) if unfreezer else model.parameters()
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    steps_per_epoch = -(-len(train) // t.batch_size)
    schedule = make_schedule(t.scheduler if t.epochs else "none", optimizer, t.epochs, steps_per_epoch)
    weight = weight.to(runtime.device) if weight is not None else None
    scaler = runtime.grad_scaler()
    net = dist.wrap(model)

    history: list[dict] = []
    best_f1, best_epoch, best_state = -1.0, 0, None
    started = time.perf_counter()
    bar = tqdm(range(1, t.epochs + 1), desc="train", unit="epoch", disable=not progress or not dist.is_main)
    for epoch in bar:
        if unfreezer and unfreezer.trainable(epoch) != unfreezer.trainable(epoch - 1):
            unfreezer.apply(epoch)
            net = dist.wrap(model)  # DDP must see the new set of trainable parameters
        net.train()
        if unfreezer:
            unfreezer.hold_frozen(epoch)
        order = epoch_order(train.labels, t.weighted_sampler, generator)
        loss_sum, preds, targets = 0.0, [], []
        for start in range(0, len(order), t.batch_size):
            idx = order[start : start + t.batch_size]
            y = train.labels[idx].to(runtime.device)
            x = augment(train.images[idx].to(runtime.device).float() / 255.0, policy, generator)
            denominator = weight[y].sum() if weight is not None and loss_fn.weighted_mean else torch.tensor(float(len(idx)))
            mine = dist.shard(len(idx))
            x, y = runtime.prepare(normalize(x[mine], spec)), y[mine]
            with runtime.autocast():
                logits = net(x)
            losses = loss_fn.per_sample(logits.float(), y, weight, t)
            loss = losses.sum() / denominator.to(losses.device) * dist.world_size  # DDP averages over ranks
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if t.grad_clip:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            scaler.step(optimizer)  # skipped when fp16 gradients overflowed
            scaler.update()
            schedule.after_batch()
            loss_sum += losses.detach().sum().item()
            preds.append(logits.detach().argmax(1).cpu())
            targets.append(y.cpu())
        loss_sum, preds_all, targets_all = dist.gather_epoch(loss_sum, torch.cat(preds), torch.cat(targets))
        row = {
            "epoch": epoch,
            "lr": round(optimizer.param_groups[0]["lr"], 8),
            "train_loss": round(loss_sum / len(order), 4),
            "train_accuracy": round(float((preds_all == targets_all).mean()), 4),
            "train_macro_f1": macro_f1(targets_all, preds_all, n_classes),
        }
        if val is not None and len(val):
            row.update(_validate(model, val, spec, runtime))
            if row["val_macro_f1"] > best_f1:
                best_f1, best_epoch, best_state = row["val_macro_f1"], epoch, copy.deepcopy(model.state_dict())
        history.append(row)
        if on_epoch and dist.is_main:
            on_epoch(history, best_epoch or epoch)
        bar.set_postfix({k: v for k, v in row.items() if k in ("train_loss", "val_macro_f1")})
        schedule.after_epoch(row.get("val_macro_f1", -row["train_loss"]))
        if t.early_stopping and best_state is not None and epoch - best_epoch >= t.early_stopping:
            break
    if t.epochs == 0 and val is not None and len(val):  # no training: the model as built, validated once
        history.append({"epoch": 0, "lr": 0.0, **_validate(model, val, spec, runtime)})
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = history[-1]["epoch"] if history else 0
    model.eval()
    return FitResult(model, history, best_epoch, round(time.perf_counter() - started, 2))


def _validate(model: nn.Module, val: TensorSet, spec: dict, runtime: Runtime) -> dict:
    probs = predict_proba(model, val.images, spec, runtime)
    y = val.labels.numpy()
    loss = float(nn.functional.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-12)), val.labels))
    pred = probs.argmax(1)
    return {
        "val_loss": round(loss, 4),
        "val_accuracy": round(float((pred == y).mean()), 4),
        "val_macro_f1": macro_f1(y, pred, len(val.classes)),
    }
