"""The recipe measurement tool: its command line (the runs themselves are the pipeline's, tested end to end)."""
import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from emopipe_ci.harness import as_tree, parse_assignments
from emopipe_studies import measure


def test_sets_become_nested_params_with_yaml_values():
    """measure's --set KEY=VALUE items, read as the harness reads every such option."""
    pairs = parse_assignments(["train.epochs=5", "faces.enabled=true", "split.group_pattern=^(.+)_\\d+"], "--set")
    assert pairs == [("train.epochs", "5"), ("faces.enabled", "true"), ("split.group_pattern", "^(.+)_\\d+")]
    assert as_tree(pairs) == {"train": {"epochs": 5}, "faces": {"enabled": True}, "split": {"group_pattern": "^(.+)_\\d+"}}
    with pytest.raises(typer.BadParameter, match="--set wants KEY=VALUE, got 'train.epochs'"):
        parse_assignments(["train.epochs"], "--set")
    with pytest.raises(typer.BadParameter, match="--set wants KEY=VALUE"):
        parse_assignments(["=5"], "--set")


def test_a_malformed_set_is_a_one_line_usage_error(tmp_path):
    result = CliRunner().invoke(measure.app, ["real-photos", "--data", str(tmp_path), "--set", "train.epochs"], env={"COLUMNS": "300"})
    assert result.exit_code != 0 and "--set wants KEY=VALUE" in result.output


def test_a_missing_folder_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(measure.app, ["real-photos", "--data", str(tmp_path / "nowhere")], env={"COLUMNS": "300"})
    assert result.exit_code != 0 and "is not a folder" in result.output


def test_resume_keeps_only_a_matching_measurement(tmp_path):
    out = tmp_path / "m.json"
    params = {"model": "small", "data": {"source": "folder", "folder": "photos"}}
    with pytest.raises(typer.BadParameter, match="--grouped"):
        measure.stratified_figures(out, "real-photos", "photos", params, [0, 1], None)
    with pytest.raises(typer.BadParameter, match="does not exist"):
        measure.stratified_figures(out, "real-photos", "photos", params, [0, 1], "^(.+)_")
    out.write_text('{"recipe": "real-photos", "dataset": "photos", "seeds": [0, 1], "macro_f1_mean": 0.5,'
                   ' "params": {"model": "small", "data": {"source": "folder", "folder": "photos"}}}')
    assert measure.stratified_figures(out, "real-photos", "photos", params, [0, 1], "^(.+)_")["macro_f1_mean"] == 0.5
    with pytest.raises(typer.BadParameter, match="another seeds"):
        measure.stratified_figures(out, "real-photos", "photos", params, [0, 1, 2], "^(.+)_")
    with pytest.raises(typer.BadParameter, match="another params"):
        measure.stratified_figures(out, "real-photos", "photos", {**params, "model": "wider"}, [0, 1], "^(.+)_")


def runs(*f1s: float) -> list[dict]:
    return [{"seed": seed, "macro_f1": f1} for seed, f1 in enumerate(f1s)]


def test_a_baseline_is_paired_by_seed_on_each_split(tmp_path):
    base = {"dataset": "photos", "params": {"model": "small"}, "runs": runs(0.50, 0.60, 0.55),
            "person_grouped": {"runs": runs(0.40, 0.45, 0.50)}}
    ours = {"dataset": "photos", "runs": runs(0.60, 0.71, 0.64) + [{"seed": 7, "macro_f1": 0.9}],
            "person_grouped": {"runs": runs(0.41, 0.43, 0.51)}}
    paired = measure.paired_against(ours, base)
    strat, grouped = paired["test_macro_f1"]["stratified"], paired["test_macro_f1"]["person_grouped"]
    assert strat["n_pairs"] == 3 and strat["mean"] == pytest.approx(0.1) and strat["verdict"] == "better"
    assert strat["ci95"][0] > 0  # differences 0.10, 0.11, 0.09: beyond noise
    assert grouped["mean"] == pytest.approx(0.0) and grouped["verdict"] == "within noise"
    assert measure.paired_against({"dataset": "photos", "runs": runs(0.5)}, {"runs": runs(0.4)})["test_macro_f1"][
        "stratified"]["ci95"] is None  # one pair: no interval


def test_a_baseline_of_another_folder_is_refused_before_any_run(tmp_path):
    with pytest.raises(typer.BadParameter, match="does not exist"):
        measure.load_baseline(tmp_path / "none.json", "photos")
    (tmp_path / "b.json").write_text('{"dataset": "other"}')
    with pytest.raises(typer.BadParameter, match="measured 'other', not 'photos'"):
        measure.load_baseline(tmp_path / "b.json", "photos")


def predictions(probs: list[list[float]], actual: list[str], classes=("happy", "sad")) -> pd.DataFrame:
    """A predictions.csv as the evaluate stage writes it."""
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(len(actual))], "actual": actual,
                          "predicted": [classes[int(np.argmax(p))] for p in probs]})
    return frame.join(pd.DataFrame(probs, columns=[f"p_{c}" for c in classes]))


def test_the_seed_ensemble_averages_probabilities_and_bootstraps_its_gain():
    actual = ["happy", "sad"] * 20
    right = [[0.9, 0.1] if a == "happy" else [0.1, 0.9] for a in actual]
    # Each seed is confidently right on most images and weakly wrong on a different tenth of them:
    # averaged, the confident votes win everywhere.
    seeds = []
    for s in range(3):
        probs = [list(p) for p in right]
        for i in range(s, len(actual), 10):
            probs[i] = [0.4, 0.6] if actual[i] == "happy" else [0.6, 0.4]
        seeds.append(predictions(probs, actual))
    result = measure.seed_ensemble(seeds, resamples=200)
    assert result["models"] == 3 and result["macro_f1"] == 1.0 and result["accuracy"] == 1.0
    assert result["gain_vs_single_mean"] == pytest.approx(0.1, abs=0.01)
    assert result["ci95"][0] > 0 and result["verdict"] == "better"
    same = measure.seed_ensemble([seeds[0]] * 3, resamples=200)  # identical models: nothing to gain
    assert same["gain_vs_single_mean"] == 0 and same["ci95"] == [0, 0] and same["verdict"] == "within noise"
    with pytest.raises(ValueError, match="different test images"):
        measure.seed_ensemble([seeds[0], seeds[1].iloc[::-1].reset_index(drop=True)])
