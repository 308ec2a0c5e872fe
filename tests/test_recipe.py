"""Recipes merge into params.yaml in place: values set, comments kept, invalid results refused."""
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from emopipe.apps import recipe
from emopipe.config import load_params

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "recipes").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def apply(*args: str):
    return CliRunner().invoke(recipe.app, list(args))


def test_a_recipe_sets_its_params_and_keeps_the_rest(workdir):
    (workdir / "recipes" / "grey.yaml").write_text("input: {channels: 1}\ntrain: {epochs: 7}\nmodel_args: {dropout: 0.1}\n")
    photos = workdir / "photos"
    photos.mkdir()
    done = apply("grey", "--data", str(photos))
    assert done.exit_code == 0, done.output
    p = load_params(workdir / "params.yaml")
    assert (p.input.channels, p.input.size, p.train.epochs, p.train.lr) == (1, 64, 7, 0.003)
    assert p.model_args == {"dropout": 0.1}  # replaced whole: the default's batch_norm is not kept and p.data.source == "folder" and p.data.folder == str(photos)
    assert "# Every knob of the pipeline" in (workdir / "params.yaml").read_text()  # comments survive


def test_an_invalid_result_leaves_params_untouched(workdir):
    before = (workdir / "params.yaml").read_text()
    (workdir / "recipes" / "bad.yaml").write_text("train: {epochs: -1}\n")
    done = apply("bad")
    assert done.exit_code != 0 and "train.epochs" in str(done.exception)
    assert (workdir / "params.yaml").read_text() == before


def test_an_unknown_recipe_names_the_known_ones(workdir):
    (workdir / "recipes" / "grey.yaml").write_text("input: {channels: 1}\n")
    done = apply("colour")
    assert done.exit_code != 0 and "recipes: grey" in str(done.exception)


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_applies(workdir, path):
    shutil.copy(path, workdir / "recipes" / path.name)
    photos = workdir / "photos"
    photos.mkdir()
    done = apply(path.stem, "--data", str(photos))
    assert done.exit_code == 0, done.output
