from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO_PARAMS, train_params
from typer.testing import CliRunner

from emopipe.data import store
from emopipe.data.augment import POLICIES, augment
from emopipe.engine.crossval import cross_validate
from emopipe.engine.evaluate import evaluate
from emopipe.engine.fit import Unfreezer, epoch_order, fit
from emopipe.engine.metrics import classification_metrics, macro_f1
from emopipe.errors import ParamError
from emopipe.modeling.checkpoint import input_spec
from emopipe.modeling.losses import LOSSES, class_weights, loss_weights
from emopipe.modeling.models import build
from emopipe.runtime import seed_everything, select_runtime

REPO = Path(__file__).resolve().parents[1]

def run(toy_set, seed=0, **overrides):
    seed_everything(seed)
    data = toy_set(n_per_class=16, size=32, seed=0)
    train, val = data.subset(torch.arange(0, 64, 2)), data.subset(torch.arange(1, 64, 2))
    t = train_params(**{"epochs": 8, "batch_size": 16, "lr": 3e-3, **overrides})
    spec = input_spec(32, 3)
    result = fit(build("small", 4), train, val, spec, t, seed, select_runtime("fp32"), progress=False)
    return result, evaluate(result.model, val, spec, select_runtime("fp32"))[0]


def test_fit_learns_and_is_deterministic(toy_set):
    first, metrics = run(toy_set)
    second, _ = run(toy_set)
    assert first.history == second.history
    assert metrics["macro_f1"] > 0.6  # chance is 0.25
    assert first.best_epoch == max(range(1, 9), key=lambda e: (first.history[e - 1]["val_macro_f1"], -e))
    assert set(first.history[0]) >= {"train_loss", "val_loss", "train_macro_f1", "val_macro_f1", "val_accuracy"}


def test_fit_with_sampler_and_targeted_augment_runs(toy_set):
    result, _ = run(toy_set, epochs=2, weighted_sampler=True, augment="targeted", class_weights=False)
    assert len(result.history) == 2


def test_class_weights_are_balanced():
    w = class_weights(torch.tensor([0, 0, 0, 1]), 3)
    assert torch.allclose(w, torch.tensor([4 / 9, 4 / 3, 0.0]))


def test_weighted_order_balances_classes():
    labels = torch.tensor([0] * 90 + [1] * 10)
    order = epoch_order(labels, weighted=True, generator=torch.Generator().manual_seed(0))
    share = (labels[order] == 1).float().mean()
    assert 0.35 < share < 0.65


def test_augment_keeps_shape_range_and_varies_per_sample():
    x = torch.rand(8, 3, 32, 32)
    x[:] = x[0]  # identical inputs
    out = augment(x, POLICIES["targeted"], torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.allclose(out[0], out[1])
    assert augment(x, POLICIES["none"], torch.Generator()) is x


def test_metrics_macro_and_per_class():
    m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["a", "b", "c"])
    assert m["accuracy"] == 0.75
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}
    assert m["per_class"]["c"]["support"] == 0
    assert m["macro_recall"] == 0.75  # over the classes present: (0.5 + 1) / 2
    assert macro_f1(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 3) == m["macro_f1"]  # validation's, the same definition


@pytest.mark.parametrize("scheduler", ["onecycle", "plateau", "cosine"])
def test_schedulers_change_the_learning_rate(toy_set, scheduler):
    result, _ = run(toy_set, scheduler=scheduler)
    lrs = [row["lr"] for row in result.history]  # lr after each epoch's last step
    if scheduler == "onecycle":  # warm-up, then anneal
        peak = lrs.index(max(lrs))
        assert 0 < peak < len(lrs) - 1 and lrs[-1] < lrs[0]
    else:
        assert lrs == sorted(lrs, reverse=True)
        assert lrs[-1] < lrs[0] or scheduler == "plateau"


