"""Model registry: a name in params.yaml (`model: wider`) maps to a builder function.

A new variant is one decorated function. Builders take `num_classes`, `in_channels` and the
keyword args from `model_args` in params.yaml.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights, WeightsEnum

from emopipe.errors import MissingFileError, ParamError

MODELS: dict[str, Callable[..., nn.Module]] = {}

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": partial(nn.ReLU, inplace=True),
    "leaky_relu": partial(nn.LeakyReLU, inplace=True),
    "elu": partial(nn.ELU, inplace=True),
    "gelu": nn.GELU,
    "silu": partial(nn.SiLU, inplace=True),
}
POOLS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
POOL_TYPES = tuple(POOLS.values())


class PretrainedWeightsError(MissingFileError):
    """Pretrained weights are not in the local torch hub cache."""


def register(name: str):
    def add(builder: Callable[..., nn.Module]):
        MODELS[name] = builder
        return builder

    return add


def build(name: str, num_classes: int, in_channels: int = 3, **model_args) -> nn.Module:
    """The registered model `name`; a bad `model_args` entry is a ParamError naming it."""
    if name not in MODELS:
        raise KeyError(f"model={name!r} is not a registered model; choose one of: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](num_classes=num_classes, in_channels=in_channels, **model_args)
    except (TypeError, ValueError) as err:
        raise ParamError(f"model_args for model={name!r}: {err}") from err


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _is_resnet(model: nn.Module) -> bool:
    return all(hasattr(model, f"layer{i}") for i in range(1, 5))


def feature_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the model's successive feature blocks (coarser each time).

    For the CNNs of this registry: every pooling layer inside `model.features`; for
    torchvision ResNets: layer1..layer4. Used to draw feature maps and by Grad-CAM (last block).
    """
    if _is_resnet(model):
        return [getattr(model, f"layer{i}") for i in range(1, 5)]
    blocks = [m for m in getattr(model, "features", nn.Sequential()) if isinstance(m, POOL_TYPES)]
    if not blocks:
        raise TypeError(f"{type(model).__name__} has no feature blocks: give it `features` with pooling layers")
    return blocks


def transfer_groups(model: nn.Module) -> list[nn.Module]:
    """The model's parameters in groups from the output back to the input: [head, deepest block, ..., stem].

    For progressive unfreezing: train group 0 first, then unfreeze one more group at a time.
    Every parameter belongs to exactly one group. A block of `features` runs up to and including
    its pooling layer; layers after the last pool (parameter-free, e.g. dropout) join the last block.
    """
    if _is_resnet(model):
        stem = nn.ModuleList([model.conv1, model.bn1])
        return [model.fc, *(getattr(model, f"layer{i}") for i in range(4, 0, -1)), stem]
    blocks: list[nn.Sequential] = []
    block: list[nn.Module] = []
    for m in model.features:
        block.append(m)
        if isinstance(m, POOL_TYPES):
            blocks.append(nn.Sequential(*block))
            block = []
    blocks[-1].extend(block)
    return [model.head, *reversed(blocks)]


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


@register("small")
def small(num_classes: int, in_channels: int = 3, dropout: float = 0.3) -> nn.Module:
    """The seed study's SmallCNN: 389,958 parameters for 6 RGB classes."""
    return PlainCNN((32, 64, 128, 256), num_classes, in_channels, dropout)


@register("wider")
def wider(num_classes: int, in_channels: int = 3, dropout: float = 0.3) -> nn.Module:
    """SmallCNN at ~1.4× width (≈764K parameters): the capacity ablation."""
    return PlainCNN((48, 96, 192, 320), num_classes, in_channels, dropout)


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


# ResNet-50 takes torchvision's V2 weights (80.9% ImageNet top-1, against 76.1% for V1);
# ResNet-18 has only V1.
RESNET_WEIGHTS: dict[str, WeightsEnum] = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": ResNet50_Weights.IMAGENET1K_V2,
}


def cached_weights_path(weights: WeightsEnum) -> Path:
    """Where torch.hub looks for `weights` before downloading: $TORCH_HOME/hub/checkpoints/<file name of the url>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _resnet(arch: str, num_classes: int, in_channels: int, pretrained: bool) -> nn.Module:
    """A torchvision ResNet with a new `fc` for `num_classes`; ImageNet weights from the local hub cache only.

    The cache is checked first so that nothing tries the network (torch.hub loads a cached file
    as is and only downloads, and verifies hashes, when it is missing). For grey input, conv1 is
    replaced; its pretrained weights are the sum over the RGB channels, which gives a grey image
    the response the RGB filters give to that image copied into all three channels.
    """
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels={in_channels}: {arch} takes 1 (grey) or 3 (RGB) channels")
    weights = RESNET_WEIGHTS[arch] if pretrained else None
    if weights is not None and not (path := cached_weights_path(weights)).exists():
        raise PretrainedWeightsError(
            f"pretrained {arch} weights not found: expected {path}; on a machine with internet run "
            f"`python -c \"import torchvision; torchvision.models.{arch}(weights='{weights.name}')\"` "
            f"and copy {path.name} from its ~/.cache/torch/hub/checkpoints into {path.parent} (or set TORCH_HOME)"
        )
    model = getattr(torchvision.models, arch)(weights=weights)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    if in_channels == 1:
        rgb = model.conv1
        model.conv1 = nn.Conv2d(1, rgb.out_channels, rgb.kernel_size, rgb.stride, rgb.padding, bias=False)
        if pretrained:
            with torch.no_grad():
                model.conv1.weight.copy_(rgb.weight.sum(1, keepdim=True))
    return model


@register("resnet18")
def resnet18(num_classes: int, in_channels: int = 3, pretrained: bool = False) -> nn.Module:
    return _resnet("resnet18", num_classes, in_channels, pretrained)


@register("resnet50")
def resnet50(num_classes: int, in_channels: int = 3, pretrained: bool = False) -> nn.Module:
    return _resnet("resnet50", num_classes, in_channels, pretrained)
