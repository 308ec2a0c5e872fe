import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from emopipe.config import ParamError
from emopipe.engine import explain
from emopipe.engine.fit import Unfreezer
from emopipe.modeling.checkpoint import input_spec, load_checkpoint, save_checkpoint
from emopipe.modeling.models import MODELS, build, count_parameters, described, factory
from emopipe.modeling.pretrained import PretrainedWeightsError

CACHED = {"hub"}  # built from a checkpoint in the local Hugging Face cache: tests/test_hub.py makes one
VITS = {"vit_small", "vit_b_16"}


def test_small_matches_the_seed_smallcnn():
    assert count_parameters(build("small", 6)) == 389_958


def test_wider_is_about_764k():
    assert count_parameters(build("wider", 6)) == pytest.approx(764_000, rel=0.01)


@pytest.mark.parametrize("name", sorted(set(MODELS) - CACHED))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model_runs_at_any_size(name, channels):
    model = build(name, 5, channels).eval()
    for size in (32, 96):
        assert model(torch.zeros(2, channels, size, size)).shape == (2, 5)


def test_new_models_parameter_counts():
    assert count_parameters(build("vgg", 6)) == 4_820_166
    assert count_parameters(build("resnet18", 6)) == 11_179_590
    assert count_parameters(build("resnet50", 6)) == 23_520_326
    assert count_parameters(build("resnet18", 6, 1)) == 11_179_590 - 2 * 64 * 7 * 7


def test_cnn_defaults_are_small_and_options_shape_it():
    assert count_parameters(build("cnn", 6)) == count_parameters(build("small", 6))
    model = build(
        "cnn", 6, 1, filters=[8, 16], convs_per_block=2, kernel_size=5, activation="gelu",
        pooling="avg", batch_norm=True, spatial_dropout=0.1, hidden=32,
    )
    kinds = [type(m) for m in model.features]
    assert kinds.count(nn.Conv2d) == 4 and kinds.count(nn.BatchNorm2d) == 4 and kinds.count(nn.GELU) == 4
    assert kinds.count(nn.AvgPool2d) == 2 and kinds.count(nn.Dropout2d) == 2
    assert all(m.kernel_size == (5, 5) and m.bias is None for m in model.features if isinstance(m, nn.Conv2d))
    assert model.head[-1].in_features == 32
    assert model.eval()(torch.zeros(1, 1, 40, 40)).shape == (1, 6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"activation": "tanh"}, "activation='tanh' is not one of: relu, leaky_relu, elu, gelu, silu"),
        ({"pooling": "lp"}, "pooling='lp' is not one of: max, avg"),
        ({"kernel_size": 4}, "kernel_size=4 must be odd"),
        ({"filters": []}, "at least one block"),
    ],
)
def test_cnn_rejects_bad_options(args, message):
    with pytest.raises(ValueError, match=message) as err:
        build("cnn", 6, **args)
    assert "\n" not in str(err.value)


def test_vgg_options():
    model = build("vgg", 6, widths=[16, 32, 64, 128], dropout=0.2, spatial_dropout=0.0, hidden=64)
    assert not any(isinstance(m, nn.Dropout2d) for m in model.features)
    assert [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)] == [16, 16, 32, 32, 64, 64, 128, 128]
    assert model.head[-1].in_features == 64 and model.head[-2].p == 0.2
    with pytest.raises(ValueError, match="in_channels=2"):
        build("resnet18", 6, 2)


@pytest.mark.parametrize("name", sorted(set(MODELS) - VITS - CACHED))
def test_feature_blocks_are_four_and_ever_coarser(name):
    model = build(name, 6).eval()
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, out: sizes.append(out.shape[-1])) for b in model.feature_blocks()]
    model(torch.zeros(1, 3, 96, 96))
    for h in hooks:
        h.remove()
    assert len(sizes) == 4 and sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4


