import dataclasses
import os
from pathlib import Path

import pytest
import torch
from e2e import reproduced_sandbox

import emopipe  # noqa: F401  (first: pins the CPU numerics before torch computes)
from emopipe.config import Params, TrainParams, load_params
from emopipe.data.store import TensorSet

REPO = Path(__file__).resolve().parents[1]
# The repository's params.yaml: the one source of defaults (the params dataclasses have none), so a
# test builds its params from it, e.g. `dataclasses.replace(REPO_PARAMS.split, use_source_splits=True)`.
REPO_PARAMS: Params = load_params(REPO / "params.yaml")


def train_params(**overrides) -> TrainParams:
    """params.yaml's train section with `overrides`, and no lr schedule unless one is asked for: the
    short runs of the tests keep a constant lr (params.yaml's onecycle is for the pipeline's full run)."""
    return dataclasses.replace(REPO_PARAMS.train, **{"scheduler": "none", **overrides})

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` (make test): one thread per worker, inherited by the stages the tests start,
    # so N workers share N cores instead of each spinning on all of them.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def make_toy_set(n_per_class: int = 12, size: int = 32, seed: int = 0) -> TensorSet:
    """A learnable toy set: class = which image quadrant is bright."""
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    half = size // 2
    for label, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        for _ in range(n_per_class):
            img = torch.randint(0, 60, (3, size, size), generator=g, dtype=torch.uint8)
            img[:, r * half : (r + 1) * half, c * half : (c + 1) * half] += 150
            images.append(img)
            labels.append(label)
    classes = ["a", "b", "c", "d"]
    return TensorSet(torch.stack(images), torch.tensor(labels), classes, [f"img{i}.png" for i in range(len(labels))])


@pytest.fixture
def toy_set():
    return make_toy_set


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A sandbox copy of this repo on the tiny config, reproduced once per module and committed."""
    return reproduced_sandbox(tmp_path_factory.mktemp("e2e") / "repo")
