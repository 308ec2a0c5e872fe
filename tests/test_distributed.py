"""The train stage under torchrun: 2 CPU processes (gloo) train the model one process trains."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from emopipe.data import store

pytestmark = pytest.mark.slow  # torchrun jobs of the real train stage: the full loop (make test-e2e)

REPO = Path(__file__).resolve().parents[1]


def run_train(out: Path, data: Path, processes: int, dropout: float = 0.3, **train_overrides) -> subprocess.CompletedProcess:
    """The train stage on `data` with `processes` ranks, outputs in `out`."""
    out.mkdir()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["input"]["size"] = 32
    params["model_args"] = {"dropout": dropout}
    params["train"].update({"epochs": 3, "batch_size": 16, "lr": 0.003, "processes": processes, "precision": "fp32"} | train_overrides)
    (out / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / "train.py"), "--params", str(out / "params.yaml"), "--data", str(data),
         "--model-out", str(out / "model.pt"), "--metrics", str(out / "train.json"), "--plots", str(out / "plots"), "--no-progress"],
        capture_output=True, text=True, timeout=600, env={"PATH": str(Path(sys.executable).parent), "OMP_NUM_THREADS": "1"},
    )


def train(tmp_path: Path, data: Path, processes: int, dropout: float = 0.3, **train_overrides) -> Path:
    out = tmp_path / f"run{processes}"
    done = run_train(out, data, processes, dropout, **train_overrides)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture
def packed(tmp_path, toy_set) -> Path:
    data = toy_set(n_per_class=20, size=32, seed=0)
    folder = tmp_path / "packed"
    folder.mkdir()
    store.save(folder / "train", data.subset(list(range(0, 80, 2)) + [0, 2, 4]))  # with oversampled copies
    store.save(folder / "val", data.subset(range(1, 80, 2)))
    return folder


def test_two_processes_match_one(tmp_path, packed):
    one, two = train(tmp_path, packed, 1, dropout=0.0), train(tmp_path, packed, 2, dropout=0.0)
    h1, h2 = pd.read_csv(one / "plots" / "history.csv"), pd.read_csv(two / "plots" / "history.csv")
    assert len(h1) == len(h2) == 3
    # Same global batches, same augmentation, gradients averaged over ranks: without dropout
    # (whose masks are drawn per rank) the same training up to float summation order.
    assert (h1["train_loss"] - h2["train_loss"]).abs().max() < 1e-3
    assert (h1["val_macro_f1"] - h2["val_macro_f1"]).abs().max() < 0.02
    assert json.loads((two / "train.json").read_text())["processes"] == 2
    assert sorted(p.name for p in two.iterdir()) == ["model.pt", "params.yaml", "plots", "train.json"]  # rank 0 wrote, once


def test_two_processes_with_weighted_sampler_and_clipping(tmp_path, packed):
    one = train(tmp_path, packed, 1, weighted_sampler=True, grad_clip=1.0, epochs=2)
    two = train(tmp_path, packed, 2, weighted_sampler=True, grad_clip=1.0, epochs=2)
    h1, h2 = pd.read_csv(one / "plots" / "history.csv"), pd.read_csv(two / "plots" / "history.csv")
    assert (h1["train_loss"] - h2["train_loss"]).abs().max() < 0.1  # dropout masks differ per rank


def test_a_failing_rank_fails_the_stage(tmp_path, packed):
    """The ranks, not the launcher, read the data: when they fail, torchrun's exit code must reach the shell."""
    shutil.rmtree(packed / "val")
    done = run_train(tmp_path / "broken", packed, processes=2)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "packed/val" in done.stderr and not (tmp_path / "broken" / "model.pt").exists()
