"""Benchmark-shaped sources: a FER2013-style folder with its own train/test splits, and a CK+-style
folder of person-named frames evaluated by person-grouped k-fold (issue 15)."""
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, REPO_PARAMS

from emopipe.apps.recipe import check_choices, recipe_file
from emopipe.config import SplitParams, load_params, merge
from emopipe.data import synthetic
from emopipe.data.intake import IntakeError, ingest_folder, source_splits
from emopipe.data.split import assign_folds, fold_split, main_splits, source_split
from emopipe.errors import ParamError
from emopipe_ci.harness import make_sandbox, repro, run, set_params

CKPLUS_PERSON = r"^(S\d+)_"


def split_params(**changes) -> SplitParams:
    """params.yaml's split section (holdout, use_source_splits: null) with `changes`."""
    return replace(REPO_PARAMS.split, **changes)


def fer_folder(root: Path, train: int = 12, test: int = 4, classes=("happy", "sad", "anger"), size: int = 48) -> Path:
    """FER2013's layout: train/<class>/ and test/<class>/ (generated faces, greyscale 48 px)."""
    for split, n, seed in (("train", train, 0), ("test", test, 1)):
        synthetic.generate(root / split, {c: n for c in classes}, size=size, seed=seed, progress=False)
    return root


def ckplus_folder(root: Path, persons: int = 9, frames: int = 3, classes=("happy", "sad", "anger")) -> Path:
    """CK+'s naming: <class>/S<person>_<sequence>_<frame>.jpg, several near-identical frames per sequence."""
    synthetic.generate(root, {c: persons * frames for c in classes}, size=48, seed=0, progress=False)
    for c in classes:
        for i, path in enumerate(sorted((root / c).iterdir())):
            path.rename(path.with_name(f"S{i // frames + 10:03d}_{classes.index(c) + 1:03d}_{i % frames + 1:08d}.jpg"))
    return root


@pytest.mark.parametrize(("names", "expected"), [
    (["train", "test"], {"train": "train", "test": "test"}),
    (["Train", "TEST", "Validation"], {"Train": "train", "TEST": "test", "Validation": "val"}),
    (["train", "val", "test"], {"train": "train", "val": "val", "test": "test"}),
    (["train", "test", "extra"], {}),  # a folder that names no split: an ordinary class-per-folder source
    (["happy", "sad"], {}),
    (["train", "validation"], {}),  # no test split
])
def test_source_splits_are_recognised_in_any_case(tmp_path, names, expected):
    for name in names:
        (tmp_path / name / "happy").mkdir(parents=True)
    assert source_splits(tmp_path) == expected


def test_two_folders_for_one_split_is_an_error(tmp_path):
    for name in ("train", "training", "test"):
        (tmp_path / name / "happy").mkdir(parents=True)
    with pytest.raises(IntakeError, match="two folders for one split"):
        source_splits(tmp_path)


def test_intake_reads_classes_inside_split_folders(tmp_path):
    src = fer_folder(tmp_path / "fer", train=3, test=2)
    (src / "train" / "stray.jpg").write_bytes((src / "train" / "happy" / "happy_0000.jpg").read_bytes())
    result = ingest_folder(src, tmp_path / "out", progress=False)
    assert sorted(result.manifest["label"].unique()) == ["anger", "happy", "sad"]
    assert result.manifest["source_split"].value_counts().to_dict() == {"train": 9, "test": 6}
    assert result.rejects.set_index("source").loc["train/stray.jpg", "reason"].startswith("no-class-folder")


def frame_with(splits: list[str], labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"source": [f"{s}/{c}/{i}.jpg" for i, (s, c) in enumerate(zip(splits, labels))],
                         "label": labels, "source_split": splits})


def test_source_split_keeps_test_carves_val_and_drops_leaked_copies():
    splits = ["train"] * 40 + ["test"] * 10
    f = frame_with(splits, ["a", "b"] * 25)
    groups = np.arange(50)
    groups[0] = groups[40]  # train image 0 is a copy of test image 40 (same label: both 'a')
    names, leaks = source_split(f, groups, val_share=0.2, seed=0, leaks="drop")
    assert (names[40:] == "test").all()
    assert names[0] == "leak" and leaks == {"groups": 1, "images": 1, "action": "drop", "examples": ["train/a/0.jpg"]}
    assert 6 <= (names == "val").sum() <= 10 and set(names[1:40]) == {"train", "val"}
    kept, report = source_split(f, groups, val_share=0.2, seed=0, leaks="keep")
    assert kept[0] in ("train", "val") and report["images"] == 1


def test_a_source_val_split_is_kept_as_is():
    f = frame_with(["train"] * 6 + ["val"] * 2 + ["test"] * 2, ["a", "b"] * 5)
    names, _ = source_split(f, np.arange(10), val_share=0.2, seed=0, leaks="drop")
    assert list(names) == ["train"] * 6 + ["val"] * 2 + ["test"] * 2


