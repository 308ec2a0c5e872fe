"""What the stage scripts share: params checked against the registries, and the set-up of
every stage that runs a trained model (numerics, threads, device, checkpoint)."""
from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from torch import nn

from emopipe import config, numerics
from emopipe.config import Params
from emopipe.data.augment import POLICIES
from emopipe.data.faces import DETECTORS
from emopipe.modeling.checkpoint import load_checkpoint
from emopipe.modeling.losses import LOSSES
from emopipe.modeling.models import MODELS, build
from emopipe.modeling.schedulers import SCHEDULERS
from emopipe.runtime import Runtime, configure_threads, select_runtime

# dotted param -> the registry whose keys it may take
CHOICES = {"model": MODELS, "train.loss": LOSSES, "train.scheduler": SCHEDULERS,
           "train.augment": POLICIES, "adapt.augment": POLICIES, "faces.detector": DETECTORS}


# The metrics shift_eval and adapt write for a single-domain run (`shift.source: none`).
NO_SHIFT = {"skipped": "shift.source is none: no second domain to evaluate or adapt to"}


def load_params(path: Path | str = "params.yaml") -> Params:
    """params.yaml, validated: types, ranges, and registry names (before any work starts)."""
    return config.load_params(path, CHOICES)


def group_pattern(domain: str, main: str | None, shift: str | None) -> str | None:
    """The file-name pattern naming a domain's persons (`main` or `shift`), from split.group_pattern
    and split.shift_group_pattern (null: the main domain's)."""
    return main if domain == "main" else (shift or main)


def model_factory(name: str, args: dict, channels: int, classes: list[str]) -> Callable[[], nn.Module]:
    """Builds fresh models of registry entry `name` (`model`, `model_args`) for `classes`."""
    return functools.partial(build, name, len(classes), channels, classes, **args)


def open_model(checkpoint: Path, precision: str) -> tuple[Runtime, nn.Module, dict]:
    """Numerics for `precision` (may re-run the stage in native mode), threads, device, then the
    checkpoint on that device: (runtime, model in eval mode, checkpoint metadata)."""
    numerics.require(precision)
    configure_threads()
    runtime = select_runtime(precision)
    model, meta = load_checkpoint(checkpoint, runtime.device)
    return runtime, model, meta
