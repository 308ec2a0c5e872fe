"""What the trained model looks at: first-layer filters, feature maps and Grad-CAM overlays (PNG).

Works for every registry model through its `feature_blocks()` (Grad-CAM uses the last block)
and the first `nn.Conv2d` of `model.modules()` (the first layer). Images are chosen
deterministically (first of each class; most confident predictions), never at random.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emopipe.data.store import TensorSet
from emopipe.engine.evaluate import predict_proba
from emopipe.engine.plots import plt, save_png
from emopipe.io import atomic_path
from emopipe.modeling.checkpoint import normalize
from emopipe.modeling.models import described
from emopipe.runtime import Runtime

# save_png and plt come from emopipe.engine.plots: the other figures' Agg backend, dpi and atomic PNG writes.


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout, running batch-norm stats) for the duration; the caller's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _picture(image: torch.Tensor) -> tuple[np.ndarray, str | None]:
    """A uint8 C×H×W image as imshow takes it: H×W×3 colour or H×W grey (with its colormap)."""
    pixels = image.permute(1, 2, 0).cpu().numpy()
    return (pixels, None) if pixels.shape[2] == 3 else (pixels.mean(axis=2), "gray")


# --- first layer -------------------------------------------------------------------------------


def first_conv(model: nn.Module) -> nn.Conv2d:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise TypeError(f"{type(model).__name__} has no Conv2d layer to draw")
    return conv


def first_layer_filters_png(model: nn.Module, path: Path) -> None:
    """Grid of the first conv layer's kernels, each scaled to [0, 1] on its own.

    RGB kernels are shown in colour; a 1-channel kernel (or the channel mean, for other counts) in grey.
    """
    weight = first_conv(model).weight.detach().float().cpu()  # out × in × kh × kw
    if weight.shape[1] != 3:
        weight = weight.mean(dim=1, keepdim=True)
    low = weight.amin(dim=(1, 2, 3), keepdim=True)
    high = weight.amax(dim=(1, 2, 3), keepdim=True)
    weight = (weight - low) / (high - low).clamp_min(1e-12)
    n = len(weight)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols + 0.4, 0.9 * rows + 0.8), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            picture, cmap = _picture(weight[i])
            ax.imshow(picture, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    kh, kw = weight.shape[-2:]
    fig.suptitle(f"first conv layer: {n} filters of {kh}×{kw}")
    save_png(fig, path)


# --- feature maps ------------------------------------------------------------------------------


def first_of_each_class(data: TensorSet) -> tuple[torch.Tensor, list[str]]:
    """The first image (by index) of every class present in `data`, and those class names."""
    labels = data.labels.tolist()
    present = [k for k in range(len(data.classes)) if k in labels]
    index = [labels.index(k) for k in present]
    return data.images[index], [data.classes[k] for k in present]


def first_tensor(output) -> torch.Tensor:
    """A block's output tensor (transformer layers may return a tuple whose first item it is)."""
    return output[0] if isinstance(output, tuple) else output


def as_grid(x: torch.Tensor) -> torch.Tensor:
    """A feature block's output as maps B×C×H×W: a transformer block's tokens B×N×D become the
    patch grid (the class token and any other leading extras, beyond the largest square, dropped)."""
    if x.dim() == 4:
        return x
    side = math.isqrt(x.shape[1])
    return x[:, x.shape[1] - side * side :].transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


@torch.no_grad()
def block_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of each feature block for batch `x` (forward hooks, removed before returning)."""
    outputs: list[torch.Tensor] = []
    # clone: a later in-place op (e.g. ReLU(inplace=True)) must not change what we keep
    blocks = described(model, "feature_blocks").feature_blocks()
    handles = [b.register_forward_hook(lambda _m, _in, out: outputs.append(as_grid(first_tensor(out)).detach().clone())) for b in blocks]
    try:
        with _evaluating(model):
            model(x.to(_device(model)))
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def feature_maps_png(model: nn.Module, images: torch.Tensor, classes: list[str], spec: dict, path: Path) -> None:
    """One row per image (uint8 N×C×H×W, row label from `classes`): the input, then the mean over
    channels of each feature block's output, each map on its own colour scale."""
    blocks = block_outputs(model, normalize(images, spec)) if len(images) else []
    rows, cols = max(1, len(images)), 1 + len(described(model, "feature_blocks").feature_blocks())
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for row, (image, name) in enumerate(zip(images, classes)):
        picture, cmap = _picture(image)
        axes[row, 0].imshow(picture, cmap=cmap)
        axes[row, 0].set_ylabel(name)
        for col, out in enumerate(blocks, start=1):
            axes[row, col].imshow(out[row].mean(dim=0).cpu().numpy(), cmap="magma")
            if row == 0:
                axes[row, col].set_title(f"block {col}: {out.shape[1]}×{out.shape[2]}×{out.shape[3]}", fontsize=9)
    axes[0, 0].set_title("input", fontsize=9)
    if not len(images):
        axes[0, 0].text(0.05, 0.5, "no test images", transform=axes[0, 0].transAxes)
    fig.suptitle("feature maps (mean over channels), first test image of each class")
    save_png(fig, path)