def test_main_splits_follow_use_source_splits():
    f = frame_with(["train"] * 40 + ["test"] * 10, ["a", "b"] * 25)
    groups = np.arange(50)
    out, how = main_splits(f, groups, split_params(use_source_splits=None), seed=0)  # null: use them when found
    assert how["mode"] == "source" and (out["split"][40:] == "test").all()
    out, how = main_splits(f, groups, split_params(use_source_splits=False), seed=0)
    assert how == {"source_splits_found": True, "mode": "holdout"} and (out["split"][40:] != "test").any()
    plain = f.drop(columns="source_split")
    assert main_splits(plain, groups, split_params(use_source_splits=None), seed=0)[1] == {"source_splits_found": False, "mode": "holdout"}
    with pytest.raises(ParamError, match="split.use_source_splits is true"):
        main_splits(plain, groups, split_params(use_source_splits=True), seed=0)


def test_kfold_folds_never_share_a_person_and_fold_zero_is_the_test_split():
    persons = np.repeat(np.arange(30), 4)  # 30 people, 4 frames each
    labels = pd.Series(np.where(persons % 3 == 0, "a", np.where(persons % 3 == 1, "b", "c")))
    folds = assign_folds(labels, persons, k=5, seed=0)
    assert pd.Series(folds).groupby(persons).nunique().max() == 1
    assert sorted(np.bincount(folds)) == [24] * 5
    f = pd.DataFrame({"source": [f"S{p}_{i}.jpg" for i, p in enumerate(persons)], "label": labels})
    out, how = main_splits(f, persons, split_params(protocol="kfold", test_folds=5, use_source_splits=None), seed=0)
    assert how["mode"] == "kfold" and (out["fold"] == folds).all()
    assert ((out["split"] == "test") == (folds == 0)).all()
    rest = fold_split(labels, persons, folds, 0, 0.7 / 0.85, seed=0)
    assert (rest == out["split"].to_numpy()).all()  # what evaluate recomputes for fold 0 is what split wrote


def test_kfold_with_required_source_splits_is_refused(tmp_path):
    params = tmp_path / "params.yaml"
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    tree["split"] |= {"protocol": "kfold", "use_source_splits": True}
    params.write_text(yaml.safe_dump(tree))
    with pytest.raises(ParamError, match="choose one"):
        load_params(params)


@pytest.mark.parametrize("name", ["fer2013", "ckplus", "six-emotions"])
def test_each_benchmark_recipe_is_valid(tmp_path, name):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    merge(params, yaml.safe_load(recipe_file(name, REPO / "recipes").read_text()))
    params["data"]["folder"] = str(tmp_path)  # what `--data` gives a recipe for local folders
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    check_choices(load_params(tmp_path / "params.yaml"))  # types and ranges, and every registered choice


# The real pipeline on each shape (dvc repro up to evaluate), on a config small enough for CI.
QUICK = {"shift": {"source": "none"}, "model": "cnn", "model_args": {"batch_norm": True}, "input": {"size": 32, "channels": 1},
         "train": {"epochs": 3, "batch_size": 16, "lr": 0.003, "scheduler": "onecycle"}}


def run_recipe(tmp_path: Path, recipe: str, folder: Path, **more) -> Path:
    repo = make_sandbox(tmp_path / "repo")
    run(repo, "python", "-m", "emopipe.apps.recipe", recipe, "--data", str(folder))
    set_params(repo, QUICK | more)  # as a recipe is applied: model_args replaced whole, other sections key by key
    repro(repo, "evaluate")
    return repo


def metrics(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


@pytest.mark.slow
def test_a_fer2013_shaped_folder_keeps_its_own_test_split(tmp_path):
    folder = fer_folder(tmp_path / "fer")
    (folder / "test" / "happy" / "copy.jpg").write_bytes((folder / "train" / "happy" / "happy_0000.jpg").read_bytes())
    repo = run_recipe(tmp_path, "fer2013", folder)
    data = metrics(repo, "data")
    assert data["splits"]["mode"] == "source" and data["splits"]["source_leaks"]["images"] == 1
    assert data["counts"]["test"] == {"anger": 4, "happy": 5, "sad": 4}  # the source's test split, whole
    assert sum(data["counts"]["train"].values()) + sum(data["counts"]["val"].values()) == 36 - 1  # the leaked copy left out
    test = pd.read_csv(repo / "data/split/test.csv")
    assert test["source"].str.startswith("test/").all()
    ev = metrics(repo, "eval")
    assert 0.0 <= ev["macro_f1"] <= 1.0 and sum(c["support"] for c in ev["per_class"].values()) == 13


@pytest.mark.slow
def test_a_ckplus_shaped_folder_runs_person_grouped_kfold(tmp_path):
    folder = ckplus_folder(tmp_path / "ck")
    repo = run_recipe(tmp_path, "ckplus", folder, split={"test_folds": 3}, faces={"enabled": False})
    rows = pd.concat([pd.read_csv(repo / f"data/split/{n}.csv") for n in ("train", "val", "test")])
    persons = rows["source"].map(lambda s: re.match(CKPLUS_PERSON, Path(s).name).group(1))
    assert rows.groupby(persons)["fold"].nunique().max() == 1  # nobody in two folds
    ev = metrics(repo, "eval")
    assert ev["protocol"] == "kfold" and ev["folds"] == 3 and set(ev["per_fold"]) == {"0", "1", "2"}
    assert sum(f["images"] for f in ev["per_fold"].values()) == len(rows) == 81
    assert ev["macro_f1"] == pytest.approx(np.mean([f["macro_f1"] for f in ev["per_fold"].values()]), abs=1e-4)
    assert ev["macro_f1_std"] >= 0 and len(pd.read_csv(repo / "plots/eval/predictions.csv")) == 81
