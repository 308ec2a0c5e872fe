"""The image store: every image decoded and resized once, kept as uint8 arrays per split.

A packed split is a folder: `images.npy` (uint8 N×C×H×W, numpy's format) and `index.json`
(classes, labels, paths). Training epochs read batches from it and never decode a JPEG again,
and never hold a whole split in memory: `ImageFile` reads the rows a batch asks for.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm import tqdm

from emopipe.errors import IntakeError, MissingFileError
from emopipe.io import atomic_path

IMAGES, INDEX = "images.npy", "index.json"


class ImageFile:
    """The uint8 images of a packed split, read from disk on indexing, as a tensor of them would be.

    Rows are read with positioned reads, not a memory map: a mapped file's pages count towards the
    process's resident memory once touched, so one epoch would pull the whole split in. Read pages
    stay in the OS's page cache instead, shared and reclaimable. `take` makes a view of some rows.
    """

    def __init__(self, path: Path, rows: np.ndarray | None = None):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if dtype != np.uint8 or fortran or len(shape) != 4:
            raise IntakeError(f"{self.path} is not a packed image array (uint8 N×C×H×W): re-run `dvc repro pack`")
        self.item_shape = tuple(shape[1:])
        self.item_bytes = int(np.prod(self.item_shape))
        stored = (os.path.getsize(self.path) - self.offset) // max(1, self.item_bytes)
        if stored != shape[0]:
            raise IntakeError(f"{self.path} holds {stored} images but its header says {shape[0]} "
                              "(a truncated copy?): re-run `dvc repro pack`")
        self.rows = np.arange(shape[0], dtype=np.int64) if rows is None else rows
        self._fd: int | None = None
        self._pid = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.item_shape)

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, index: np.ndarray) -> ImageFile:
        view = object.__new__(ImageFile)
        view.__dict__.update(self.__dict__, rows=self.rows[index], _fd=None, _pid=0)
        return view

    def __getitem__(self, index: int | slice | np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        rows = self.rows[index]
        if np.ndim(rows) == 0:
            return self[np.array([int(index)])][0]
        out = np.empty((len(rows), *self.item_shape), np.uint8)
        flat = out.reshape(len(rows), -1)
        if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
            self._read(flat.reshape(-1), int(rows[0]))  # a contiguous run: one read
        else:
            for k, row in enumerate(rows):
                self._read(flat[k], int(row))
        return torch.from_numpy(out)

    def _read(self, into: np.ndarray, row: int) -> None:
        if self._fd is None or self._pid != os.getpid():  # a forked worker opens its own descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        view, done = memoryview(into).cast("B"), 0
        while done < len(view):  # a read may return less than asked (2 GiB per call on Linux)
            got = os.preadv(self._fd, [view[done:]], self.offset + row * self.item_bytes + done)
            if not got:
                raise IntakeError(f"{self.path} ended early: re-run `dvc repro pack`")
            done += got

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_fd": None, "_pid": 0}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)


Images = torch.Tensor | ImageFile


@dataclass(frozen=True)
class TensorSet:
    images: Images  # uint8, N×C×H×W: in memory, or on disk (`load`)
    labels: torch.Tensor  # int64, N (index into classes)
    classes: list[str]
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | np.ndarray | Iterable[int]) -> TensorSet:
        index = np.array(index.numpy() if isinstance(index, torch.Tensor) else index, dtype=np.int64)
        images = self.images.take(index) if isinstance(self.images, ImageFile) else self.images[torch.from_numpy(index)]
        return TensorSet(images, self.labels[torch.from_numpy(index)], self.classes, [self.paths[i] for i in index.tolist()])


def concat(*parts: TensorSet) -> TensorSet:
    """The parts (same classes) as one in-memory set, in order."""
    classes = parts[0].classes
    if any(p.classes != classes for p in parts):
        raise ValueError(f"cannot join sets with different classes: {[p.classes for p in parts]}")
    return TensorSet(torch.cat([p.images[:] for p in parts]), torch.cat([p.labels for p in parts]), classes,
                     [path for p in parts for path in p.paths])


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


def _write(path: Path, n: int, item_shape: tuple[int, ...], batches: Iterable[np.ndarray], labels: list[int],
           classes: list[str], paths: list[str]) -> None:
    """Write a packed split at `path` from uint8 batches that hold `n` images in all, one batch in memory at a time."""
    with atomic_path(path) as tmp:
        tmp.mkdir()
        with open(tmp / IMAGES, "wb") as f:
            header = {"descr": "|u1", "fortran_order": False, "shape": (n, *item_shape)}
            np.lib.format.write_array_header_1_0(f, header)
            for batch in batches:
                f.write(np.ascontiguousarray(batch, dtype=np.uint8).tobytes())
        (tmp / INDEX).write_text(json.dumps({"classes": list(classes), "labels": [int(v) for v in labels], "paths": list(paths)}))


def pack(path: Path, manifest: pd.DataFrame, classes: list[str], size: int, channels: int, progress: bool = False) -> None:
    """Decode the images named in `manifest` (columns image, label) into a packed split at `path`.

    One image is in memory at a time; an oversampled copy is decoded again (the same bytes).
    """
    unknown = sorted(set(manifest["label"]) - set(classes))
    if unknown:
        raise ValueError(f"labels {unknown} are not among the model's classes {classes}")

    def decoded() -> Iterable[np.ndarray]:
        for image in tqdm(manifest["image"], desc="pack", disable=not progress, leave=False):
            with Image.open(image) as img:
                yield to_tensor(img, size, channels).numpy()[None]

    index = {c: i for i, c in enumerate(classes)}
    _write(path, len(manifest), (channels, size, size), decoded(), [index[c] for c in manifest["label"]], classes,
           list(manifest["image"]))


def save(path: Path, data: TensorSet, batch: int = 1024) -> None:
    """Write `data` (in memory or on disk) as a packed split at `path`."""
    batches = (data.images[start : start + batch].numpy() for start in range(0, len(data), batch))
    _write(path, len(data), tuple(data.images.shape[1:]), batches, data.labels.tolist(), data.classes, data.paths)


def load(path: Path) -> TensorSet:
    """The packed split at `path`; its images stay on disk until a batch reads them."""
    path = Path(path)
    if not (path / INDEX).is_file() or not (path / IMAGES).is_file():
        raise MissingFileError(f"{path} is not a packed split ({IMAGES} and {INDEX}): run the stages before this one "
                               "(`dvc repro pack`)")
    index = json.loads((path / INDEX).read_text())
    images = ImageFile(path / IMAGES)
    if len(images) != len(index["labels"]):
        raise IntakeError(f"{path}: {len(images)} images but {len(index['labels'])} labels: re-run `dvc repro pack`")
    return TensorSet(images, torch.tensor(index["labels"], dtype=torch.long), list(index["classes"]), list(index["paths"]))
