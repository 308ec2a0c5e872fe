import numpy as np
import pandas as pd
import pytest

from emopipe.data.dedup import person_ids, union_groups
from emopipe.data.oversample import oversample
from emopipe.data.split import (
    count_table,
    split_groups,
    stratified_group_split,
    take_shots,
)
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
    with pytest.raises(ParamError, match="oversample.targets must map class names to counts when oversample.method is 'targeted'"):
        oversample(f, "targeted", {}, seed=0)
    with pytest.raises(ParamError, match="oversample.method='smote' is not a registered oversample method; choose one of: balance, none, targeted"):
        oversample(f, "smote", {}, seed=0)


def test_person_ids_from_file_names():
    ids, unmatched = person_ids(["Al_Gore_0002.jpg", "Al_Gore_0007.jpg", "Tony_Blair_0001.jpg", "IMG.jpg"], r"^(.+)_\d+\.\w+$")
    assert ids[0] == ids[1] != ids[2] and ids[3] == "file:IMG.jpg" and unmatched == 1


def test_union_groups_links_transitively():
    duplicates = np.array([0, 0, 1, 2, 3])
    persons = np.array(["a", "b", "b", "c", "c"])
    assert union_groups(duplicates, persons).tolist() == [0, 0, 0, 1, 1]


def test_one_person_never_in_two_splits():
    """Every person shows every emotion, as in CK+ or muxspace-dev: grouping by person keeps each
    person's pictures, whatever their class, in one split."""
    rng = np.random.default_rng(0)
    rows = [(f"{c}/Person_{p}_{i:04d}.jpg", c) for p in range(30) for c in "abc" for i in range(int(rng.integers(1, 4)))]
    f = pd.DataFrame({"source": [r[0] for r in rows], "label": [r[1] for r in rows]})
    f = f.assign(sha256=[f"{i:064x}" for i in range(len(f))], phash=[f"{(i * 0x9E3779B97F4A7C15) % 2**64:016x}" for i in range(len(f))])
    grouped, groups, unmatched = split_groups(f, 0, 0.0, r"^(.+)_\d+\.\w+$")
    split = stratified_group_split(grouped["label"], groups, FRACTIONS, seed=0)
    per_person = pd.DataFrame({"person": grouped["person"], "split": split}).groupby("person")["split"].nunique()
    assert unmatched == 0 and grouped["person"].nunique() == 30 and (per_person == 1).all()
    assert set(split) == set(FRACTIONS)
    ungrouped = stratified_group_split(f["label"], split_groups(f, 0, 0.0, None)[1], FRACTIONS, seed=0)
    leaks = pd.DataFrame({"person": grouped["person"], "split": ungrouped}).groupby("person")["split"].nunique()
    assert (leaks > 1).any()  # without the pattern, people do straddle splits
