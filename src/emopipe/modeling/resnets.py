"""The ResNet family of the model registry (`model: resnet18 | resnet50`): torchvision's ResNet,
optionally with ImageNet weights from the local torch.hub cache. Its own module because importing
torchvision's models costs ~1.5 s, which every stage process would pay otherwise."""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn
from torchvision.models import ResNet18_Weights, ResNet50_Weights, WeightsEnum
from torchvision.models.resnet import BasicBlock, Bottleneck

from emopipe.modeling.pretrained import PretrainedWeightsError

# ResNet-50 takes torchvision's V2 weights (80.9% ImageNet top-1, against 76.1% for V1);
# ResNet-18 has only V1.
RESNET_WEIGHTS: dict[str, WeightsEnum] = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet50": ResNet50_Weights.IMAGENET1K_V2,
}


class ResNet(torchvision.models.resnet.ResNet):
    """torchvision's ResNet (same modules, state_dict keys and init) that describes itself."""

    def feature_blocks(self) -> list[nn.Module]:
        """layer1..layer4."""
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def transfer_groups(self) -> list[nn.Module]:
        """[fc, layer4, layer3, layer2, layer1, stem (conv1 + bn1)]."""
        return [self.fc, self.layer4, self.layer3, self.layer2, self.layer1, nn.ModuleList([self.conv1, self.bn1])]


RESNET_LAYOUTS: dict[str, tuple[type[BasicBlock | Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}


def cached_weights_path(weights: WeightsEnum) -> Path:
    """Where torch.hub looks for `weights` before downloading: $TORCH_HOME/hub/checkpoints/<file name of the url>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def cached_state_dict(weights: WeightsEnum, arch: str) -> dict[str, torch.Tensor]:
    """`weights` from the local torch.hub cache only; a PretrainedWeightsError says where to put the file.

    The cache is checked first so that nothing tries the network (torch.hub loads a cached file
    as is and only downloads, and verifies hashes, when it is missing)."""
    if not (path := cached_weights_path(weights)).exists():
        raise PretrainedWeightsError(
            f"pretrained {arch} weights not found: expected {path}; on a machine with internet run "
            f"`python -c \"import torchvision; torchvision.models.{arch}(weights='{weights.name}')\"` "
            f"and copy {path.name} from its ~/.cache/torch/hub/checkpoints into {path.parent} (or set TORCH_HOME)"
        )
    return weights.get_state_dict(progress=True, check_hash=True)


def resnet(arch: str, num_classes: int, in_channels: int, pretrained: bool) -> ResNet:
    """A torchvision ResNet (our self-describing subclass) with a new `fc` for `num_classes`; ImageNet
    weights from the local hub cache only (`cached_state_dict`). For grey input, conv1 is
    replaced; its pretrained weights are the sum over the RGB channels, which gives a grey image
    the response the RGB filters give to that image copied into all three channels.
    """
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels={in_channels}: {arch} takes 1 (grey) or 3 (RGB) channels")
    weights = RESNET_WEIGHTS[arch] if pretrained else None
    state = cached_state_dict(weights, arch) if weights is not None else None
    # as torchvision.models.<arch>(weights=weights) builds it (same init, same loading), as our subclass
    block, layers = RESNET_LAYOUTS[arch]
    model = ResNet(block, layers)
    if state is not None:
        model.load_state_dict(state)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    if in_channels == 1:
        rgb = model.conv1
        model.conv1 = nn.Conv2d(1, rgb.out_channels, rgb.kernel_size, rgb.stride, rgb.padding, bias=False)
        if pretrained:
            with torch.no_grad():
                model.conv1.weight.copy_(rgb.weight.sum(1, keepdim=True))
    return model
