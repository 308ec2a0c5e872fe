"""Oversampling of the train split only: minority classes get copies of their own images.

`METHODS` (the param `oversample.method`) says how many images each class should have; the
copies are spread evenly over a class's originals (each original gets ⌊d/n⌋ copies, a random
d mod n get one more), so no single photo is repeated many times. Augmentation at train time
makes the copies differ.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from emopipe.errors import ParamError
from emopipe.registry import Registry

# (images per class, oversample.targets) -> wanted images per class
METHODS: Registry[Callable[[pd.Series, dict[str, int]], dict[str, int]]] = Registry("oversample.method", "oversample method")


@METHODS.register("none")
def keep(counts: pd.Series, targets: dict[str, int]) -> dict[str, int]:
    return counts.to_dict()


@METHODS.register("balance")
def balance(counts: pd.Series, targets: dict[str, int]) -> dict[str, int]:
    """Every class as large as the largest."""
    return {label: int(counts.max()) for label in counts.index}


@METHODS.register("targeted")
def targeted(counts: pd.Series, targets: dict[str, int]) -> dict[str, int]:
    """The counts `targets` names (never fewer than a class has)."""
    if not targets:
        raise ParamError("oversample.targets must map class names to counts when oversample.method is 'targeted'")
    if unknown := sorted(set(targets) - set(counts.index)):
        raise ParamError(f"oversample.targets names class {unknown[0]!r}, not in the data (classes: {', '.join(sorted(counts.index))})")
    return {label: max(int(n), int(targets.get(label, n))) for label, n in counts.items()}


def oversample(train: pd.DataFrame, method: str, targets: dict[str, int], seed: int) -> pd.DataFrame:
    """Return train rows plus copies; column `copy` is 0 for originals, k for the k-th copy."""
    counts = train["label"].value_counts()
    wanted = METHODS.lookup(method)(counts, targets)
    rng = np.random.default_rng(seed)
    parts = [train.assign(copy=0)]
    for label in sorted(counts.index):
        originals = train[train["label"] == label]
        deficit = wanted[label] - len(originals)
        if deficit <= 0:
            continue
        repeats = np.full(len(originals), deficit // len(originals))
        repeats[rng.choice(len(originals), deficit % len(originals), replace=False)] += 1
        for k in range(1, int(repeats.max()) + 1):
            parts.append(originals[repeats >= k].assign(copy=k))
    return pd.concat(parts, ignore_index=True)