def test_focal_loss_down_weights_easy_samples():
    logits = torch.tensor([[4.0, 0.0], [0.1, 0.0]])  # an easy and a hard sample of class 0
    y = torch.tensor([0, 0])
    ce = LOSSES["ce"].per_sample(logits, y, None, train_params(label_smoothing=0.0))
    focal = LOSSES["focal"].per_sample(logits, y, None, train_params(label_smoothing=0.0, focal_gamma=2.0))
    assert torch.all(focal < ce)
    assert focal[0] / ce[0] < 0.01 < 0.2 < focal[1] / ce[1]


def test_focal_training_learns(toy_set):
    _, metrics = run(toy_set, epochs=16, loss="focal", focal_alpha={"b": 2.0})  # focal learns slower than CE here
    assert metrics["macro_f1"] > 0.5  # chance is 0.25


def test_early_stopping_stops_after_patience(toy_set):
    result, _ = run(toy_set, epochs=40, early_stopping=2)
    assert len(result.history) < 40
    assert len(result.history) == result.best_epoch + 2


def test_gradient_clipping_bounds_the_update(toy_set):
    free, _ = run(toy_set, epochs=1, lr=1.0, class_weights=False)
    clipped, _ = run(toy_set, epochs=1, lr=1.0, class_weights=False, grad_clip=0.01)
    assert free.history != clipped.history


