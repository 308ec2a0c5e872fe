"""The statistics of comparisons: one run is one draw, so a difference is claimed only with an interval.

Paired differences over seeds with a Student-t interval (variants, methods, recipes compared on
the same seeds), a percentile bootstrap over test images (one number per test set, e.g. an
ensemble's gain), and mean ± sample std (folds, seeds).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDiff:
    """Mean of the paired differences variant − baseline over n shared seeds, and its confidence interval."""

    n: int
    mean: float
    half_width: float | None  # t(1 − α/2, n−1)·sd/√n; None with one pair (no interval)

    @property
    def low(self) -> float | None:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> float | None:
        return None if self.half_width is None else self.mean + self.half_width

    @property
    def verdict(self) -> str:
        """interval_verdict of the interval, or n/a (one pair)."""
        return "n/a" if self.half_width is None else interval_verdict(self.low, self.high)


def interval_verdict(low: float, high: float) -> str:
    """better | worse (the interval [low, high] of a difference excludes 0; higher = better) | within noise."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "within noise"


def paired_difference(variant: Mapping[Any, float], baseline: Mapping[Any, float]) -> PairedDiff | None:
    """Differences variant[s] − baseline[s] over the seeds s in both: their mean with a CONFIDENCE Student-t
    interval, mean ± t(1 − α/2, n−1)·sd/√n (sample sd, ddof=1). None when no seed is in both."""
    diffs = [variant[s] - baseline[s] for s in variant if s in baseline]
    n = len(diffs)
    if n == 0:
        return None
    mean = statistics.fmean(diffs)
    if n == 1:
        return PairedDiff(n=1, mean=mean, half_width=None)
    t = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1))
    return PairedDiff(n=n, mean=mean, half_width=t * statistics.stdev(diffs) / math.sqrt(n))


def bootstrap_interval(statistic: Callable[[np.ndarray], float], n: int, resamples: int = 1000,
                       seed: int = 0) -> tuple[float, float]:
    """CONFIDENCE percentile interval of `statistic(rows)` over `resamples` draws of n rows with replacement."""
    rng = np.random.default_rng(seed)
    tail = round(50 * (1 - CONFIDENCE), 6)  # 2.5 (percent) for a 95% interval
    low, high = np.percentile([statistic(rng.integers(0, n, n)) for _ in range(resamples)], [tail, 100 - tail])
    return float(low), float(high)


def mean_std(values: list[float]) -> dict:
    """{'mean', 'std'} (sample std), rounded to 4 places."""
    values = np.array(values)
    return {"mean": round(float(values.mean()), 4), "std": round(float(values.std(ddof=1)), 4)}
