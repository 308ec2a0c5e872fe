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


def exp_run(repo: Path, name: str, *overrides: str) -> None:
    """`dvc exp run --name NAME -S ...`, keeping the workspace's results for the caller to read."""
    sh(repo, "dvc", "exp", "run", "--name", name, *[arg for o in overrides for arg in ("-S", o)])


def restore(repo: Path) -> None:
    """Back to the committed baseline (params and outputs), for the tests that follow."""
    sh(repo, "git", "checkout", "-q", "--", ".")
    sh(repo, "dvc", "checkout", "-q")


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
        assert changed == {"evaluate", "explain", "shift_eval"}
    finally:
        (repo / "params.yaml").write_text(params)


def test_plots_render(repo):
    sh(repo, "dvc", "plots", "show", "-o", "rendered")
    assert (repo / "rendered" / "index.html").exists()


def test_ablation_is_compared_with_the_baseline(repo):
    try:
        exp_run(repo, "wider", "+model_args.filters=[48,96,192,320]")  # `+`: a key the params do not have yet
        diff = json.loads(sh(repo, "dvc", "metrics", "diff", "--json").stdout)
        assert "metrics/train.json" in diff and "parameters" in diff["metrics/train.json"]
        assert diff["metrics/train.json"]["parameters"]["new"] > diff["metrics/train.json"]["parameters"]["old"]
        shown = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
        assert "wider" in json.dumps(shown)
    finally:
        restore(repo)


def test_models_and_training_options_run_from_exp_run(repo):
    """resnet18 on greyscale input with focal loss, cosine schedule, early stopping, clipping,
    progressive unfreezing and 2-fold cross-validation, all set from the command line."""
    try:
        exp_run(repo, "options", "model=resnet18", "~model_args.batch_norm", "input.channels=1", "train.loss=focal",
                "train.scheduler=cosine", "train.early_stopping=2", "train.grad_clip=1.0", "train.folds=2", "train.epochs=4",
                "train.transfer.freeze_epochs=1", "train.transfer.unfreeze_every=1")
        train = load(repo, "train")
        assert train["cv"]["folds"] == 2 and 0 <= train["cv"]["val_macro_f1"]["mean"] <= 1
        assert train["parameters"] > 11_000_000 and train["epochs_run"] <= 4
        assert (repo / "plots" / "explain" / "gradcam.png").stat().st_size > 0
    finally:
        restore(repo)


def test_vgg_trains_under_torchrun_from_exp_run(repo):
    try:
        exp_run(repo, "ddp", "model=vgg", "~model_args.batch_norm", "train.processes=2", "train.scheduler=onecycle", "train.epochs=2")
        train = load(repo, "train")
        assert train["processes"] == 2 and train["parameters"] > 4_000_000
        assert {"accuracy", "macro_f1"} <= set(load(repo, "eval"))
    finally:
        restore(repo)


def test_gate_passes_an_equal_run_and_fails_a_real_regression(repo):
    baseline = read_metrics(repo / "metrics")
    ok, _ = compare(baseline, baseline, tolerance=0.0)
    assert ok
    exp_run(repo, "broken", "train.lr=1e-7")  # effectively untrained
    ok, table = compare(baseline, read_metrics(repo / "metrics"), tolerance=0.03)
    assert not ok and "FAIL" in table
    gate = subprocess.run([sys.executable, "-m", "emopipe.gate", "check", "--reference", "/dev/stdin", "--metrics", str(repo / "metrics")],
                          input=json.dumps(baseline), capture_output=True, text=True)
    assert gate.returncode == 1 and "metric gate: FAILED" in gate.stdout
