import torch

from emopipe.checkpoint import input_spec
from emopipe.data.augment import POLICIES, augment
from emopipe.evaluate import classification_metrics, evaluate
from emopipe.models import build
from emopipe.runtime import seed_everything, select_runtime
from emopipe.train import FitConfig, class_weights, epoch_order, fit


def run(toy_set, seed=0, **overrides):
    seed_everything(seed)
    data = toy_set(n_per_class=16, size=32, seed=0)
    train, val = data.subset(torch.arange(0, 64, 2)), data.subset(torch.arange(1, 64, 2))
    cfg = FitConfig(**{"epochs": 8, "batch_size": 16, "lr": 3e-3, "seed": seed, **overrides})
    spec = input_spec(32, 3)
    result = fit(build("small", 4), train, val, spec, cfg, select_runtime("fp32"), progress=False)
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
