"""The training loop: sampler, loss, optimiser, per-epoch validation, best-epoch selection."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import torch
from sklearn.metrics import f1_score
from torch import nn
from tqdm import tqdm

from emopipe.checkpoint import normalize
from emopipe.data.augment import POLICIES, augment
from emopipe.data.store import TensorSet
from emopipe.evaluate import predict_proba
from emopipe.runtime import Runtime


@dataclass(frozen=True)
class FitConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    class_weights: bool = True
    weighted_sampler: bool = False
    augment: str = "basic"
    seed: int = 0


@dataclass
class FitResult:
    model: nn.Module  # weights of the best epoch (by validation macro-F1), or the last without validation
    history: list[dict]
    best_epoch: int
    seconds: float


def class_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """'Balanced' weights n / (K · count_c); a class absent from training gets weight 0."""
    counts = torch.bincount(labels, minlength=n_classes).float()
    weights = len(labels) / (n_classes * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


def epoch_order(labels: torch.Tensor, weighted: bool, generator: torch.Generator) -> torch.Tensor:
    """Sample order for one epoch: a permutation, or class-balanced draws with replacement."""
    if not weighted:
        return torch.randperm(len(labels), generator=generator)
    per_sample = (1.0 / torch.bincount(labels).float())[labels]
    return torch.multinomial(per_sample, len(labels), replacement=True, generator=generator)


def fit(model: nn.Module, train: TensorSet, val: TensorSet | None, spec: dict, cfg: FitConfig, runtime: Runtime, progress: bool = True) -> FitResult:
    n_classes = len(train.classes)
    generator = torch.Generator().manual_seed(cfg.seed)
    policy = POLICIES[cfg.augment]
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    weight = class_weights(train.labels, n_classes).to(runtime.device) if cfg.class_weights else None
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    history: list[dict] = []
    best_f1, best_epoch, best_state = -1.0, 0, None
    started = time.perf_counter()
    bar = tqdm(range(1, cfg.epochs + 1), desc="train", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        order = epoch_order(train.labels, cfg.weighted_sampler, generator)
        loss_sum, preds, targets = 0.0, [], []
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            y = train.labels[idx].to(runtime.device)
            x = train.images[idx].to(runtime.device).float() / 255.0
            x = runtime.prepare(normalize(augment(x, policy, generator), spec))
            with runtime.autocast():
                logits = model(x)
                loss = criterion(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            preds.append(logits.argmax(1).cpu())
            targets.append(y.cpu())
        preds_all, targets_all = torch.cat(preds).numpy(), torch.cat(targets).numpy()
        row = {
            "epoch": epoch,
            "train_loss": round(loss_sum / len(order), 4),
            "train_accuracy": round(float((preds_all == targets_all).mean()), 4),
            "train_macro_f1": round(float(f1_score(targets_all, preds_all, average="macro", zero_division=0)), 4),
        }
        if val is not None and len(val):
            row.update(_validate(model, val, spec, runtime))
            if row["val_macro_f1"] > best_f1:
                best_f1, best_epoch, best_state = row["val_macro_f1"], epoch, copy.deepcopy(model.state_dict())
        history.append(row)
        bar.set_postfix({k: v for k, v in row.items() if k in ("train_loss", "val_macro_f1")})
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = cfg.epochs
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
        "val_macro_f1": round(float(f1_score(y, pred, average="macro", zero_division=0)), 4),
    }
