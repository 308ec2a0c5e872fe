"""evaluate on an empty set: a one-line user error naming the file, not a crash later on."""
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from emopipe.data import store
from emopipe.data.store import TensorSet
from emopipe.engine.evaluate import EmptySetError, evaluate
from emopipe.errors import UserError
from emopipe.modeling.checkpoint import input_spec, save_checkpoint
from emopipe.modeling.models import build
from emopipe.runtime import select_runtime

REPO = Path(__file__).resolve().parents[1]
EMPTY = TensorSet(torch.zeros((0, 3, 32, 32), dtype=torch.uint8), torch.zeros(0, dtype=torch.long), ["a", "b"], [])


def test_evaluate_refuses_an_empty_set():
    with pytest.raises(EmptySetError, match="data/packed/test holds no images"):
        evaluate(build("small", 2), EMPTY, input_spec(32, 3), select_runtime("fp32"), source="data/packed/test")


def test_evaluate_stage_names_the_empty_file(tmp_path):
    save_checkpoint(tmp_path / "model.pt", build("small", 2), "small", {}, ["a", "b"], input_spec(32, 3))
    store.save(tmp_path / "test", EMPTY)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")  # every param must be set: the repository's
    spec = importlib.util.spec_from_file_location("evaluate_stage", REPO / "stages" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    done = CliRunner().invoke(module.app, ["--params", str(tmp_path / "params.yaml"), "--model", str(tmp_path / "model.pt"),
                                           "--data", str(tmp_path), "--metrics", str(tmp_path / "eval.json"),
                                           "--plots", str(tmp_path / "plots")])
    assert isinstance(done.exception, EmptySetError) and isinstance(done.exception, UserError)  # run(): `error: ...`, exit 2
    assert f"{tmp_path / 'test'} holds no images" in str(done.exception) and "\n" not in str(done.exception)
    assert not (tmp_path / "eval.json").exists()
