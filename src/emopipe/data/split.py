"""Leakage-free stratified splits: holdout, the source's own splits, or k folds.

Images are split by *group*: identical or near-identical pictures (see `dedup`) and, with
`split.group_pattern`, every picture of one person, so neither copies of a photo nor a
person's face land in two splits; groups are dealt to splits class by class so each
split keeps the class balance.
"""
from __future__ import annotations

from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from emopipe.config import SplitParams
from emopipe.data.dedup import ThumbnailCorrelation, duplicate_groups, person_ids, union_groups
from emopipe.errors import ParamError


def split_groups(frame: pd.DataFrame, distance: int, correlation: float, pattern: str | None) -> tuple[pd.DataFrame, np.ndarray, int]:
    """(frame with its duplicate groups, split groups, unmatched names): copies and confirmed near-duplicates
    (phash within `distance` bits, thumbnails correlating at least `correlation`), and with `pattern`
    every image of one person, share a split group."""
    confirm = ThumbnailCorrelation(frame["image"].tolist(), correlation) if correlation > 0 else None
    duplicates = duplicate_groups(frame["sha256"].tolist(), frame["phash"].tolist(), max_distance=distance, confirm=confirm)
    frame = frame.assign(duplicate_group=duplicates)
    if pattern is None:
        return frame, duplicates, 0
    persons, unmatched = person_ids([PurePosixPath(s).name for s in frame["source"]], pattern)
    frame = frame.assign(person=persons)
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


def fold_split(labels: pd.Series, groups: np.ndarray, folds: np.ndarray, fold: int, train_share: float, seed: int) -> np.ndarray:
    """Split names for the k-fold round that tests on `fold`: that fold is the test split, the other
    folds are dealt to train and val (`train_share` of them to train), by group and class."""
    names = np.full(len(labels), "test", dtype=object)
    rest = folds != fold
    names[rest] = stratified_group_split(labels[rest], groups[rest], {"train": train_share, "val": 1 - train_share}, seed)
    return names


def assign_folds(labels: pd.Series, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) per row: groups (persons, duplicates) dealt to k equal folds class by class."""
    return stratified_group_split(labels, groups, {i: 1 / k for i in range(k)}, seed).astype(int)


def source_split(frame: pd.DataFrame, groups: np.ndarray, val_share: float, seed: int, leaks: str) -> tuple[np.ndarray, dict]:
    """Split names from the source's own splits (column `source_split`): its test split stays the test
    split, its val split (if any) the val split, else val is carved from its train split by group.

    A duplicate or person group found in two source splits is a leak: with `leaks == "drop"` its
    images in the earlier split (train before val before test) are marked 'leak' and left out, so the
    test split stays the source's own.
    Returns (split names, leak report)."""
    given = frame["source_split"].to_numpy(dtype=object)
    names = given.copy()
    train = given == "train"
    if not (given == "val").any():
        names[train] = stratified_group_split(frame["label"][train], groups[train], {"train": 1 - val_share, "val": val_share}, seed)
    rank = pd.Series(given).map({"train": 0, "val": 1, "test": 2}).to_numpy()
    top = pd.Series(rank).groupby(groups).transform("max").to_numpy()
    leaked = rank < top  # a copy (or the same person) is in a later split: test, or the source's val
    if leaks == "drop":
        names[leaked] = "leak"
    report = {"groups": int(pd.Series(groups[leaked]).nunique()), "images": int(leaked.sum()), "action": leaks,
              "examples": frame["source"][leaked].head(5).tolist()}
    return names, report


def main_splits(frame: pd.DataFrame, groups: np.ndarray, s: SplitParams, seed: int) -> tuple[pd.DataFrame, dict]:
    """The main domain with its `split` column (and `fold` under k-fold), and how it was made:
    the source's own splits (when it has them and `split.use_source_splits` allows), fold 0 of
    `split.test_folds` person-grouped folds, or the stratified holdout `split.train/val/test`."""
    found = "source_split" in frame.columns and bool(frame["source_split"].notna().any())
    use = found and s.protocol == "holdout" if s.use_source_splits is None else s.use_source_splits
    if use and not found:
        raise ParamError("split.use_source_splits is true, but the main source has no split folders (train/ and test/ with "
                         "class folders inside); set it to null (use them when found) or false")
    how = {"source_splits_found": found}
    train_share = s.train / (s.train + s.val)
    if use:
        names, leaks = source_split(frame, groups, 1 - train_share, seed, s.source_leaks)
        return frame.assign(split=names), how | {"mode": "source", "source_leaks": leaks}
    if s.protocol == "kfold":
        folds = assign_folds(frame["label"], groups, s.test_folds, seed)
        names = fold_split(frame["label"], groups, folds, 0, train_share, seed)
        return frame.assign(fold=folds, split=names), how | {"mode": "kfold", "folds": s.test_folds}
    names = stratified_group_split(frame["label"], groups, {"train": s.train, "val": s.val, "test": s.test}, seed)
    return frame.assign(split=names), how | {"mode": "holdout"}


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
