"""k-fold cross-validation on the train + validation pool, reported as mean ± std.

Folds are stratified by class and keep duplicate groups together (as the split does), and
oversampling is applied to each fold's training part only, so no copy of a validation image
is ever trained on.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn

from emopipe.data.oversample import oversample
from emopipe.data.store import TensorSet
from emopipe.engine.fit import FitConfig, fit
from emopipe.runtime import Runtime


def originals(data: TensorSet) -> TensorSet:
    """Drop oversampled copies: the first row of every image path."""
    first = pd.Series(data.paths).drop_duplicates().index.to_numpy()
    return data.subset(first)


def pool(train: TensorSet, val: TensorSet) -> TensorSet:
    train = originals(train)
    return TensorSet(torch.cat([train.images, val.images]), torch.cat([train.labels, val.labels]), train.classes, train.paths + val.paths)


def cross_validate(new_model: Callable[[], nn.Module], data: TensorSet, groups: np.ndarray, folds: int, oversample_method: str,
                   oversample_targets: dict[str, int], data_seed: int, spec: dict, cfg: FitConfig, runtime: Runtime, progress: bool = False) -> dict:
    """Train a fresh model per fold; return per-fold best-epoch validation metrics and their mean/std.

    The folds draw from a fork of the global RNG: the model the train stage builds after them
    starts from the same weights (and dropout masks) whatever `folds` is.
    """
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=data_seed)
    labels = data.labels.numpy()
    per_fold: list[dict] = []
    with torch.random.fork_rng(devices=[runtime.device] if runtime.device.type == "cuda" else []):
        for (train_rows, val_rows) in splitter.split(labels, labels, groups):
            frame = pd.DataFrame({"label": [data.classes[i] for i in labels[train_rows]], "row": train_rows})
            rows = oversample(frame, oversample_method, oversample_targets, data_seed)["row"].to_numpy()
            result = fit(new_model(), data.subset(rows), data.subset(val_rows), spec, cfg, runtime, progress)
            best = result.history[result.best_epoch - 1]
            per_fold.append({"val_macro_f1": best["val_macro_f1"], "val_accuracy": best["val_accuracy"], "best_epoch": result.best_epoch})
    summary = {}
    for key in ("val_macro_f1", "val_accuracy"):
        values = np.array([f[key] for f in per_fold])
        summary[key] = {"mean": round(float(values.mean()), 4), "std": round(float(values.std(ddof=1)), 4)}
    return {"folds": folds, **summary, "per_fold": {str(k): f for k, f in enumerate(per_fold, start=1)}}
