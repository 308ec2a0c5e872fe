"""Predictions (optionally with flip test-time augmentation) and classification metrics."""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)
from torch import nn

from emopipe.data.intake import IntakeError
from emopipe.data.store import TensorSet
from emopipe.modeling.checkpoint import normalize
from emopipe.runtime import Runtime


class EmptySetError(IntakeError):
    """The set to evaluate holds no images (a user error: the stage ends in one line naming it)."""


def tta_views(x: torch.Tensor, policy: str = "none", scales: tuple[float, ...] = (1.0,)) -> list[torch.Tensor]:
    """The views test-time augmentation averages over: the batch itself (`none`), with its mirror
    (`flip`), or the mirror pair at each central zoom in `scales` (`multiscale`; 0.9 keeps the
    central 90% of each side, resized back)."""
    if policy == "none":
        return [x]
    zooms = scales if policy == "multiscale" else (1.0,)
    views = []
    for scale in zooms:
        view = x if scale == 1.0 else central_zoom(x, scale)
        views += [view, view.flip(-1)]
    return views


def central_zoom(x: torch.Tensor, scale: float) -> torch.Tensor:
    size = x.shape[-1]
    keep = max(1, round(size * scale))
    start = (size - keep) // 2
    crop = x[..., start : start + keep, start : start + keep]
    return nn.functional.interpolate(crop, size=(size, size), mode="bilinear", align_corners=False, antialias=False)


@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, spec: dict, runtime: Runtime, batch_size: int = 128, tta: str = "none",
                  scales: tuple[float, ...] = (1.0,)) -> np.ndarray:
    """Softmax probabilities N×K; with `tta`, the mean over the views `tta_views` makes."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = runtime.prepare(normalize(images[start : start + batch_size].to(runtime.device), spec))
        views = tta_views(x, tta, scales)
        with runtime.autocast():
            probs = sum(torch.softmax(model(v).float(), dim=1) for v in views) / len(views)
        out.append(probs.cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """accuracy, macro precision/recall/F1 and per-class precision/recall/F1/support.

    Macro averages run over the classes present in `y_true` (a shifted domain may hold a
    subset of them); a present class that is never predicted counts as 0.
    """
    labels = list(range(len(classes)))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = s > 0
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_precision": round(float(p[present].mean()), 4),
        "macro_recall": round(float(r[present].mean()), 4),
        "macro_f1": round(float(f[present].mean()), 4),
        "per_class": {
            c: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4), "f1": round(float(f[i]), 4), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
    }


def evaluate(model: nn.Module, data: TensorSet, spec: dict, runtime: Runtime, batch_size: int = 128, tta: str = "none",
             source: str = "the evaluation set", scales: tuple[float, ...] = (1.0,)) -> tuple[dict, np.ndarray]:
    """Metrics and probabilities of `model` on `data` (read from `source`, named when it is empty);
    `tta` and `scales` as in `tta_views`."""
    if not len(data):
        raise EmptySetError(f"{source} holds no images, so there is nothing to evaluate: "
                            "check the split fractions (split.*) and that the data folder has images of every class")
    probs = predict_proba(model, data.images, spec, runtime, batch_size, tta, scales)
    y_true = data.labels.numpy()
    return classification_metrics(y_true, probs.argmax(1), data.classes), probs


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))
