"""The bench on a tiny model and tiny random data: every row present, every value a positive number.

No timing assertions: speeds depend on the machine and its load.
"""
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import train_params
from typer.testing import CliRunner

from emopipe.config import merge
from emopipe.data import store
from emopipe.errors import MissingFileError
from emopipe.modeling.checkpoint import input_spec
from emopipe.modeling.models import build
from emopipe.runtime import select_runtime
from emopipe_ci.harness import REPO
from emopipe_studies import bench

SIZE = 16
TINY = {
    "model": "cnn",
    "model_args": {"filters": [4, 8]},
    "input": {"size": SIZE, "channels": 3},
    "train": {"batch_size": 8, "precision": "fp32"},
    "eval": {"batch_size": 16},
}
MEASURED = ("model_only_img_s", "e2e_img_s", "epoch_s", "e2e_ratio", "inference_img_s", "peak_rss_mb")


@pytest.fixture
def tiny(tmp_path, toy_set) -> tuple[Path, Path]:
    """(params file, packed folder): the repo's params with a tiny model, and 24 random 16×16 images."""
    params = tmp_path / "params.yaml"
    tree = yaml.safe_load((REPO / "params.yaml").read_text())
    merge(tree, TINY)
    params.write_text(yaml.safe_dump(tree))
    packed = tmp_path / "packed"
    packed.mkdir()
    store.save(packed / "train", toy_set(n_per_class=6, size=SIZE))
    store.save(packed / "test", toy_set(n_per_class=4, size=SIZE, seed=1))
    return params, packed


def tiny_model() -> torch.nn.Module:
    return build("cnn", 4, 3, filters=[4, 8])


def test_measurement_functions_return_positive_rates(toy_set):
    runtime = select_runtime("fp32")
    t = train_params(epochs=3, batch_size=8, lr=1e-3)
    spec = input_spec(SIZE, 3)
    data = toy_set(n_per_class=4, size=SIZE)

    assert bench.model_only_rate(tiny_model(), runtime, t, 4, 3, SIZE, warmup=1, repeats=3) > 0
    rate, seconds, model = bench.end_to_end_epoch(tiny_model, data, spec, t, 0, runtime, warmup=1)
    assert rate > 0 and seconds > 0 and isinstance(model, torch.nn.Module)
    assert bench.inference_rate(model, data.images, spec, runtime, batch_size=8, warmup=1, repeats=2) > 0
    assert bench.peak_rss_mb() > 0


def test_verdicts_pass_miss_and_skipped():
    v = bench.verdicts({"e2e_ratio": 0.95, "peak_rss_mb": 5000.0, "repro_s": 120.0, "noop_repro_s": None})
    assert (v["e2e_ratio"], v["peak_rss_mb"], v["repro_s"], v["noop_repro_s"]) == ("pass", "miss", "pass", "skipped")


def test_cli_prints_every_row_and_writes_json(tiny, tmp_path):
    params, packed = tiny
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(bench.app, ["--params", str(params), "--data", str(packed), "--no-repro",
                                            "--repeats", "2", "--warmup", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for label, _ in bench.ROWS.values():
        assert label in result.output
    for fact in ("torch", "threads", "device / precision", "CPU", "load average"):
        assert fact in result.output
    written = json.loads(out.read_text())
    for key in MEASURED:
        value = written["results"][key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    assert all(written["results"][k] is None for k in bench.REPRO_KEYS)
    assert written["targets"]["repro_s"]["verdict"] == "skipped"
    assert written["targets"]["e2e_ratio"]["verdict"] in ("pass", "miss")


def test_missing_packed_data_names_the_fix(tiny, tmp_path):
    params, _ = tiny
    result = CliRunner().invoke(bench.app, ["--params", str(params), "--data", str(tmp_path / "nowhere"), "--no-repro"])
    assert isinstance(result.exception, MissingFileError)  # a UserError: one line, exit 2 under cli.run
    assert "dvc repro pack" in str(result.exception)