def test_progressive_unfreezing_trains_the_head_first(toy_set):
    model = build("small", 4)
    unfreezer = Unfreezer(model, freeze_epochs=2, every=2)
    assert [unfreezer.trainable(e) for e in range(1, 8)] == [1, 1, 2, 2, 3, 3, 4]
    unfreezer.apply(1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head") for n in trainable)
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    seed_everything(0)
    data = toy_set(n_per_class=8, size=32)
    t = train_params(epochs=1, batch_size=16, lr=3e-3, transfer=replace(REPO_PARAMS.train.transfer, freeze_epochs=1))
    fit(model, data, None, input_spec(32, 3), t, 0, select_runtime("fp32"), progress=False)
    assert all(torch.equal(frozen_before[n], p.cpu()) for n, p in model.named_parameters() if n in frozen_before)


def test_loss_weights_order_focal_alpha_by_class():
    labels = torch.tensor([0, 0, 1, 2])
    alpha_only = loss_weights(labels, ["a", "b", "c"], train_params(loss="focal", focal_alpha={"c": 3.0}, class_weights=False))
    assert torch.equal(alpha_only, torch.tensor([1.0, 1.0, 3.0]))
    both = loss_weights(labels, ["a", "b", "c"], train_params(loss="focal", focal_alpha={"c": 3.0}, class_weights=True))
    assert torch.allclose(both, class_weights(labels, 3) * torch.tensor([1.0, 1.0, 3.0]))
    assert loss_weights(labels, ["a", "b", "c"], train_params(focal_alpha={}, class_weights=False)) is None
    with pytest.raises(ParamError, match="train.focal_alpha names class 'x'"):
        loss_weights(torch.tensor([0]), ["a"], train_params(focal_alpha={"x": 2.0}))


def test_an_unknown_focal_alpha_class_stops_fit_before_training(toy_set):
    model = build("small", 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ParamError, match=r"train.focal_alpha names class 'x', not in the data \(classes: a, b, c, d\)"):
        fit(model, toy_set(n_per_class=4, size=32), None, input_spec(32, 3), train_params(epochs=1, focal_alpha={"x": 2.0}), 0,
            select_runtime("fp32"), progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_cross_validation_reports_mean_and_std(toy_set):
    seed_everything(0)
    data = toy_set(n_per_class=12, size=32)
    groups = np.arange(len(data)) // 2  # pairs of images must stay in the same fold
    t = train_params(epochs=3, batch_size=16, lr=3e-3)
    o = replace(REPO_PARAMS.oversample, method="balance", targets={})
    cv = cross_validate(lambda: build("small", 4), data, groups, 3, o, 0, input_spec(32, 3), t, 0, select_runtime("fp32"))
    assert cv["folds"] == 3 and len(cv["per_fold"]) == 3
    f1s = [f["val_macro_f1"] for f in cv["per_fold"].values()]
    assert cv["val_macro_f1"]["mean"] == pytest.approx(np.mean(f1s), abs=1e-4)
    assert cv["val_macro_f1"]["std"] == pytest.approx(np.std(f1s, ddof=1), abs=1e-4)


def test_per_image_normalization_removes_brightness_and_contrast():
    from emopipe.modeling.checkpoint import normalize

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    spec = input_spec(16, 3, normalization="per_image")
    z = normalize(x, spec)
    assert torch.allclose(z.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-4)
    assert torch.allclose(normalize(0.5 * x + 0.2, spec), z, atol=1e-4)  # darker, flatter: same input to the model
    assert not torch.allclose(normalize(0.5 * x + 0.2, input_spec(16, 3)), normalize(x, input_spec(16, 3)))


def test_shift_policy_blurs_and_adds_noise_deterministically():
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    a = augment(x, POLICIES["shift"], torch.Generator().manual_seed(0))
    b = augment(x, POLICIES["shift"], torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert not torch.equal(a, augment(x, POLICIES["targeted"], torch.Generator().manual_seed(0)))


def test_fp32_and_bf16_train_without_loss_scaling():
    assert not select_runtime("fp32").grad_scaler().is_enabled()
    assert not select_runtime("bf16", "cpu").grad_scaler().is_enabled()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training needs a CUDA GPU")
def test_fp16_training_scales_the_loss(toy_set, monkeypatch):
    from emopipe.runtime import Runtime

    scalers = []
    make = Runtime.grad_scaler
    monkeypatch.setattr(Runtime, "grad_scaler", lambda self: scalers.append(make(self)) or scalers[-1])
    runtime = select_runtime("fp16", "cuda")
    seed_everything(0)
    model = build("small", 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    t = train_params(epochs=2, batch_size=16, lr=3e-3, grad_clip=1.0)
    result = fit(model, toy_set(n_per_class=8, size=32), None, input_spec(32, 3), t, 0, runtime, progress=False)
    (scaler,) = scalers
    state = scaler.state_dict()
    assert scaler.is_enabled() and (state["_growth_tracker"] > 0 or state["scale"] < 2.0**16)  # it stepped or backed off
    after = result.model.state_dict()
    assert all(torch.isfinite(v.float()).all() for v in after.values())
    assert any(not torch.equal(before[k], after[k].cpu()) for k in before if before[k].is_floating_point())
    assert all(np.isfinite(row["train_loss"]) for row in result.history)


def load_train_stage():
    """stages/train.py as a module, run in-process (a subprocess spends ~10 s importing torch)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_stage", REPO / "stages" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cross_validation_does_not_change_the_final_model(toy_set, tmp_path):
    data = toy_set(n_per_class=8, size=32)
    packed, split = tmp_path / "packed", tmp_path / "split"
    packed.mkdir()
    split.mkdir()
    store.save(packed / "train", data.subset(range(0, 32, 2)))
    store.save(packed / "val", data.subset(range(1, 32, 2)))
    for name, rows in (("train", range(0, 32, 2)), ("val", range(1, 32, 2))):
        pd.DataFrame({"image": [data.paths[i] for i in rows], "group": list(rows)}).to_csv(split / f"{name}.csv", index=False)
    app = load_train_stage().app
    weights = {}
    for folds in (1, 2):
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["model_args"] = {"dropout": 0.3}
        params["input"]["size"] = 32
        params["train"].update({"epochs": 1, "batch_size": 8, "cv_folds": folds, "precision": "fp32"})
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        out = tmp_path / f"folds{folds}"
        done = CliRunner().invoke(app, ["--params", str(tmp_path / "params.yaml"), "--data", str(packed), "--split", str(split),
                                        "--model-out", str(out / "model.pt"), "--metrics", str(out / "train.json"),
                                        "--plots", str(out / "plots"), "--no-progress"])
        assert done.exit_code == 0, done.output
        weights[folds] = torch.load(out / "model.pt", weights_only=True)["state_dict"]
    assert "2-fold CV" in done.output
    assert weights[1].keys() == weights[2].keys()
    assert all(torch.equal(weights[1][k], weights[2][k]) for k in weights[1])
