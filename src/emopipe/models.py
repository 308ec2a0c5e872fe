"""Model registry: a name in params.yaml (`model: wider`) maps to a builder function.

A new variant is one decorated function. Builders take `num_classes`, `in_channels` and the
keyword args from `model_args` in params.yaml.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def add(builder: Callable[..., nn.Module]):
        MODELS[name] = builder
        return builder

    return add


def build(name: str, num_classes: int, in_channels: int = 3, **model_args) -> nn.Module:
    if name not in MODELS:
        raise KeyError(f"model={name!r} is not a registered model; choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, in_channels=in_channels, **model_args)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def feature_blocks(model: nn.Module) -> list[nn.Module]:
    """The modules whose outputs are the model's successive feature blocks (coarser each time).

    For the CNNs of this registry: every pooling layer inside `model.features`; for
    torchvision ResNets: layer1..layer4. Used to draw feature maps and by Grad-CAM (last block).
    """
    if all(hasattr(model, f"layer{i}") for i in range(1, 5)):
        return [getattr(model, f"layer{i}") for i in range(1, 5)]
    pools = (nn.MaxPool2d, nn.AvgPool2d)
    blocks = [m for m in getattr(model, "features", nn.Sequential()) if isinstance(m, pools)]
    if not blocks:
        raise TypeError(f"{type(model).__name__} has no feature blocks: give it `features` with pooling layers")
    return blocks


def init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convs, small normal for linear layers, as torchvision's VGG does.

    PyTorch's default init leaves a plain ReLU stack without batch norm on a long loss
    plateau (about 12 epochs on the default data); this one starts learning at once.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


class PlainCNN(nn.Module):
    """Blocks of Conv3×3–ReLU–MaxPool, global average pool, dropout, linear head."""

    def __init__(self, channels: Sequence[int], num_classes: int, in_channels: int = 3, dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            width = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, num_classes))
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
