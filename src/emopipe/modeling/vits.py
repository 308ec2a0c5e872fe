"""The Vision Transformer family of the model registry (`model: vit_small | vit_b_16`).

Patch tokens stay on their grid between blocks (B×D×h×w in and out of every block), so explain
draws their feature maps and Grad-CAM works as for a CNN; the classifier averages the tokens
(no class token) and a learned position embedding is resized to the input's grid, so one model
runs at 48, 64 or 112 px. `vit_b_16` is torchvision's ViT-B/16 layout (patch 16, width 768,
12 blocks of 12 heads) and with `pretrained: true` takes its ImageNet weights from the local
torch.hub cache (the class token is dropped; its position is not used).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class PatchEmbedding(nn.Module):
    """Non-overlapping patches to D channels, plus a position embedding on a `grid`×`grid` reference grid."""

    def __init__(self, in_channels: int, dim: int, patch: int, grid: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch, patch)
        self.pos = nn.Parameter(torch.zeros(1, dim, grid, grid))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        pos = self.pos if self.pos.shape[-2:] == x.shape[-2:] else F.interpolate(self.pos, size=x.shape[-2:], mode="bicubic", align_corners=False)
        return x + pos


class GridBlock(nn.Module):
    """One pre-norm transformer encoder layer over the tokens of a B×D×h×w grid."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, heads, dim * mlp_ratio, dropout, activation="gelu", batch_first=True,
                                                norm_first=True, layer_norm_eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w = x.shape
        return self.layer(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, d, h, w)


class ViT(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, patch: int, dim: int, depth: int, heads: int, mlp_ratio: int = 4,
                 dropout: float = 0.0, grid: int = 8):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be a multiple of heads={heads}")
        self.patch = patch
        self.embed = PatchEmbedding(in_channels, dim, patch, grid)
        self.blocks = nn.Sequential(*[GridBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(dim, eps=1e-6), nn.Dropout(dropout),
                                  nn.Linear(dim, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.patch or x.shape[-2] % self.patch:
            raise ValueError(f"input {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch}: set input.size to one")
        return self.head(self.blocks(self.embed(x)))

    def feature_blocks(self) -> list[nn.Module]:
        return list(self.blocks)

    def transfer_groups(self) -> list[nn.Module]:
        """[head, last block, ..., first block, patch embedding]."""
        return [self.head, *reversed(self.blocks), self.embed]


def vit(num_classes: int, in_channels: int, size: str, pretrained: bool, dropout: float) -> ViT:
    if size == "small":  # ~2.7 M parameters: patch 8 gives an 8×8 grid at 64 px
        return ViT(num_classes, in_channels, patch=8, dim=192, depth=6, heads=3, dropout=dropout, grid=8)
    model = ViT(num_classes, in_channels, patch=16, dim=768, depth=12, heads=12, dropout=dropout, grid=14)
    if pretrained:
        model.load_state_dict(from_torchvision(_torchvision_vit_b_16_weights(), in_channels), strict=False)
    return model


def from_torchvision(state: dict[str, torch.Tensor], in_channels: int = 3) -> dict[str, torch.Tensor]:
    """torchvision's vit_b_16 state dict in this layout (everything but its class token and head)."""
    out = {"embed.proj.weight": state["conv_proj.weight"], "embed.proj.bias": state["conv_proj.bias"]}
    if in_channels == 1:
        out["embed.proj.weight"] = out["embed.proj.weight"].sum(1, keepdim=True)
    pos = state["encoder.pos_embedding"][:, 1:]  # drop the class token's position
    side = int(pos.shape[1] ** 0.5)
    out["embed.pos"] = pos.transpose(1, 2).reshape(1, -1, side, side)
    names = {"ln_1": "norm1", "ln_2": "norm2", "self_attention": "self_attn", "mlp.0": "linear1", "mlp.3": "linear2"}
    for key, value in state.items():
        if key.startswith("encoder.layers.encoder_layer_"):
            index, rest = key.removeprefix("encoder.layers.encoder_layer_").split(".", 1)
            for theirs, ours in names.items():
                if rest.startswith(theirs + "."):
                    out[f"blocks.{index}.layer.{ours}{rest[len(theirs):]}"] = value
        elif key.startswith("encoder.ln."):
            out["head.2." + key.removeprefix("encoder.ln.")] = value
    return out


def _torchvision_vit_b_16_weights() -> dict[str, torch.Tensor]:
    from torchvision.models import ViT_B_16_Weights

    from emopipe.modeling.resnets import cached_state_dict

    return cached_state_dict(ViT_B_16_Weights.IMAGENET1K_V1, "vit_b_16")
