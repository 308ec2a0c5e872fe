"""The recipe measurement tool: its command line (the runs themselves are the pipeline's, tested end to end)."""
import pytest
import typer
from typer.testing import CliRunner

from emopipe.tools import measure


def test_sets_become_nested_params_with_yaml_values():
    assert measure.parse_sets(["train.epochs=5", "faces.enabled=true", "split.group_pattern=^(.+)_\\d+"]) == {
        "train": {"epochs": 5}, "faces": {"enabled": True}, "split": {"group_pattern": "^(.+)_\\d+"}}
    with pytest.raises(typer.BadParameter, match="KEY=VALUE"):
        measure.parse_sets(["train.epochs"])


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
