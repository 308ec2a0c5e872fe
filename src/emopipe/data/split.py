"""Leakage-free stratified splits.

Images are split by *group*: identical or near-identical pictures (see `dedup`) and, with
`split.group_pattern`, every picture of one person, so neither copies of a photo nor a
person's face land in two splits; groups are dealt to splits class by class so each
split keeps the class balance.
"""
from __future__ import annotations

from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from emopipe.data.dedup import duplicate_groups, person_ids, union_groups
from emopipe.errors import ParamError


def split_groups(frame: pd.DataFrame, distance: int, pattern: str | None) -> tuple[pd.DataFrame, np.ndarray, int]:
    """(frame, split groups, unmatched names): duplicates, and with `pattern` also one person, share a group."""
    duplicates = duplicate_groups(frame["sha256"].tolist(), frame["phash"].tolist(), max_distance=distance)
    if pattern is None:
        return frame, duplicates, 0
    persons, unmatched = person_ids([PurePosixPath(s).name for s in frame["source"]], pattern)
    frame = frame.assign(person=persons, duplicate_group=duplicates)
    return frame, union_groups(duplicates, persons), unmatched


def stratified_group_split(labels: pd.Series, groups: np.ndarray, fractions: dict[str, float], seed: int) -> np.ndarray:
    """Return a split name per row. `fractions` maps split name → fraction (summing to 1)."""
    rng = np.random.default_rng(seed)
    names = list(fractions)
    target = np.array([fractions[n] for n in names])
    frame = pd.DataFrame({"label": labels.to_numpy(), "group": groups})
    sizes = frame.groupby("group").size()
    group_label = frame.groupby("group")["label"].first()
    chosen: dict[int, str] = {}
    for label in sorted(group_label.unique()):
        class_groups = group_label.index[group_label == label].to_numpy()
        class_groups = class_groups[rng.permutation(len(class_groups))]
        total = sizes[class_groups].sum()
        filled = np.zeros(len(names))
        for g in class_groups:
            # Give the group to the split furthest below its quota.
            deficit = target * total - filled
            pick = int(np.argmax(deficit))
            filled[pick] += sizes[g]
            chosen[g] = names[pick]
    return frame["group"].map(chosen).to_numpy(dtype=object)


def take_shots(labels: pd.Series, groups: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Mark `shots` images per class as 'adapt' (whole duplicate groups), the rest 'eval'."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"label": labels.to_numpy(), "group": groups})
    sizes = frame.groupby("group").size()
    adapt_groups: set[int] = set()
    for label, rows in frame.groupby("label"):
        if shots >= len(rows):
            raise ParamError(
                f"adapt.shots={shots} is too large for class {label!r} of the shift domain "
                f"({len(rows)} images, at least one must stay for evaluation); lower adapt.shots"
            )
        taken = 0
        for g in rng.permutation(rows["group"].unique()):
            if taken + sizes[g] > shots:
                continue
            adapt_groups.add(g)
            taken += sizes[g]
            if taken == shots:
                break
    return np.where(frame["group"].isin(adapt_groups), "adapt", "eval").astype(object)


def shift_classes(shift: pd.DataFrame, main_classes: set[str], unknown: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """The shift domain restricted to classes the main domain knows: (rows kept, {dropped class: images}).

    A shift domain may hold a subset of the main classes; a class the model cannot predict is an
    error, or with `unknown == "drop"` its images are left out and counted.
    """
    stray = shift[~shift["label"].isin(main_classes)]
    counts = {str(c): int(n) for c, n in stray["label"].value_counts().sort_index().items()}
    if counts and unknown == "error":
        raise ParamError(f"shift domain class(es) {sorted(counts)} are not in the main domain ({', '.join(sorted(main_classes))}): "
                         "rename them with shift.class_map (e.g. {sadness: sad}), leave them out with shift.classes, "
                         "or set split.unknown_shift_classes: drop")
    return shift[shift["label"].isin(main_classes)].reset_index(drop=True), counts


def count_table(frame: pd.DataFrame, by: str = "split") -> dict[str, dict[str, int]]:
    """{split: {class: count}} with every class present in every split (zeros included)."""
    classes = sorted(frame["label"].unique())
    return {
        split: {c: int((part["label"] == c).sum()) for c in classes}
        for split, part in frame.groupby(by, sort=False)
    }