@pytest.mark.parametrize("name, blocks, grid", [("vit_small", 6, 12), ("vit_b_16", 12, 6)])
def test_vit_blocks_keep_the_patch_grid_at_any_input_size(name, blocks, grid):
    model = build(name, 6).eval()
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, out: sizes.append(tuple(out.shape[-2:]))) for b in model.feature_blocks()]
    with torch.no_grad():
        model(torch.zeros(1, 3, 96, 96))
    for h in hooks:
        h.remove()
    assert sizes == [(grid, grid)] * blocks
    with pytest.raises(ValueError, match="not a multiple of the patch size"):
        model(torch.zeros(1, 3, 100, 100))


def test_vit_b_16_takes_every_torchvision_weight_but_the_class_token_and_head():
    import torchvision

    from emopipe.modeling.vits import from_torchvision

    tv = torchvision.models.vit_b_16()
    model = build("vit_b_16", 6, 1)
    result = model.load_state_dict(from_torchvision(tv.state_dict(), in_channels=1), strict=False)
    assert result.missing_keys == ["head.4.weight", "head.4.bias"] and not result.unexpected_keys
    assert torch.equal(model.embed.proj.weight, tv.conv_proj.weight.sum(1, keepdim=True))


def build_or_skip(name: str, channels: int) -> nn.Module:
    """The registry model `name` (6 classes, no pretrained weights); skips a channel count it does not take."""
    try:
        return build(name, 6, channels)
    except ParamError as err:
        if f"in_channels={channels}" in str(err):
            pytest.skip(f"{name} does not take {channels} channel(s)")
        raise


