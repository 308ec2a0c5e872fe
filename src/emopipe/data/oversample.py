"""Oversampling of the train split only: minority classes get copies of their own images.

Copies are spread evenly over a class's originals (each original gets ⌊d/n⌋ copies, a random
d mod n get one more), so no single photo is repeated many times. Augmentation at train time
makes the copies differ.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from emopipe.errors import ParamError


def oversample(train: pd.DataFrame, method: str, targets: dict[str, int], seed: int) -> pd.DataFrame:
    """Return train rows plus copies; column `copy` is 0 for originals, k for the k-th copy."""
    counts = train["label"].value_counts()
    if method == "none":
        wanted = counts.to_dict()
    elif method == "balance":
        wanted = {label: int(counts.max()) for label in counts.index}
    elif method == "targeted":
        unknown = sorted(set(targets) - set(counts.index))
        if unknown:
            raise ParamError(f"oversample.targets names class {unknown[0]!r}, not in the data (classes: {', '.join(sorted(counts.index))})")
        wanted = {label: max(int(n), int(targets.get(label, n))) for label, n in counts.items()}
    else:
        raise ParamError(f"oversample.method={method!r} is not one of none, balance, targeted")
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
