"""Predictions, with optional test-time augmentation (`TTA`, the param `eval.tta`), and the metrics of a set."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from emopipe.data.store import TensorSet
from emopipe.engine.metrics import classification_metrics
from emopipe.errors import IntakeError
from emopipe.modeling.checkpoint import normalize
from emopipe.registry import Registry
from emopipe.runtime import Runtime

# The metrics shift_eval and adapt write for a single-domain run (`shift.source: none`).
NO_SHIFT = {"skipped": "shift.source is none: no second domain to evaluate or adapt to"}


class EmptySetError(IntakeError):
    """The set to evaluate holds no images (a user error: the stage ends in one line naming it)."""


# (normalised batch, central zooms) -> the views whose predictions are averaged
TTA: Registry[Callable[[torch.Tensor, tuple[float, ...]], list[torch.Tensor]]] = Registry("eval.tta", "test-time augmentation")


@TTA.register("none")
def plain(x: torch.Tensor, scales: tuple[float, ...]) -> list[torch.Tensor]:
    """The batch itself."""
    return [x]


@TTA.register("flip")
def flip(x: torch.Tensor, scales: tuple[float, ...]) -> list[torch.Tensor]:
    """The batch and its mirror."""
    return [x, x.flip(-1)]


@TTA.register("multiscale")
def multiscale(x: torch.Tensor, scales: tuple[float, ...]) -> list[torch.Tensor]:
    """The mirror pair at each central zoom in `scales` (0.9 keeps the central 90% of each side, resized back)."""
    views = []
    for scale in scales:
        views += flip(x if scale == 1.0 else central_zoom(x, scale), scales)
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
    """Softmax probabilities N×K; with `tta`, the mean over the views `TTA[tta]` makes."""
    views_of = TTA.lookup(tta)
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = runtime.prepare(normalize(images[start : start + batch_size].to(runtime.device), spec))
        views = views_of(x, scales)
        with runtime.autocast():
            probs = sum(torch.softmax(model(v).float(), dim=1) for v in views) / len(views)
        out.append(probs.cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0))


def evaluate(model: nn.Module, data: TensorSet, spec: dict, runtime: Runtime, batch_size: int = 128, tta: str = "none",
             source: str = "the evaluation set", scales: tuple[float, ...] = (1.0,)) -> tuple[dict, np.ndarray]:
    """Metrics and probabilities of `model` on `data` (read from `source`, named when it is empty);
    `tta` and `scales` as in `predict_proba`."""
    if not len(data):
        raise EmptySetError(f"{source} holds no images, so there is nothing to evaluate: "
                            "check the split fractions (split.*) and that the data folder has images of every class")
    probs = predict_proba(model, data.images, spec, runtime, batch_size, tta, scales)
    y_true = data.labels.numpy()
    return classification_metrics(y_true, probs.argmax(1), data.classes), probs
