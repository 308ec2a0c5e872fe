"""Static figures (PNG) next to the data files DVC renders itself."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from emopipe.io import atomic_path  # noqa: E402


def save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def confusion_png(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Row-normalised confusion matrix with raw counts in each cell."""
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2, 1.1 * len(classes) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{matrix[i, j]}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
    save_png(fig, path)


def curves_png(history: pd.DataFrame, path: Path, best_epoch: int) -> None:
    """Loss, accuracy and macro-F1 per epoch, train vs validation."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, metric in zip(axes, ("loss", "accuracy", "macro_f1")):
        for split in ("train", "val"):
            column = f"{split}_{metric}"
            if column in history:
                ax.plot(history["epoch"], history[column], marker=".", label=split)
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch {best_epoch}")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    save_png(fig, path)
