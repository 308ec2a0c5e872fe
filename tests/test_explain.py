"""Model introspection pictures: filters, feature maps, Grad-CAM (correctness on a hand-built model), and the stage."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

from emopipe.data import store
from emopipe.engine import explain
from emopipe.modeling.checkpoint import input_spec, normalize, save_checkpoint
from emopipe.modeling.models import MODELS, build

REPO = Path(__file__).resolve().parents[1]
SPEC = input_spec(32, 3)


def no_hooks_left(model: nn.Module) -> bool:
    hook_dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return all(not getattr(m, d) for m in model.modules() for d in hook_dicts)


def nonempty_png(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", sorted(set(MODELS) - {"hub"}))  # hub: tests/test_hub.py
def test_every_registered_model(name, toy_set, tmp_path):
    torch.manual_seed(0)
    model = build(name, 4, 3)  # left in train mode on purpose: the functions must switch to eval themselves
    data = toy_set(n_per_class=2)
    x = normalize(data.images[:1], SPEC)

    heat = explain.grad_cam(model, x, target_class=2)
    assert heat.shape == (32, 32) and heat.min() >= 0 and heat.max() <= 1
    assert np.array_equal(heat, explain.grad_cam(model, x, target_class=2))  # deterministic: dropout off
    assert model.training and no_hooks_left(model)
    assert all(p.grad is None for p in model.parameters())

    images, names = explain.first_of_each_class(data)
    outs = explain.block_outputs(model, normalize(images, SPEC))
    assert len(outs) == len(model.feature_blocks()) and outs[0].shape[0] == 4 and no_hooks_left(model)

    explain.first_layer_filters_png(model, tmp_path / "filters.png")
    explain.feature_maps_png(model, images, names, SPEC, tmp_path / "feature_maps.png")
    probs = np.eye(4)[np.arange(len(data)) % 4] * 0.7 + 0.075  # some right, some wrong
    explain.grad_cam_png(model, data, probs, SPEC, tmp_path / "gradcam.png", n=3)
    for png in ("filters.png", "feature_maps.png", "gradcam.png"):
        assert nonempty_png(tmp_path / png), png
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feature_maps.png", "filters.png", "gradcam.png"]  # no temp leftovers
    assert no_hooks_left(model)


def test_grey_input_filters_and_maps(tmp_path):
    model = build("small", 2, in_channels=1)
    images = torch.randint(0, 255, (2, 1, 32, 32), dtype=torch.uint8)
    explain.first_layer_filters_png(model, tmp_path / "f.png")
    explain.feature_maps_png(model, images, ["x", "y"], input_spec(32, 1), tmp_path / "m.png")
    assert nonempty_png(tmp_path / "f.png") and nonempty_png(tmp_path / "m.png")


class HalfMask(nn.Module):
    """Channel 0 keeps the left half of the image, channel 1 the right half."""

    def forward(self, x):
        half = x.shape[-1] // 2
        mask = torch.zeros_like(x)
        mask[:, 0, :, :half] = 1
        mask[:, 1, :, half:] = 1
        return x * mask


def left_right_model() -> nn.Module:
    """Hand-built: the class-0 logit is the mean brightness of the left half, class 1 of the right half."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 2, 1), HalfMask(), nn.ReLU(inplace=True), nn.MaxPool2d(2))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))

        def forward(self, x):
            return self.head(self.features(x))

        def feature_blocks(self):
            return [self.features[-1]]

    net = Net()
    with torch.no_grad():
        net.features[0].weight.fill_(1.0)
        net.features[0].bias.zero_()
        net.head[2].weight.copy_(torch.eye(2))
        net.head[2].bias.zero_()
    for p in net.parameters():
        p.requires_grad_(False)  # frozen: Grad-CAM must still get its gradients
    return net.eval()


def test_grad_cam_finds_the_half_the_class_depends_on():
    model = left_right_model()
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) + 0.5  # bright everywhere, both halves alike
    left, right = explain.grad_cam(model, x, 0), explain.grad_cam(model, x, 1)
    assert left[:, :16].sum() / left.sum() > 0.9
    assert right[:, 16:].sum() / right.sum() > 0.9
    assert left.max() == pytest.approx(1.0) and no_hooks_left(model)
    with torch.no_grad():  # a caller's no_grad does not stop it
        assert np.array_equal(explain.grad_cam(model, x[0], 0), left)


def test_pick_examples_is_deterministic_and_ordered_by_confidence():
    probs = np.array([[0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 0, 0, 1, 1])
    correct, wrong = explain.pick_examples(probs, labels, n=2)
    assert correct.tolist() == [1, 4] and wrong.tolist() == [2, 3]
    assert [a.tolist() for a in explain.pick_examples(np.zeros((0, 0)), np.zeros(0, dtype=int))] == [[], []]


@pytest.mark.parametrize("shift", [0, 1], ids=["all-correct", "all-wrong"])
def test_grad_cam_png_without_wrong_or_correct_predictions(toy_set, tmp_path, shift):
    data = toy_set(n_per_class=2)
    probs = np.eye(4)[(data.labels.numpy() + shift) % 4]
    explain.grad_cam_png(build("small", 4).eval(), data, probs, SPEC, tmp_path / "g.png")
    assert nonempty_png(tmp_path / "g.png")


def load_stage():
    """stages/explain.py as a module, so CliRunner runs it in-process (a subprocess spends ~10 s importing torch)."""
    spec = importlib.util.spec_from_file_location("explain_stage", REPO / "stages" / "explain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_end_to_end(toy_set, tmp_path):
    data = toy_set(n_per_class=3)
    save_checkpoint(tmp_path / "model.pt", build("small", 4), "small", {}, data.classes, SPEC)
    store.save(tmp_path / "test", data)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["eval"]["batch_size"] = 5
    params["train"]["precision"] = "fp32"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "plots" / "explain"
    out.mkdir(parents=True)
    (out / "stale.png").write_bytes(b"old")  # the folder is replaced as a whole
    app = load_stage().app

    def stage(*args):
        return CliRunner().invoke(app, ["--params", str(tmp_path / "params.yaml"), "--out", str(out), *args])

    done = stage("--model", str(tmp_path / "model.pt"), "--data", str(tmp_path / "test"), "--examples", "3")
    assert done.exit_code == 0, done.output
    assert "explain: wrote" in done.output
    assert sorted(p.name for p in out.iterdir()) == ["feature_maps.png", "filters.png", "gradcam.png"]
    assert all(nonempty_png(p) for p in out.iterdir())
    assert sorted(p.name for p in out.parent.iterdir()) == ["explain"]  # no temp folders left

    missing = stage("--model", str(tmp_path / "nope.pt"), "--data", str(tmp_path / "test"))
    assert isinstance(missing.exception, FileNotFoundError)  # run() turns it into one `error: ...` line, exit 2
    assert sorted(p.name for p in out.iterdir()) == ["feature_maps.png", "filters.png", "gradcam.png"]  # untouched
