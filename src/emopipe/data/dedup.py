"""Duplicate and person groups, so that near-identical images, or one person, never straddle a train/test split.

Exact copies (the same pixels: the intake's sha256) always share a group. A near-duplicate is a
candidate by perceptual hash (phash within `max_distance` bits), confirmed by a second, independent
measure (`confirm`; the split uses `ThumbnailCorrelation`). Groups are stars, not chains: an image
joins the group of the nearest earlier representative it is a confirmed near-duplicate of, or
represents a group of its own. Every member is then a near-duplicate of its representative, and
distinct images cannot link up through a chain of small steps: at FER2013 size (35k faces at 48 px)
the transitive closure of "phash within 4 bits" joined 5,103 images of all six classes into one group.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# Pairwise cells compared at once: ~4M uint64 XORs, i.e. ~32 MB per block.
_BLOCK_CELLS = 4_000_000
THUMBNAIL = 32  # side of the grey thumbnails whose correlation confirms a phash match
CROPS = (0.0, 0.02, 0.04)  # central crops (fraction cut from each side) tried when comparing thumbnails

# (rows a, rows b) of candidate pairs -> which of them are near-duplicates
Confirm = Callable[[np.ndarray, np.ndarray], np.ndarray]


def duplicate_groups(sha256: Sequence[str], phash: Sequence[str], *, max_distance: int = 4,
                     confirm: Confirm | None = None) -> np.ndarray:
    """Group id per image (int64, 0..G-1 in order of first appearance).

    Images with the same sha256 share a group; an image whose phash (hex string) is within
    `max_distance` bits of an earlier group representative's, confirmed by `confirm` (all
    candidates when None), joins the nearest such group (ties: the earliest).
    """
    n = len(sha256)
    if len(phash) != n:
        raise ValueError(f"sha256 and phash differ in length ({n} vs {len(phash)})")
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    _, first, copy_of = np.unique(np.asarray(sha256, dtype=str), return_index=True, return_inverse=True)
    reps = np.sort(first)  # one image per distinct sha256, in order of appearance
    hashes = np.array([_parse_phash(phash[i]) for i in reps], dtype=np.uint64)
    a, b, dist = _pairs_within(hashes, max_distance)
    if confirm is not None and len(a):
        keep = np.asarray(confirm(reps[a], reps[b]), dtype=bool)
        a, b, dist = a[keep], b[keep], dist[keep]
    star = _stars(len(reps), a, b, dist)
    position = np.empty(n, dtype=np.int64)
    position[reps] = np.arange(len(reps))
    return _by_first_appearance(star[position[first[copy_of]]])


def _by_first_appearance(labels: np.ndarray) -> np.ndarray:
    """Relabel 0..G-1 in order of first appearance."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))
    return rank[inverse]


def _pairs_within(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, distance) of every pair a < b of `hashes` within `max_distance` bits, by brute force in blocks
    (~0.6 G popcounts for 35k images, a few seconds), so no hash distribution can make it slow."""
    n = len(hashes)
    rows = max(1, _BLOCK_CELLS // n)
    found = []
    for start in range(0, n, rows):
        dist = np.bitwise_count(hashes[start : start + rows, None] ^ hashes[None, :])
        a, b = np.nonzero(dist <= max_distance)
        later = a + start < b
        found.append((a[later] + start, b[later], dist[a[later], b[later]].astype(np.int64)))
    return tuple(np.concatenate(parts) for parts in zip(*found)) if found else (np.empty(0, np.int64),) * 3


def _stars(n: int, a: np.ndarray, b: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Representative per item: each item b joins its nearest earlier representative a among the pairs
    (ties: the earliest), or represents itself."""
    star, joined = np.arange(n), np.zeros(n, dtype=bool)
    for k in np.lexsort((a, dist, b)):  # by the later item, then distance, then the earlier item
        i, j = a[k], b[k]
        if not joined[j] and not joined[i]:  # i's own pairs came first (i < j): whether it joined is settled
            star[j], joined[j] = i, True
    return star


def union_groups(*labelings: np.ndarray) -> np.ndarray:
    """Group id per image (0..G-1 in order of first appearance): two images share a group when
    any labeling puts them together, transitively (e.g. duplicates of one photo, one person)."""
    n = len(labelings[0])
    label = np.arange(n)
    for key in labelings:
        _, first, inverse = np.unique(np.asarray(key), return_index=True, return_inverse=True)
        _link(label, first[inverse], np.arange(n))
    return np.unique(label, return_inverse=True)[1].astype(np.int64)


