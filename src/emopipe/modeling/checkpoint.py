"""Checkpoints: a plain dict (architecture, classes, preprocessing, weights), safe to load with weights_only=True."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from emopipe.config import FacesParams, InputParams
from emopipe.errors import MissingFileError
from emopipe.io import atomic_path
from emopipe.modeling.models import build

MEAN, STD = 0.5, 0.5  # inputs are scaled to [0, 1] and then to [-1, 1]


def input_spec(size: int, channels: int, faces: dict | None = None, normalization: str = "fixed") -> dict:
    """Preprocessing a checkpoint expects; `faces` (enabled, margin, size, detector, align) tells
    predict how to crop (checkpoints from before detector/align mean haar, unaligned).

    `normalization: per_image` standardises each image to zero mean and unit variance (over its
    pixels and channels) before the fixed mean/std: brightness and contrast no longer reach the
    model, which matters most under a photometric domain shift.
    """
    spec = {"size": size, "channels": channels, "mean": [MEAN] * channels, "std": [STD] * channels}
    spec |= {"normalization": normalization} if normalization != "fixed" else {}
    return spec | ({"faces": dict(faces)} if faces is not None else {})


def face_settings(spec: dict) -> dict:
    """How a checkpoint's training data was cropped (its ``input.faces``), for predict to crop alike.
    Checkpoints from before the face settings were recorded: margin 0.25, 160 px, haar, unaligned."""
    trained = spec.get("faces", {})
    return {"margin": trained.get("margin", 0.25), "size": trained.get("size", 160),
            "detector": trained.get("detector", "haar"), "align": bool(trained.get("align", False))}


def params_spec(i: InputParams, f: FacesParams) -> dict:
    """The input spec of a model trained on these params (input size, channels, normalisation, face crop)."""
    faces = {"enabled": f.enabled, "margin": f.margin, "size": f.size, "detector": f.detector, "align": f.align}
    return input_spec(i.size, i.channels, faces, i.normalization)


def save_checkpoint(path: Path, model: nn.Module, arch: str, arch_args: dict, classes: list[str], spec: dict) -> None:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"arch": arch, "arch_args": dict(arch_args), "classes": list(classes), "input": spec, "state_dict": state}, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model from its checkpoint; returns (model in eval mode, checkpoint metadata)."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"checkpoint {path} not found: run `dvc repro` (or the train stage) first")
    ckpt = torch.load(path, map_location=device, weights_only=True)
    args = {k: v for k, v in ckpt["arch_args"].items() if k != "pretrained"}  # the state dict holds every weight
    model = build(ckpt["arch"], len(ckpt["classes"]), ckpt["input"]["channels"], ckpt["classes"], **args)
    model.load_state_dict(ckpt["state_dict"])
    model.to(device).eval()
    return model, {k: v for k, v in ckpt.items() if k != "state_dict"}


def normalize(batch: torch.Tensor, spec: dict) -> torch.Tensor:
    """uint8 or [0,1] float batch → normalised float batch, per the checkpoint's input spec."""
    x = batch.float() / 255.0 if batch.dtype == torch.uint8 else batch
    if spec.get("normalization") == "per_image":
        return (x - x.mean(dim=(1, 2, 3), keepdim=True)) / x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
    mean = torch.tensor(spec["mean"], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec["std"], device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std