def check_describes_itself(model: nn.Module, channels: int, size: int = 48) -> None:
    """What explain and progressive unfreezing need of a model, through the same entry points they use."""
    # (a) unfreezing: groups from the output back, every parameter in exactly one group, group 0 the head
    groups = Unfreezer(model, freeze_epochs=1, every=1).groups
    ids = [id(p) for g in groups for p in g.parameters()]
    assert len(ids) == len(set(ids)), "a parameter is in two transfer groups"
    assert set(ids) == {id(p) for p in model.parameters()}, "a parameter is in no transfer group"
    assert len(groups) >= 2 and all(any(True for _ in g.parameters()) for g in groups)
    # (b) feature blocks: submodules of the model, the last one runs in a forward pass
    blocks = described(model, "feature_blocks").feature_blocks()
    assert blocks and all(any(b is m for m in model.modules()) for b in blocks)
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        blocks[-1].register_forward_hook(lambda _m, _i, out: seen.update(block=explain.as_grid(explain.first_tensor(out)).detach())),
        groups[0].register_forward_hook(lambda _m, _i, out: seen.setdefault("head", out.detach().clone())),
    ]
    x = torch.rand(2, channels, size, size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            y = model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    assert "block" in seen and seen["block"].shape[0] == 2 and seen["block"].dim() == 4
    assert torch.equal(seen["head"], y), "the first transfer group is not the head (its output is not the model's)"
    # (c) Grad-CAM on a 2-image batch, one map per image at input size
    maps = [explain.grad_cam(model, x[i : i + 1], target_class=i) for i in range(2)]
    assert all(m.shape == (size, size) and np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1 for m in maps)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", sorted(set(MODELS) - CACHED))
def test_every_registered_model_describes_itself(name, channels):
    torch.manual_seed(0)
    check_describes_itself(build_or_skip(name, channels), channels)


def bare(num_classes: int, in_channels: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )


def test_a_model_that_does_not_describe_itself_fails_the_registry_check(monkeypatch):
    monkeypatch.setitem(MODELS, "bare", bare)
    model = build_or_skip("bare", 3)
    with pytest.raises(TypeError) as err:
        check_describes_itself(model, 3)
    assert str(err.value).startswith("Sequential does not describe itself: it has no transfer_groups() method;")
    with pytest.raises(TypeError, match=r"^Sequential does not describe itself: it has no feature_blocks\(\) method;"):
        explain.grad_cam(model, torch.zeros(1, 3, 16, 16), 0)
    with pytest.raises(TypeError, match=r"it has no feature_blocks\(\) and transfer_groups\(\) methods;"):
        described(model)


def test_a_model_with_one_method_is_told_the_other():
    class HalfDescribed(nn.Sequential):
        def feature_blocks(self):
            return [self[2]]

    model = HalfDescribed(*bare(6))
    assert described(model, "feature_blocks") is model
    with pytest.raises(TypeError, match=r"^HalfDescribed does not describe itself: it has no transfer_groups\(\) method;"):
        Unfreezer(model, 1, 1)


def test_transfer_groups_orders_resnet_output_to_input():
    model = build("resnet18", 6)
    groups = model.transfer_groups()
    assert groups[:5] == [model.fc, model.layer4, model.layer3, model.layer2, model.layer1]
    assert list(groups[5]) == [model.conv1, model.bn1]


def test_transfer_groups_orders_cnn_blocks_last_first():
    model = build("vgg", 6)
    head, *blocks = model.transfer_groups()
    assert head is model.head and len(blocks) == 4
    assert blocks[-1][0] is model.features[0] and blocks[0][-1] is model.features[-1]
    first_convs = [next(m for m in b if isinstance(m, nn.Conv2d)) for b in blocks]
    assert [m.in_channels for m in first_convs] == [256, 128, 64, 3]
    assert all(isinstance(b[-1], nn.MaxPool2d) for b in blocks[1:]) and isinstance(blocks[0][-2], nn.MaxPool2d)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """A torch hub cache in tmp_path; any attempt to download fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert torch.hub.get_dir() == str(tmp_path / "hub")

    def no_network(*args, **kwargs):
        pytest.fail(f"tried the network: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr("urllib.request.urlopen", no_network)
    return tmp_path / "hub" / "checkpoints"


@pytest.mark.parametrize("channels", [3, 1])
def test_pretrained_resnet_loads_the_cached_weights(offline_hub, channels):
    offline_hub.mkdir(parents=True)
    saved = torchvision.models.resnet18().state_dict()
    torch.save(saved, offline_hub / "resnet18-f37072fd.pth")
    model = build("resnet18", 6, channels, pretrained=True)
    state = model.state_dict()
    assert state["fc.weight"].shape == (6, 512)
    for key, value in saved.items():
        if key == "conv1.weight" and channels == 1:
            assert torch.allclose(state[key], value.sum(1, keepdim=True))
        elif not key.startswith("fc."):
            assert torch.equal(state[key], value), key


def test_pretrained_resnet_without_cache_says_where_to_put_the_file(offline_hub):
    with pytest.raises(PretrainedWeightsError) as err:
        build("resnet50", 6, pretrained=True)
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError) and "\n" not in message
    assert str(offline_hub / "resnet50-11ad3fa6.pth") in message
    assert "torchvision.models.resnet50(weights='IMAGENET1K_V2')" in message


def test_unknown_model_names_the_choices():
    with pytest.raises(ParamError, match="model='nope' is not a registered model; choose one of: "
                       "cnn, hub, mini_xception, resnet18, resnet50, small, vgg, vit_b_16, vit_small, wider"):
        build("nope", 3)
    with pytest.raises(ParamError, match="model='nope' is not a registered model"):
        factory("nope", {}, 3, ["a", "b"])  # at once, before any model is built


def test_factory_builds_fresh_models_of_the_params_model():
    new_model = factory("small", {"dropout": 0.3}, 1, ["a", "b", "c"])
    first, second = new_model(), new_model()
    assert first is not second and type(first) is type(build("small", 3, 1, dropout=0.3))
    assert first(torch.zeros(2, 1, 48, 48)).shape == (2, 3)


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    model = build("small", 4).eval()
    spec = input_spec(48, 3)
    save_checkpoint(tmp_path / "m.pt", model, "small", {}, ["a", "b", "c", "d"], spec)
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(2, 3, 48, 48)
    assert torch.equal(model(x), loaded(x))
    assert meta["classes"] == ["a", "b", "c", "d"] and meta["input"] == spec and meta["arch"] == "small"
    assert torch.load(tmp_path / "m.pt", weights_only=True)["arch"] == "small"


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_resnets_keep_torchvisions_modules_and_keys(arch):
    model = build(arch, 6)
    reference = getattr(torchvision.models, arch)(num_classes=6)
    assert isinstance(model, torchvision.models.ResNet)
    assert list(model.state_dict()) == list(reference.state_dict())
    assert [type(m) for m in model.modules()][1:] == [type(m) for m in reference.modules()][1:]