def person_ids(names: Sequence[str], pattern: str) -> tuple[np.ndarray, int]:
    """(person per file name by `pattern`'s first group, number of names it did not match).

    An unmatched name is a person of its own, so it still lands in exactly one split.
    """
    regex = re.compile(pattern)
    found = [regex.search(name) for name in names]
    ids = np.array([f"person:{m.group(1)}" if m else f"file:{name}" for m, name in zip(found, names)], dtype=object)
    return ids, sum(m is None for m in found)


class ThumbnailCorrelation:
    """The second measure: two images are near-duplicates when their THUMBNAIL×THUMBNAIL grey thumbnails
    correlate (Pearson) at least `minimum`, the best over either image's central crops in CROPS (a
    slightly cropped copy lines up again). Brightness and contrast changes, re-encoding and resizing keep
    it above 0.98; two different faces drawn from one template stay below it. Thumbnails are decoded only
    for the images in candidate pairs."""

    def __init__(self, paths: Sequence[str | Path], minimum: float):
        self.paths, self.minimum, self._thumbs = list(paths), minimum, {}

    def _thumbs_of(self, i: int) -> np.ndarray:
        """CROPS × pixels: the image's normalised thumbnail at each central crop."""
        if i not in self._thumbs:
            with Image.open(self.paths[i]) as img:
                grey = img.convert("L")
                rows = []
                for crop in CROPS:
                    w, h = grey.size
                    c, r = round(w * crop), round(h * crop)
                    pixels = np.asarray(grey.crop((c, r, w - c, h - r)).resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR),
                                        np.float64).ravel()
                    centred = pixels - pixels.mean()
                    rows.append(centred / max(float(np.linalg.norm(centred)), 1e-9))
            self._thumbs[i] = np.stack(rows)
        return self._thumbs[i]

    def similarity(self, i: int, j: int) -> float:
        """The best correlation of one image's full thumbnail with the other's at any crop, either way."""
        a, b = self._thumbs_of(i), self._thumbs_of(j)
        return float(max((a[0] @ b.T).max(), (b[0] @ a.T).max()))

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.array([self.similarity(i, j) >= self.minimum for i, j in zip(a.tolist(), b.tolist())], dtype=bool)


def group_report(groups: np.ndarray, labels: Sequence[str], sha256: Sequence[str], sources: Sequence[str]) -> dict:
    """Sizes of the groups of more than one image (a histogram, the largest), the groups that span classes,
    and label conflicts: exact copies (same sha256) given different labels, with a few examples."""
    labels, sha = np.asarray(labels, dtype=object), np.asarray(sha256, dtype=object)
    sizes = np.bincount(groups) if len(groups) else np.zeros(0, dtype=np.int64)
    multi = sizes[sizes > 1]
    bins = {"2": (2, 2), "3": (3, 3), "4-5": (4, 5), "6-10": (6, 10), "11-20": (11, 20), ">20": (21, None)}
    histogram = {name: int(((multi >= lo) & ((multi <= hi) if hi else True)).sum()) for name, (lo, hi) in bins.items()}
    classes_per_group = {g: set() for g in np.flatnonzero(sizes > 1)}
    for g, label in zip(groups.tolist(), labels.tolist()):
        if g in classes_per_group:
            classes_per_group[g].add(label)
    by_sha: dict[str, set] = {}
    for s, label in zip(sha.tolist(), labels.tolist()):
        by_sha.setdefault(s, set()).add(label)
    conflicted = [s for s, found in by_sha.items() if len(found) > 1]
    examples = sorted({src for s, src in zip(sha.tolist(), sources) if s in set(conflicted[:5])})[:10]
    return {"groups": int(len(multi)), "images": int(multi.sum()), "largest": int(sizes.max()) if len(sizes) else 0,
            "sizes": histogram, "cross_class_groups": int(sum(len(c) > 1 for c in classes_per_group.values())),
            "label_conflicts": {"copies": len(conflicted), "examples": examples}}


def _parse_phash(value: str) -> int:
    number = int(value, 16)
    if number >> 64:
        raise ValueError(f"phash {value!r} is longer than 64 bits")
    return number


def _link(label: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Merge the groups of every pair (a[i], b[i]) in place: vectorised hooking + pointer jumping."""
    while True:
        la, lb = label[a], label[b]
        differ = la != lb
        if not differ.any():
            return
        la, lb = la[differ], lb[differ]
        np.minimum.at(label, np.maximum(la, lb), np.minimum(la, lb))  # hook larger root under smaller
        while not np.array_equal(label[label], label):  # point every node straight at its root
            label[:] = label[label]
