"""k-fold cross-validation, reported as mean ± std: on the train + validation pool (`train.cv_folds`,
a steadier validation figure), and as the test protocol (`split.protocol: kfold`, each person-grouped
fold tested once by a model trained on the others).

Folds are stratified by class and keep duplicate (and person) groups together, as the split does,
and oversampling is applied to each fold's training part only, so no copy of an evaluation image
is ever trained on.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold
from torch import nn

from emopipe.config import OversampleParams, TrainParams
from emopipe.data.oversample import oversample
from emopipe.data.split import fold_split
from emopipe.data.store import TensorSet, concat
from emopipe.engine.fit import FitResult, fit
from emopipe.engine.metrics import classification_metrics
from emopipe.runtime import Runtime, seed_everything
from emopipe.stats import mean_std


def originals(data: TensorSet) -> TensorSet:
    """Drop oversampled copies: the first row of every image path."""
    first = pd.Series(data.paths).drop_duplicates().index.to_numpy()
    return data.subset(first)


def pool(*parts: TensorSet) -> TensorSet:
    """Every image of `parts` once (oversampled copies dropped), in order."""
    return concat(*(originals(part) for part in parts))


def fit_rows(model: nn.Module, data: TensorSet, train_rows: np.ndarray, val_rows: np.ndarray, o: OversampleParams,
             data_seed: int, spec: dict, t: TrainParams, seed: int, runtime: Runtime, progress: bool = False) -> FitResult:
    """Train `model` on `train_rows` of `data` (oversampled as the oversample stage does), best epoch by `val_rows`."""
    frame = pd.DataFrame({"label": [data.classes[i] for i in data.labels.numpy()[train_rows]], "row": train_rows})
    rows = oversample(frame, o.method, o.targets, data_seed)["row"].to_numpy()
    return fit(model, data.subset(rows), data.subset(val_rows), spec, t, seed, runtime, progress)


def cross_validate(new_model: Callable[[], nn.Module], data: TensorSet, groups: np.ndarray, folds: int, o: OversampleParams,
                   data_seed: int, spec: dict, t: TrainParams, seed: int, runtime: Runtime, progress: bool = False) -> dict:
    """Train a fresh model per fold; return per-fold best-epoch validation metrics and their mean/std.

    The folds draw from a fork of the global RNG: the model the train stage builds after them
    starts from the same weights (and dropout masks) whatever `folds` is.
    """
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=data_seed)
    labels = data.labels.numpy()
    per_fold: list[dict] = []
    with torch.random.fork_rng(devices=[runtime.device] if runtime.device.type == "cuda" else []):
        for (train_rows, val_rows) in splitter.split(labels, labels, groups):
            result = fit_rows(new_model(), data, train_rows, val_rows, o, data_seed, spec, t, seed, runtime, progress)
            best = result.history[result.best_epoch - 1]
            per_fold.append({"val_macro_f1": best["val_macro_f1"], "val_accuracy": best["val_accuracy"], "best_epoch": result.best_epoch})
    summary = {key: mean_std([f[key] for f in per_fold]) for key in ("val_macro_f1", "val_accuracy")}
    return {"folds": folds, **summary, "per_fold": {str(k): f for k, f in enumerate(per_fold, start=1)}}


def kfold_test(new_model: Callable[[], nn.Module], data: TensorSet, frame: pd.DataFrame, train_share: float,
               o: OversampleParams, data_seed: int, seed: int, spec: dict, t: TrainParams, runtime: Runtime,
               predict: Callable[[nn.Module, TensorSet], np.ndarray], fold0: np.ndarray, progress: bool = False) -> tuple[dict, np.ndarray]:
    """The k-fold test figure over every image of `data` (`frame`: its label, group and fold, row by row).

    Fold 0 is the pipeline's own split: `fold0` holds the trained model's probabilities on it. Every
    other fold is the test split of a fresh model (seeded `seed + fold`) trained on the rest, dealt
    to train/val exactly as the split stage dealt fold 0's rest. Returns (metrics: mean ± std over
    folds, per fold, and pooled over the out-of-fold predictions; those probabilities, row by row).
    """
    folds = frame["fold"].to_numpy()
    probs = np.zeros((len(data), len(data.classes)), dtype=np.float32)
    probs[folds == 0] = fold0
    for fold in range(1, folds.max() + 1):
        names = fold_split(frame["label"], frame["group"].to_numpy(), folds, fold, train_share, data_seed)
        seed_everything(seed + fold)
        result = fit_rows(new_model(), data, np.flatnonzero(names == "train"), np.flatnonzero(names == "val"), o, data_seed,
                          spec, t, seed, runtime, progress)
        probs[folds == fold] = predict(result.model, data.subset(np.flatnonzero(folds == fold)))
    y_true, y_pred = data.labels.numpy(), probs.argmax(1)
    per_fold = {str(k): {"images": int((folds == k).sum())} | select(classification_metrics(y_true[folds == k], y_pred[folds == k], data.classes))
                for k in range(folds.max() + 1)}
    figures = {key: mean_std([f[key] for f in per_fold.values()]) for key in ("accuracy", "macro_f1")}
    return {
        "protocol": "kfold", "folds": len(per_fold),
        "accuracy": figures["accuracy"]["mean"], "accuracy_std": figures["accuracy"]["std"],
        "macro_f1": figures["macro_f1"]["mean"], "macro_f1_std": figures["macro_f1"]["std"],
        "per_fold": per_fold, "pooled": classification_metrics(y_true, y_pred, data.classes),
    }, probs


def select(metrics: dict) -> dict:
    return {key: metrics[key] for key in ("accuracy", "macro_f1")}
