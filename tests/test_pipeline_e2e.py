"""The real pipeline, end to end, on the tiny config: repro, no-op repro, plots, ablations, models,
training options and domains from `dvc exp run`. (The gate and reproducibility: test_gate_e2e.py.)"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from e2e import exp_run, load, restore
from hub_cache import REPO_ID, make_cache

from emopipe.data import synthetic
from emopipe.engine.evaluate import NO_SHIFT
from emopipe_ci.harness import run, tool_env

pytestmark = pytest.mark.slow


def test_repro_writes_every_metric_and_plot(repo):
    data = load(repo, "data")
    assert sum(data["counts"]["train"].values()) + sum(data["counts"]["val"].values()) + sum(data["counts"]["test"].values()) == data["images"]["main"]
    ev = load(repo, "eval")
    assert {"accuracy", "macro_precision", "macro_recall", "macro_f1"} <= set(ev)
    assert set(ev["per_class"]) == {"anger", "disgust", "fear", "happy", "pain", "sad"}
    assert set(load(repo, "shift")) == {"classes", "plain", "tta"}
    adapt = load(repo, "adapt")
    assert adapt["shots_per_class"] == 5 and {"before", "after"} <= set(adapt)
    for plot in ("train/history.csv", "train/curves.png", "eval/predictions.csv", "eval/confusion.png"):
        assert (repo / "plots" / plot).stat().st_size > 0
    assert (repo / "models" / "model.pt").exists() and (repo / "models" / "adapted.pt").exists()


def test_second_repro_does_nothing(repo):
    assert "up to date" in run(repo, "dvc", "status").stdout
    out = run(repo, "dvc", "repro").stdout
    assert "Running stage" not in out


def test_a_param_change_reruns_only_its_dependants(repo):
    params = (repo / "params.yaml").read_text()
    try:
        (repo / "params.yaml").write_text(params.replace("batch_size: 128", "batch_size: 64"))
        changed = set(json.loads(run(repo, "dvc", "status", "--json").stdout))
        assert changed == {"evaluate", "explain", "shift_eval", "adapt"}
    finally:
        (repo / "params.yaml").write_text(params)


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found and os.environ.get("CI"):
        pytest.fail("CI needs Chromium for the offline-plots test: `make browser` installs Debian's")
    return found


def rendered_charts(page: Path) -> int:
    """Vega charts drawn when headless Chromium opens `page` with every host unreachable (DOM after scripts ran)."""
    browser = chromium() or pytest.skip("no Chromium here (`make browser` installs Debian's)")
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
                          "--virtual-time-budget=20000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return dom.count('class="marks"') if 'aria-roledescription="line mark"' in dom else 0


def test_plots_render_offline_in_a_browser(repo, tmp_path):
    """`dvc plots show` draws every Vega chart with the network blocked (scripts inlined by the template
    in .dvc/config); DVC's own page, whose scripts come from a CDN, draws none there."""
    run(repo, "dvc", "plots", "show", "-o", str(tmp_path / "offline"))
    page = tmp_path / "offline" / "index.html"
    expected = page.read_text().count("vegaEmbed(")
    assert expected == 4 and "cdn.jsdelivr" not in page.read_text()
    assert rendered_charts(page) == expected
    from dvc_render.html import PAGE_HTML

    (tmp_path / "cdn.html").write_text(PAGE_HTML)
    run(repo, "dvc", "plots", "show", "-o", str(tmp_path / "cdn"), "--html-template", str(tmp_path / "cdn.html"))
    assert rendered_charts(tmp_path / "cdn" / "index.html") == 0


def test_ablation_is_compared_with_the_baseline(repo):
    try:
        # `+`: a key the params do not have yet; two epochs are enough to compare the runs
        exp_run(repo, "wider", "+model_args.filters=[48,96,192,320]", "train.epochs=2", targets=("train",))
        diff = json.loads(run(repo, "dvc", "metrics", "diff", "--json").stdout)
        assert "metrics/train.json" in diff and "parameters" in diff["metrics/train.json"]
        assert diff["metrics/train.json"]["parameters"]["new"] > diff["metrics/train.json"]["parameters"]["old"]
        shown = json.loads(run(repo, "dvc", "exp", "show", "--json").stdout)
        assert "wider" in json.dumps(shown)
    finally:
        restore(repo)


