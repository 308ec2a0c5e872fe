import numpy as np
import pandas as pd
import pytest

from emopipe.data.oversample import oversample
from emopipe.data.split import count_table, stratified_group_split, take_shots
from emopipe.errors import ParamError

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def frame(counts: dict[str, int]) -> pd.DataFrame:
    labels = [c for c, n in counts.items() for _ in range(n)]
    return pd.DataFrame({"image": [f"{i}.jpg" for i in range(len(labels))], "label": labels})


def test_split_is_stratified_and_deterministic():
    f = frame({"a": 200, "b": 100, "c": 40})
    groups = np.arange(len(f))
    split = stratified_group_split(f["label"], groups, FRACTIONS, seed=0)
    assert (split == stratified_group_split(f["label"], groups, FRACTIONS, seed=0)).all()
    assert not (split == stratified_group_split(f["label"], groups, FRACTIONS, seed=1)).all()
    table = count_table(f.assign(split=split))
    for label, n in {"a": 200, "b": 100, "c": 40}.items():
        assert abs(table["train"][label] - 0.7 * n) <= 1
        assert abs(table["val"][label] - 0.15 * n) <= 1
        assert abs(table["test"][label] - 0.15 * n) <= 1


def test_duplicate_groups_never_cross_splits():
    f = frame({"a": 60, "b": 60})
    groups = np.arange(len(f)) // 3  # every 3 consecutive images are copies of one photo
    split = stratified_group_split(f["label"], groups, FRACTIONS, seed=0)
    assert pd.Series(split).groupby(groups).nunique().max() == 1


def test_take_shots_exact_k_per_class_and_error_when_too_many():
    f = frame({"a": 20, "b": 8})
    marks = take_shots(f["label"], np.arange(len(f)), shots=5, seed=0)
    assert pd.Series(marks[marks == "adapt"]).size == 10
    assert (f[marks == "adapt"]["label"].value_counts() == 5).all()
    with pytest.raises(ParamError, match=r"adapt.shots=8 is too large for class 'b'"):
        take_shots(f["label"], np.arange(len(f)), shots=8, seed=0)


def test_oversample_balance_spreads_copies_evenly():
    f = frame({"a": 30, "b": 10})
    out = oversample(f, "balance", {}, seed=0)
    assert out["label"].value_counts().to_dict() == {"a": 30, "b": 30}
    per_image = out[out["label"] == "b"]["image"].value_counts()
    assert per_image.max() - per_image.min() <= 1  # no image copied much more than another
    assert (out["copy"] == 0).sum() == len(f)


def test_oversample_targeted_and_none():
    f = frame({"a": 30, "b": 10, "c": 5})
    out = oversample(f, "targeted", {"c": 12}, seed=0)
    assert out["label"].value_counts().to_dict() == {"a": 30, "b": 10, "c": 12}
    assert len(oversample(f, "none", {}, seed=0)) == len(f)
    with pytest.raises(ParamError, match="oversample.targets names class 'z'"):
        oversample(f, "targeted", {"z": 3}, seed=0)
