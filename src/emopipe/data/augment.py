"""Batched augmentation of image tensors, one random transform per sample.

Geometry (random resized crop, flip, rotation, translation) is one affine matrix per sample,
applied to the whole batch by a single `grid_sample`; photometric jitter is broadcast
arithmetic. This costs a few percent of a training step, unlike per-image PIL transforms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from emopipe.registry import Registry


@dataclass(frozen=True)
class Policy:
    crop_scale: tuple[float, float] = (1.0, 1.0)  # area fraction kept by the random resized crop
    crop_ratio: tuple[float, float] = (1.0, 1.0)  # aspect ratio range of the crop
    flip: float = 0.0  # probability of a horizontal flip
    rotate: float = 0.0  # max |degrees|
    translate: float = 0.0  # max shift as a fraction of the side
    brightness: float = 0.0
    contrast: float = 0.0
    grayscale: float = 0.0  # probability
    blur: float = 0.0  # probability of a 3×3 box blur
    noise: float = 0.0  # max std of additive Gaussian pixel noise (per sample, uniform in [0, noise])


# The policies `train.augment` and `adapt.augment` name.
POLICIES: Registry[Policy] = Registry("train.augment", "augment policy")
POLICIES["none"] = Policy()
POLICIES["basic"] = Policy(crop_scale=(0.8, 1.0), crop_ratio=(3 / 4, 4 / 3), flip=0.5, rotate=10.0, brightness=0.2, contrast=0.2)
POLICIES["targeted"] = Policy(crop_scale=(0.8, 1.0), crop_ratio=(3 / 4, 4 / 3), flip=0.5, rotate=10.0, brightness=0.2, contrast=0.2,
                              grayscale=0.2, translate=0.1)
# the shifted domain's nuisances: low contrast, colour casts, blur, sensor noise
POLICIES["shift"] = Policy(crop_scale=(0.8, 1.0), crop_ratio=(3 / 4, 4 / 3), flip=0.5, rotate=10.0, brightness=0.3, contrast=0.5,
                           grayscale=0.2, translate=0.1, blur=0.5, noise=0.08)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def augment(x: torch.Tensor, policy: Policy, generator: torch.Generator) -> torch.Tensor:
    """Augment a float batch N×C×H×W in [0, 1]. Random numbers come from `generator` (on CPU)."""
    if policy == POLICIES["none"]:
        return x
    n = x.shape[0]
    area = _uniform(n, *policy.crop_scale, generator)
    log_ratio = _uniform(n, math.log(policy.crop_ratio[0]), math.log(policy.crop_ratio[1]), generator)
    sx = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1.0)  # crop width / image width
    sy = torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1.0)
    cx = (1 - sx) * _uniform(n, -1, 1, generator) + policy.translate * 2 * _uniform(n, -1, 1, generator)
    cy = (1 - sy) * _uniform(n, -1, 1, generator) + policy.translate * 2 * _uniform(n, -1, 1, generator)
    angle = torch.deg2rad(_uniform(n, -policy.rotate, policy.rotate, generator))
    flip = torch.where(torch.rand(n, generator=generator) < policy.flip, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos * sx * flip, -sin * sy, cx], 1), torch.stack([sin * sx * flip, cos * sy, cy], 1)], 1
    ).to(x.device, x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    shape = (n, 1, 1, 1)
    bright = _uniform(n, 1 - policy.brightness, 1 + policy.brightness, generator).view(shape).to(x.device)
    contrast = _uniform(n, 1 - policy.contrast, 1 + policy.contrast, generator).view(shape).to(x.device)
    x = x * bright
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    if policy.grayscale > 0 and x.shape[1] == 3:
        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand_as(x)
        use = (torch.rand(n, generator=generator) < policy.grayscale).view(shape).to(x.device)
        x = torch.where(use, grey, x)
    if policy.blur > 0:
        blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        x = torch.where((torch.rand(n, generator=generator) < policy.blur).view(shape).to(x.device), blurred, x)
    if policy.noise > 0:
        std = _uniform(n, 0.0, policy.noise, generator).view(shape).to(x.device)
        x = x + std * torch.randn(x.shape, generator=generator).to(x.device)
    return x.clamp(0.0, 1.0)
