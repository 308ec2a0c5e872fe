"""The real pipeline, end to end, on the tiny config: repro, no-op repro, an ablation, the gate."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from emopipe.gate import compare, read_metrics
from emopipe.sandbox import make_sandbox, sh

TINY = Path(__file__).with_name("tiny_params.yaml")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A sandbox copy of this repo on the tiny config, reproduced once and committed."""
    root = make_sandbox(tmp_path_factory.mktemp("e2e") / "repo", TINY)
    sh(root, "dvc", "repro")
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "baseline")
    return root


def load(repo: Path, name: str) -> dict:
    return json.loads((repo / "metrics" / f"{name}.json").read_text())


def test_repro_writes_every_metric_and_plot(repo):
    data = load(repo, "data")
    assert sum(data["counts"]["train"].values()) + sum(data["counts"]["val"].values()) + sum(data["counts"]["test"].values()) == data["images"]["main"]
    ev = load(repo, "eval")
    assert {"accuracy", "macro_precision", "macro_recall", "macro_f1"} <= set(ev)
    assert set(ev["per_class"]) == {"anger", "disgust", "fear", "happy", "pain", "sad"}
    assert set(load(repo, "shift")) == {"plain", "tta"}
    adapt = load(repo, "adapt")
    assert adapt["shots_per_class"] == 3 and {"before", "after"} <= set(adapt)
    for plot in ("train/history.csv", "train/curves.png", "eval/predictions.csv", "eval/confusion.png"):
        assert (repo / "plots" / plot).stat().st_size > 0
    assert (repo / "models" / "model.pt").exists() and (repo / "models" / "adapted.pt").exists()


def test_second_repro_does_nothing(repo):
    assert "up to date" in sh(repo, "dvc", "status").stdout
    out = sh(repo, "dvc", "repro").stdout
    assert "Running stage" not in out


def test_a_param_change_reruns_only_its_dependants(repo):
    params = (repo / "params.yaml").read_text()
    try:
        (repo / "params.yaml").write_text(params.replace("batch_size: 128", "batch_size: 64"))
        changed = set(json.loads(sh(repo, "dvc", "status", "--json").stdout))
        assert changed == {"evaluate", "shift_eval"}
    finally:
        (repo / "params.yaml").write_text(params)


def test_plots_render(repo):
    sh(repo, "dvc", "plots", "show", "-o", "rendered")
    assert (repo / "rendered" / "index.html").exists()


def test_ablation_is_compared_with_the_baseline(repo):
    sh(repo, "dvc", "exp", "run", "-S", "model_args.filters=[48,96,192,320]", "--name", "wider")
    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "--json").stdout)
    assert "metrics/train.json" in diff and "parameters" in diff["metrics/train.json"]
    assert diff["metrics/train.json"]["parameters"]["new"] > diff["metrics/train.json"]["parameters"]["old"]
    shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    assert "wider" in json.dumps(shown)
    # back to the committed baseline for the tests that follow
    sh(repo, "git", "checkout", "-q", "--", ".")
    sh(repo, "dvc", "checkout", "-q")


def test_gate_passes_an_equal_run_and_fails_a_real_regression(repo):
    baseline = read_metrics(repo / "metrics")
    ok, _ = compare(baseline, baseline, tolerance=0.0)
    assert ok
    sh(repo, "dvc", "exp", "run", "-S", "train.lr=1e-7", "--name", "broken")  # effectively untrained
    ok, table = compare(baseline, read_metrics(repo / "metrics"), tolerance=0.03)
    assert not ok and "FAIL" in table
    gate = subprocess.run([sys.executable, "-m", "emopipe.gate", "check", "--reference", "/dev/stdin", "--metrics", str(repo / "metrics")],
                          input=json.dumps(baseline), capture_output=True, text=True)
    assert gate.returncode == 1 and "metric gate: FAILED" in gate.stdout
