"""The tensor store: every image decoded and resized once, kept as uint8 tensors per split.

Training epochs index into these tensors and never decode a JPEG again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from emopipe.errors import MissingFileError
from emopipe.io import atomic_path


@dataclass(frozen=True)
class TensorSet:
    images: torch.Tensor  # uint8, N×C×H×W
    labels: torch.Tensor  # int64, N (index into classes)
    classes: list[str]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | np.ndarray) -> TensorSet:
        index = index.long() if isinstance(index, torch.Tensor) else torch.from_numpy(np.array(index, dtype=np.int64))
        return TensorSet(self.images[index], self.labels[index], self.classes, [self.paths[i] for i in index.tolist()])


def concat(a: TensorSet, b: TensorSet) -> TensorSet:
    """`a` then `b` (same classes) as one set."""
    if a.classes != b.classes:
        raise ValueError(f"cannot join sets with different classes: {a.classes} vs {b.classes}")
    return TensorSet(torch.cat([a.images, b.images]), torch.cat([a.labels, b.labels]), a.classes, a.paths + b.paths)


def square_resize(image: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square, then resize: faces are centred, and aspect is kept."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)


def to_tensor(image: Image.Image, size: int, channels: int) -> torch.Tensor:
    """A PIL image as the model sees it: square, size×size, 1 or 3 channels, uint8 C×H×W."""
    pixels = np.asarray(square_resize(image.convert("L" if channels == 1 else "RGB"), size))
    return torch.from_numpy(pixels.reshape(size, size, channels).copy()).permute(2, 0, 1)


def pack(manifest: pd.DataFrame, classes: list[str], size: int, channels: int, progress: bool = False) -> TensorSet:
    """Decode the images named in `manifest` (columns image, label) into a TensorSet.

    Rows naming the same file (oversampled copies) are decoded once.
    """
    unknown = sorted(set(manifest["label"]) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the model's classes {classes}")
    decoded: dict[str, torch.Tensor] = {}
    images = torch.empty((len(manifest), channels, size, size), dtype=torch.uint8)
    for i, path in enumerate(tqdm(manifest["image"], desc="pack", disable=not progress, leave=False)):
        if path not in decoded:
            with Image.open(path) as img:
                decoded[path] = to_tensor(img, size, channels)
        images[i] = decoded[path]
    index = {c: i for i, c in enumerate(classes)}
    labels = torch.tensor([index[c] for c in manifest["label"]], dtype=torch.long)
    return TensorSet(images, labels, list(classes), list(manifest["image"]))


def save(path: Path, data: TensorSet) -> None:
    with atomic_path(path) as tmp:
        torch.save({"images": data.images, "labels": data.labels, "classes": data.classes, "paths": data.paths}, tmp)


def load(path: Path) -> TensorSet:
    if not Path(path).exists():
        raise MissingFileError(f"{path} not found: run the stages before this one (`dvc repro pack`)")
    raw = torch.load(path, weights_only=True)
    return TensorSet(raw["images"], raw["labels"], list(raw["classes"]), list(raw["paths"]))
