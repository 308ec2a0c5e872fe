"""The real pipeline, end to end, on the tiny config: the metric gate against real regressions, and
bit-identical results under ISA caps, thread counts and DVC's temporary workspaces."""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from e2e import REPO, exp_run, load, restore

from emopipe.data import store
from emopipe_ci.gate import GATED, compare, markdown, read_metrics
from emopipe_ci.harness import run, tool_env

pytestmark = pytest.mark.slow


def single_run_reference(repo: Path) -> dict:
    """The committed gate reference, re-centred on this run (seed 0), with the gate's own tolerances:
    the runs compared here are paired (same seed, one change), so they differ by less than two
    independent draws would, and the regression must fail the very threshold the gate applies."""
    committed = json.loads((REPO / ".ci" / "gate-reference.json").read_text())
    baseline = read_metrics(repo / "metrics")
    metrics = {k: {"values": [baseline[k]], "tolerance": m["tolerance"]} for k, m in committed["metrics"].items()}
    return {"gate_seeds": 1, "metrics": metrics}


def test_gate_passes_the_same_run_and_fails_broken_optimisation(repo):
    reference = single_run_reference(repo)
    ok, rows = compare(reference, read_metrics(repo / "metrics"))
    assert ok and all(r["diff"] == 0 for r in rows)
    try:
        exp_run(repo, "broken-lr", "train.lr=1e-7", targets=("evaluate",))  # effectively untrained
        ok, rows = compare(reference, read_metrics(repo / "metrics"))
        assert not ok and "FAIL" in markdown(rows)
    finally:
        restore(repo)


def test_gate_watches_every_metric_well_above_chance(repo):
    """On the tiny config no gated metric sits at the floor, so each one can fall (chance macro-F1 1/6)."""
    found = read_metrics(repo / "metrics")
    assert set(found) == set(GATED)
    assert all(found[k] >= 2 / 6 for k in GATED if GATED[k] > 0), found
    assert load(repo, "adapt")["in_domain_after"]["macro_f1"] >= 2 / 6


def test_gate_fails_when_adaptation_is_broken(repo):
    """Broken adaptation: zero fine-tuning epochs leave the adapted model as it was."""
    reference = single_run_reference(repo)
    try:
        exp_run(repo, "broken-adapt", "adapt.epochs=0")
        ok, rows = compare(reference, read_metrics(repo / "metrics"))
        failed = {r["metric"] for r in rows if r["verdict"].startswith("FAIL")}
        assert not ok and failed == {"adapt.after.macro_f1"}, markdown(rows)
    finally:
        restore(repo)


def test_gate_fails_when_train_labels_are_permuted(repo, tmp_path):
    """Broken data: the real train and evaluate stages on a train split whose labels were shuffled."""
    packed = tmp_path / "packed"
    packed.mkdir()
    shutil.copytree(repo / "data/packed/val", packed / "val")
    train = store.load(repo / "data/packed/train")
    shuffled = train.labels[torch.randperm(len(train.labels), generator=torch.Generator().manual_seed(0))]
    store.save(packed / "train", store.TensorSet(train.images, shuffled, train.classes, train.paths))
    run(repo, sys.executable, "stages/train.py", "--data", str(packed), "--model-out", str(tmp_path / "m.pt"),
        "--metrics", str(tmp_path / "metrics/train.json"), "--plots", str(tmp_path / "plots"), "--no-progress")
    run(repo, sys.executable, "stages/evaluate.py", "--model", str(tmp_path / "m.pt"), "--metrics", str(tmp_path / "metrics/eval.json"),
        "--plots", str(tmp_path / "plots"))
    reference = single_run_reference(repo)
    reference["metrics"] = {k: v for k, v in reference["metrics"].items() if k.startswith("eval.")}
    ok, rows = compare(reference, read_metrics(tmp_path / "metrics"))
    assert not ok, markdown(rows)


def test_train_stage_gives_identical_weights_under_isa_caps_and_thread_counts(repo, tmp_path):
    """The tiny config's train stage, re-run as on an AVX2-only machine with one thread, writes the very
    checkpoint `dvc repro` wrote with this machine's best ISA and all its cores."""
    committed = torch.load(repo / "models/model.pt", weights_only=True)["state_dict"]
    caps = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"}
    again = train_watching_live_metrics(repo, tmp_path, tool_env() | caps)
    assert all(torch.equal(committed[k], again[k]) for k in committed), caps


def train_watching_live_metrics(repo: Path, out: Path, env: dict) -> dict:
    """Run the train stage into `out` and return the checkpoint's weights, asserting on the way that
    history.csv and train.json grow epoch by epoch while it runs (what `dvc exp show` and the VS Code
    extension read from a running experiment's workspace)."""
    history, metrics = out / "plots" / "history.csv", out / "train.json"
    proc = subprocess.Popen([sys.executable, "stages/train.py", "--model-out", str(out / "model.pt"), "--metrics", str(metrics),
                             "--plots", str(out / "plots"), "--no-progress"], cwd=repo, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = set()
    while proc.poll() is None:
        if history.exists() and metrics.exists():
            rows = len(history.read_text().splitlines()) - 1  # header
            live = json.loads(metrics.read_text())
            if proc.poll() is None and rows == live["epochs_run"]:  # a pair written between two epochs
                seen.add(rows)
        time.sleep(0.02)
    assert proc.returncode == 0, proc.stderr.read()
    final = json.loads(metrics.read_text())
    assert len(seen) >= 2 and min(seen) < final["epochs_run"], f"rows seen while running: {sorted(seen)}"
    assert final["best_epoch"] <= final["epochs_run"] and "numerics" in final  # the final file keeps its meaning
    return torch.load(out / "model.pt", weights_only=True)["state_dict"]


def test_a_temp_workspace_experiment_with_one_thread_reproduces_repro(repo):
    """`dvc exp run --temp` runs where queue workers run (a temporary copy); with one thread, as
    `make ablation` gives each worker, it must give the metrics `dvc repro` gave."""
    before = {n: load(repo, n) for n in ("eval", "shift", "adapt")}
    env = tool_env() | {"OMP_NUM_THREADS": "1"}
    subprocess.run(["dvc", "exp", "run", "--temp", "--force", "--name", "one-thread"], cwd=repo, env=env, check=True, capture_output=True)
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
    found = [e for row in shown for e in (row.get("experiments") or []) if e.get("name") == "one-thread"]
    data = found[0]["revs"][0]["data"]["metrics"]
    assert {n: data[f"metrics/{n}.json"]["data"] for n in before} == numbers(before)  # DVC collects no lists


def numbers(tree):
    """`tree` without its list values (e.g. `classes`), as DVC collects a metrics file."""
    return {k: numbers(v) if isinstance(v, dict) else v for k, v in tree.items() if not isinstance(v, list)}