def test_models_and_training_options_run_from_exp_run(repo):
    """resnet18 on greyscale input with focal loss, cosine schedule, early stopping, clipping,
    progressive unfreezing and 2-fold cross-validation, all set from the command line."""
    try:
        exp_run(repo, "options", "model=resnet18", "~model_args.batch_norm", "input.channels=1", "train.loss=focal",
                "train.scheduler=cosine", "train.early_stopping=2", "train.grad_clip=1.0", "train.cv_folds=2", "train.epochs=2",
                "train.transfer.freeze_epochs=1", "train.transfer.unfreeze_every=1", targets=("explain",))
        train = load(repo, "train")
        assert train["cv"]["folds"] == 2 and 0 <= train["cv"]["val_macro_f1"]["mean"] <= 1
        assert train["parameters"] > 11_000_000 and train["epochs_run"] <= 2
        assert (repo / "plots" / "explain" / "gradcam.png").stat().st_size > 0
    finally:
        restore(repo)


def test_vgg_trains_under_torchrun_from_exp_run(repo):
    try:
        exp_run(repo, "ddp", "model=vgg", "~model_args.batch_norm", "train.processes=2", "train.scheduler=onecycle", "train.epochs=2",
                targets=("evaluate",))
        train = load(repo, "train")
        assert train["processes"] == 2 and train["parameters"] > 4_000_000
        assert {"accuracy", "macro_f1"} <= set(load(repo, "eval"))
    finally:
        restore(repo)


def test_a_single_domain_run_skips_shift_evaluation_and_adaptation(repo):
    before = load(repo, "eval")
    try:
        exp_run(repo, "single-domain", "shift.source=none")
        assert load(repo, "shift") == load(repo, "adapt") == NO_SHIFT
        assert load(repo, "data")["images"]["shift"] == 0
        assert load(repo, "eval") == before and (repo / "models" / "adapted.pt").exists()
    finally:
        restore(repo)


def test_a_lab_style_shift_folder_with_renamed_classes_and_a_subset(repo, tmp_path):
    """The shift domain as lab sets come: greyscale 48 px, `sadness` for `sad`, a class to leave out
    (pain), and only four of the six main classes; the head alone adapts to it."""
    lab = tmp_path / "lab"
    synthetic.generate(lab, {c: 14 for c in ("sad", "happy", "anger", "fear", "pain")}, domain="shift", size=64, progress=False)
    (lab / "sad").rename(lab / "sadness")
    try:
        exp_run(repo, "lab", "shift.source=folder", f"shift.folder={lab}", "++shift.class_map={sadness:sad}",
                "shift.classes=[sad,happy,anger,fear]", "shift.render.greyscale=true", "shift.render.size=48", "adapt.method=head")
        shift, adapt, data = load(repo, "shift"), load(repo, "adapt"), load(repo, "data")
        assert shift["classes"] == adapt["classes"] == data["shift_classes"] == ["anger", "fear", "happy", "sad"]
        assert shift["plain"]["per_class"]["pain"]["support"] == 0
        assert data["rejected"]["shift"]["class-not-selected"] == 14
        assert adapt["method"] == "head" and adapt["shots_used"] == {c: 5 for c in ("anger", "fear", "happy", "sad")}
    finally:
        restore(repo)


def test_a_hub_checkpoint_zero_shot_and_fine_tuned_through_the_stages(repo, tmp_path):
    """model: hub from a temporary Hugging Face cache (no network): train.epochs 0 evaluates it as it
    comes (classes it never learnt are never predicted), one epoch fine-tunes it."""
    pytest.importorskip("transformers", reason="the optional extra: pip install -e '.[hub]'")
    env = tool_env(repo) | {"HF_HUB_CACHE": str(make_cache(tmp_path / "hf")), "HF_HUB_OFFLINE": "1"}
    results = {}
    for epochs, zero_shot in ((0, True), (1, False)):
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params |= {"model": "hub", "model_args": {"repo_id": REPO_ID, "zero_shot": zero_shot}}
        params["train"]["epochs"] = epochs
        out = tmp_path / f"epochs{epochs}"
        (out / "metrics").mkdir(parents=True)
        (out / "params.yaml").write_text(yaml.safe_dump(params))
        given = ["--params", str(out / "params.yaml"), "--plots", str(out / "plots")]
        for script, args in (("train", ["--model-out", str(out / "m.pt"), "--metrics", str(out / "metrics/train.json"), "--no-progress"]),
                             ("evaluate", ["--model", str(out / "m.pt"), "--metrics", str(out / "metrics/eval.json")])):
            done = subprocess.run([sys.executable, f"stages/{script}.py", *given, *args], cwd=repo, env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
        results[epochs] = {n: json.loads((out / "metrics" / f"{n}.json").read_text()) for n in ("train", "eval")}
    zero, tuned = results[0], results[1]
    assert zero["train"]["epochs_run"] == 0 and zero["train"]["best_epoch"] == 0
    assert all(zero["eval"]["per_class"][c]["recall"] == 0 for c in ("disgust", "fear", "pain"))  # not among the hub labels
    assert tuned["train"]["epochs_run"] == 1 and 0 <= tuned["eval"]["macro_f1"] <= 1