# --- Grad-CAM ----------------------------------------------------------------------------------


def grad_cam(model: nn.Module, x: torch.Tensor, target_class: int) -> np.ndarray:
    """Grad-CAM heatmap (H×W in [0, 1], input size) of `target_class` for one normalised image x (1×C×H×W or C×H×W).

    The last feature block's activations A are caught by a forward hook; their gradients come from
    autograd.grad, so no parameter .grad is touched and no backward hook is needed. Channel weights
    are the spatially averaged gradients; map = ReLU(Σ_k w_k A_k), bilinearly upsampled, divided
    by its maximum (all zeros if nothing speaks for the class). Always fp32, in eval mode. The
    input requires grad, so this works when the parameters are frozen (requires_grad=False).
    """
    x = (x if x.dim() == 4 else x.unsqueeze(0)).detach().float().to(_device(model)).requires_grad_(True)
    caught: dict[str, torch.Tensor] = {}

    def catch(_module, _inputs, output):
        caught["activation"] = first_tensor(output)
        clone = caught["activation"].clone()  # downstream in-place ops change the clone, not the tensor we differentiate
        return (clone, *output[1:]) if isinstance(output, tuple) else clone

    handle = described(model, "feature_blocks").feature_blocks()[-1].register_forward_hook(catch)
    try:
        with _evaluating(model), torch.enable_grad():
            score = model(x)[0, target_class]
            (grads,) = torch.autograd.grad(score, caught["activation"], allow_unused=True)
    finally:
        handle.remove()
    activation = as_grid(caught["activation"].detach())[0].float()
    grads = torch.zeros_like(activation) if grads is None else as_grid(grads)[0].float()
    weights = grads.mean(dim=(1, 2))
    cam = torch.relu((weights[:, None, None] * activation).sum(dim=0))
    cam = F.interpolate(cam[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).cpu().numpy()


def pick_examples(probs: np.ndarray, labels: np.ndarray, n: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the n most confident correct and the n most confident wrong predictions (ties: lower index first)."""
    if len(labels) == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    order = np.argsort(-probs.max(axis=1), kind="stable")
    right = probs.argmax(axis=1)[order] == labels[order]
    return order[right][:n], order[~right][:n]


def grad_cam_png(model: nn.Module, data: TensorSet, probs: np.ndarray, spec: dict, path: Path, n: int = 6) -> None:
    """Grad-CAM of the predicted class over the n most confident correct (top row) and wrong (bottom row) test images.

    `probs` (N×K) are the model's probabilities for `data`; a row with nothing to show says so.
    """
    if n < 1:
        raise ValueError(f"n={n}: need at least one image per row")
    labels = data.labels.numpy()
    correct, wrong = pick_examples(probs, labels, n)
    fig, axes = plt.subplots(2, n, figsize=(2.1 * n, 5.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, (kind, picked) in enumerate((("correct", correct), ("wrong", wrong))):
        axes[row, 0].text(-0.1, 0.5, kind, transform=axes[row, 0].transAxes, rotation=90, ha="right", va="center", fontsize=11)
        if len(picked) == 0:
            axes[row, 0].text(0.0, 0.5, f"no {kind} predictions on the test set", transform=axes[row, 0].transAxes, va="center")
        for ax, i in zip(axes[row], picked):
            predicted = int(probs[i].argmax())
            heat = grad_cam(model, normalize(data.images[i : i + 1], spec), predicted)
            picture, cmap = _picture(data.images[i])
            ax.imshow(picture, cmap=cmap)
            ax.imshow(heat, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_title(f"true {data.classes[labels[i]]}\npred {data.classes[predicted]} ({probs[i, predicted]:.0%})",
                         fontsize=8, color="green" if kind == "correct" else "red")
    fig.suptitle("Grad-CAM of the predicted class (last feature block), most confident first")
    save_png(fig, path)


# --- all three ---------------------------------------------------------------------------------


def write_explanations(model: nn.Module, data: TensorSet, spec: dict, runtime: Runtime, out: Path,
                       batch_size: int = 128, n: int = 6) -> None:
    """filters.png, feature_maps.png and gradcam.png into folder `out`, which is replaced as a whole.

    Predictions (which images are right or wrong) use `runtime`'s precision, as the evaluate
    stage does; feature maps and Grad-CAM gradients are computed in fp32.
    """
    probs = predict_proba(model, data.images, spec, runtime, batch_size)
    images, names = first_of_each_class(data)
    with atomic_path(out) as folder:
        folder.mkdir()
        first_layer_filters_png(model, folder / "filters.png")
        feature_maps_png(model, images, names, spec, folder / "feature_maps.png")
        grad_cam_png(model, data, probs, spec, folder / "gradcam.png", n)
