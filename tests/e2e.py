"""The end-to-end tests' sandbox: a copy of this repo on the tiny config, reproduced once per test
module (`repo` in conftest.py), and the helpers they share. Two modules, so `pytest -n 2` runs them
side by side."""
import json
from pathlib import Path

from emopipe.machine import available_cores
from emopipe_ci.harness import load_overrides, make_sandbox, run

TINY = Path(__file__).with_name("tiny_params.yaml")
REPO = Path(__file__).resolve().parents[1]


def reproduced_sandbox(root: Path) -> Path:
    """`dvc repro` with all the machine's cores (as a user runs it, whatever threads the test worker
    has), then committed as the baseline."""
    make_sandbox(root, load_overrides(TINY))
    run(root, "dvc", "repro", env={"OMP_NUM_THREADS": str(available_cores())})
    run(root, "git", "add", "-A")
    run(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "baseline")
    return root


def exp_run(repo: Path, name: str, *overrides: str, targets: tuple[str, ...] = ()) -> None:
    """`dvc exp run --name NAME -S ... [TARGETS]` (every stage when no target), keeping the workspace's
    results for the caller to read."""
    run(repo, "dvc", "exp", "run", "--name", name, *[arg for o in overrides for arg in ("-S", o)], *targets)


def restore(repo: Path) -> None:
    """Back to the committed baseline (params and outputs), for the tests that follow."""
    run(repo, "git", "checkout", "-q", "--", ".")
    run(repo, "dvc", "checkout", "-q")


def load(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())
