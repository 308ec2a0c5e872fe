"""Duplicate groups, so that near-identical images never straddle a train/test split."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Pairwise cells compared at once: ~4M uint64 XORs, i.e. ~32 MB per block.
_BLOCK_CELLS = 4_000_000


def duplicate_groups(sha256: Sequence[str], phash: Sequence[str], *, max_distance: int = 4) -> np.ndarray:
    """Group id per image (int64, 0..G-1 in order of first appearance).

    Images are in one group when linked, transitively, by an identical sha256 or by
    64-bit phashes (hex strings) within Hamming distance ``max_distance``.
    Near-duplicates are found by brute force over the distinct phashes in blocks
    (~0.2 G popcounts for 20K images, about a second), so no hash distribution can
    make it slow or blow up memory.
    """
    n = len(sha256)
    if len(phash) != n:
        raise ValueError(f"sha256 and phash differ in length ({n} vs {len(phash)})")
    if max_distance < 0:
        raise ValueError(f"max_distance must be >= 0, got {max_distance}")
    if n == 0:
        return np.empty(0, dtype=np.int64)

    label = np.arange(n)  # union-find forest; every node points at its root, the group's smallest index
    for key in (sha256, phash):
        _, first, inverse = np.unique(np.asarray(key, dtype=str), return_index=True, return_inverse=True)
        _link(label, first[inverse], np.arange(n))

    if max_distance > 0:
        hashes = np.array([_parse_phash(h) for h in phash], dtype=np.uint64)
        values, representative = np.unique(hashes, return_index=True)
        rows_per_block = max(1, _BLOCK_CELLS // len(values))
        for start in range(0, len(values), rows_per_block):
            block = values[start : start + rows_per_block, None] ^ values[None, start:]
            a, b = np.nonzero(np.bitwise_count(block) <= max_distance)
            _link(label, representative[a + start], representative[b + start])

    # Roots are the smallest index of each group, so sorted roots = order of first appearance.
    return np.unique(label, return_inverse=True)[1].astype(np.int64)


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
