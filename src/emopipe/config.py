"""Typed, validated view of params.yaml: the schema (dataclasses), types and ranges.

A param that names a choice from a registry (`model`, `train.loss`, `train.scheduler`, the
augment policies) is checked against that registry's keys, which `emopipe.stage.load_params`
passes in: config sits below the registries and imports none of them.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from emopipe.errors import ParamError

SOURCES = ("synthetic", "kaggle", "folder", "none")  # none: no images (shift only: skip shift evaluation and adaptation)
TTA_POLICIES = ("none", "flip", "multiscale")
ADAPT_METHODS = ("finetune", "head", "bn", "replay")  # engine.adapt.METHODS (config imports no engine code)
NORMALIZATIONS = ("fixed", "per_image")
OVERSAMPLE_METHODS = ("none", "balance", "targeted")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # YAML 1.1 reads 1e-3 (no dot) as a string


@dataclass(frozen=True)
class RenderParams:
    """Re-render a source's photos, e.g. the way lab sets look (greyscale, tight crop, 48 px)."""

    greyscale: bool = False
    crop: float = 1.0  # keep this central fraction of each side (a tighter face crop)
    size: int = 0  # resize to size×size; 0 keeps the size
    contrast: float = 1.0  # scale each pixel's distance from mid-grey (< 1: a flat, low-contrast camera)
    brightness: float = 1.0  # scale every pixel (< 1: a dim camera)
    blur: float = 0.0  # Gaussian blur radius in pixels of the rendered image (an out-of-focus camera)


@dataclass(frozen=True)
class SourceParams:
    """Where one domain's images come from (`data` is the main domain, `shift` the second)."""

    source: str = "synthetic"
    kaggle_handle: str = "yousefmohamed20/sentiment-images-classifier"
    kaggle_sub_path: str | None = None
    folder: str | None = None
    synthetic_domain: str = "source"
    synthetic_counts: dict[str, int] = field(default_factory=dict)
    synthetic_size: int = 160
    synthetic_severity: float = 1.0  # shift domain only: 0 = source style .. 1 = full shift
    label_noise: float = 0.03
    class_map: dict[str, str] = field(default_factory=dict)  # source folder name -> class name, e.g. {sadness: sad}
    classes: list[str] | None = None  # keep only these classes (after class_map); the rest are reported as rejects
    part: list[float] = field(default_factory=lambda: [0.0, 1.0])  # the files whose person hashes into [lo, hi)
    render: RenderParams = RenderParams()



@dataclass(frozen=True)
class FacesParams:
    """Face detection and cropping between download and split."""

    enabled: bool = False
    margin: float = 0.25  # added on every side of the detected box, as a fraction of its size
    size: int = 160  # side of the square crop
    no_face: str = "keep"  # keep (centre crop) | drop (reported in data/faces/<domain>/drops.csv)
    detector: str = "haar"  # haar (OpenCV cascades, boxes only) | mtcnn (facenet-pytorch, boxes + landmarks)
    align: bool = False  # rotate so the eyes are level before cropping (needs mtcnn's landmarks)


@dataclass(frozen=True)
class SplitParams:
    train: float = 0.70
    val: float = 0.15
    test: float = 0.15
    near_duplicate_distance: int = 4
    group_pattern: str | None = None  # regex over the file name; its first group names the person
    shift_group_pattern: str | None = None  # the shift domain's (null: group_pattern)
    unknown_shift_classes: str = "error"  # error | drop (reported in metrics/data.json)
    use_source_splits: bool | None = None  # a source with train/test folders: null = use them when found, true = require, false = pool
    source_leaks: str = "drop"  # duplicates across the source's splits: drop their train/val copies | keep (reported either way)
    protocol: str = "holdout"  # holdout | kfold (the test figure: mean ± std over person-grouped folds)
    folds: int = 5  # folds of split.protocol: kfold


@dataclass(frozen=True)
class OversampleParams:
    method: str = "balance"
    targets: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class InputParams:
    size: int = 64
    channels: int = 3
    normalization: str = "fixed"  # fixed | per_image (each image to zero mean, unit variance)


@dataclass(frozen=True)
class TransferParams:
    """Progressive unfreezing (fine-tuning a pretrained backbone)."""

    freeze_epochs: int = 0  # epochs with only the new head trainable; 0 = off
    unfreeze_every: int = 2  # then one more block, deepest first, every N epochs
    backbone_lr: float = 1e-4


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "ce"
    focal_gamma: float = 2.0
    focal_alpha: dict[str, float] = field(default_factory=dict)  # class → factor (missing: 1)
    label_smoothing: float = 0.05
    class_weights: bool = True
    weighted_sampler: bool = False
    augment: str = "basic"
    scheduler: str = "none"
    early_stopping: int = 0
    grad_clip: float = 0.0
    folds: int = 1
    processes: int = 1
    precision: str = "fp32"
    transfer: TransferParams = TransferParams()


@dataclass(frozen=True)
class EvalParams:
    batch_size: int = 128
    tta: str = "none"  # none | flip (mean over image and mirror) | multiscale (flip × tta_scales)
    tta_scales: list[float] = field(default_factory=lambda: [1.0, 0.9, 0.8])  # multiscale: central zooms (fraction kept)


@dataclass(frozen=True)
class AdaptParams:
    method: str = "finetune"  # finetune | head | bn | replay
    shots: int = 10
    epochs: int = 10
    lr: float = 3e-4
    batch_size: int = 32
    augment: str = "basic"
    replay: float = 1.0  # replay: source train images per target shot, mixed into the adaptation set


@dataclass(frozen=True)
class Params:
    seed: int = 0  # model init, batch order, augmentation
    data_seed: int = 0  # generated data, split, oversampling: fixed while `seed` varies
    model: str = "small"
    model_args: dict[str, typing.Any] = field(default_factory=dict)
    data: SourceParams = SourceParams()
    shift: SourceParams = SourceParams(synthetic_domain="shift")
    faces: FacesParams = FacesParams()
    split: SplitParams = SplitParams()
    oversample: OversampleParams = OversampleParams()
    input: InputParams = InputParams()
    train: TrainParams = TrainParams()
    eval: EvalParams = EvalParams()
    adapt: AdaptParams = AdaptParams()


def load_params(path: Path | str = "params.yaml", choices: Mapping[str, Collection[str]] | None = None) -> Params:
    """params.yaml as `Params`; any bad value is a ParamError naming the param."""
    path = Path(path)
    if not path.exists():
        raise ParamError(f"{path} not found: run from the repository root or pass --params")
    raw = yaml.safe_load(path.read_text()) or {}
    params = _build(Params, raw, prefix="")
    validate(params, choices or {})
    return params


def validate(p: Params, choices: Mapping[str, Collection[str]]) -> None:
    """Range checks that types alone cannot express; `choices` maps a dotted param that names a
    registry entry (`model`, `train.loss`, ...) to the registry's keys."""
    for name, allowed in choices.items():
        value = p
        for part in name.split("."):
            value = getattr(value, part)
        if value not in allowed:
            raise ParamError(f"{name}={value!r} is not a registered {name.split('.')[-1]}; choose one of: {', '.join(sorted(allowed))}")
    for name, src in (("data", p.data), ("shift", p.shift)):
        _choice(f"{name}.source", src.source, SOURCES)
        if src.source == "folder" and not src.folder:
            raise ParamError(f"{name}.folder must be set when {name}.source is 'folder'")
        if src.source == "synthetic" and not src.synthetic_counts:
            raise ParamError(f"{name}.synthetic_counts must name at least one class when {name}.source is 'synthetic'")
        if any(n < 1 for n in src.synthetic_counts.values()):
            raise ParamError(f"{name}.synthetic_counts must be positive, got {src.synthetic_counts}")
        _range(f"{name}.label_noise", src.label_noise, 0.0, 1.0)
        _range(f"{name}.synthetic_severity", src.synthetic_severity, 0.0, 1.0)
        if len(src.part) != 2 or not 0.0 <= src.part[0] < src.part[1] <= 1.0:
            raise ParamError(f"{name}.part={src.part!r} must be [lo, hi] with 0 <= lo < hi <= 1 (the share of the files this domain takes)")
        if src.classes is not None and not src.classes:
            raise ParamError(f"{name}.classes is empty; list the classes to keep, or null for all")
        _range(f"{name}.render.crop", src.render.crop, 0.0, 1.0, low_open=True)
        if src.render.size:
            _range(f"{name}.render.size", src.render.size, 16, 2048)
        _range(f"{name}.render.contrast", src.render.contrast, 0.0, 4.0, low_open=True)
        _range(f"{name}.render.brightness", src.render.brightness, 0.0, 4.0, low_open=True)
        _range(f"{name}.render.blur", src.render.blur, 0.0, 16.0)
    if p.data.source == "none":
        raise ParamError("data.source: none leaves the main domain without images; only shift.source may be none")
    _range("faces.margin", p.faces.margin, 0.0, 2.0)
    _range("faces.size", p.faces.size, 16, 2048)
    _choice("faces.no_face", p.faces.no_face, ("keep", "drop"))
    if p.faces.align and p.faces.detector == "haar":
        raise ParamError("faces.align needs eye landmarks, which the haar detector does not give: "
                         "set faces.detector: mtcnn or faces.align: false")
    s = p.split
    for key in ("train", "val", "test"):
        _range(f"split.{key}", getattr(s, key), 0.0, 1.0, low_open=True)
    if not math.isclose(s.train + s.val + s.test, 1.0, abs_tol=1e-6):
        raise ParamError(f"split.train + split.val + split.test = {s.train + s.val + s.test:g}; they must sum to 1")
    _range("split.near_duplicate_distance", s.near_duplicate_distance, 0, 32)
    for key in ("group_pattern", "shift_group_pattern"):
        _check_group_pattern(f"split.{key}", getattr(s, key))
    _choice("split.unknown_shift_classes", s.unknown_shift_classes, ("error", "drop"))
    _choice("split.source_leaks", s.source_leaks, ("drop", "keep"))
    _choice("split.protocol", s.protocol, ("holdout", "kfold"))
    _range("split.folds", s.folds, 2, 100)
    if s.protocol == "kfold" and s.use_source_splits:
        raise ParamError("split.protocol: kfold re-splits the whole source, split.use_source_splits: true keeps its test split; "
                         "choose one (kfold with split.use_source_splits: false, or holdout)")
    _choice("oversample.method", p.oversample.method, OVERSAMPLE_METHODS)
    if p.oversample.method == "targeted" and not p.oversample.targets:
        raise ParamError("oversample.targets must map class names to counts when oversample.method is 'targeted'")
    _range("input.size", p.input.size, 16, 1024)
    _choice("input.channels", p.input.channels, (1, 3))
    _choice("input.normalization", p.input.normalization, NORMALIZATIONS)
    t = p.train
    _range("train.epochs", t.epochs, 0, 10_000)  # 0: no training, the model as built (zero-shot evaluation)
    _range("train.batch_size", t.batch_size, 1, 65_536)
    _range("train.lr", t.lr, 0.0, 10.0, low_open=True)
    _range("train.label_smoothing", t.label_smoothing, 0.0, 0.99)
    _choice("train.precision", t.precision, PRECISIONS)
    _range("train.focal_gamma", t.focal_gamma, 0.0, 10.0)
    if any(v <= 0 for v in t.focal_alpha.values()):
        raise ParamError(f"train.focal_alpha factors must be positive, got {t.focal_alpha}")
    _range("train.early_stopping", t.early_stopping, 0, 10_000)
    _range("train.grad_clip", t.grad_clip, 0.0, 1e6)
    _range("train.folds", t.folds, 1, 100)
    _range("train.processes", t.processes, 1, 1024)
    _range("train.transfer.freeze_epochs", t.transfer.freeze_epochs, 0, 10_000)
    _range("train.transfer.unfreeze_every", t.transfer.unfreeze_every, 1, 10_000)
    _range("train.transfer.backbone_lr", t.transfer.backbone_lr, 0.0, 10.0, low_open=True)
    if t.processes > 1 and t.folds > 1:
        raise ParamError("train.folds > 1 runs in one process; set train.processes: 1 for cross-validation")
    _range("eval.batch_size", p.eval.batch_size, 1, 65_536)
    _choice("eval.tta", p.eval.tta, TTA_POLICIES)
    if not p.eval.tta_scales:
        raise ParamError("eval.tta_scales is empty; give the central fractions to zoom to, e.g. [1.0, 0.9, 0.8]")
    for i, scale in enumerate(p.eval.tta_scales):
        _range(f"eval.tta_scales[{i}]", scale, 0.0, 1.0, low_open=True)
    a = p.adapt
    _choice("adapt.method", a.method, ADAPT_METHODS)
    _range("adapt.replay", a.replay, 0.0, 1000.0)
    _range("adapt.shots", a.shots, 1, 100_000)
    _range("adapt.epochs", a.epochs, 0, 10_000)  # 0: no adaptation (the before/after baseline)
    _range("adapt.lr", a.lr, 0.0, 10.0, low_open=True)
    _range("adapt.batch_size", a.batch_size, 1, 65_536)


def _check_group_pattern(name: str, pattern: str | None) -> None:
    if pattern is None:
        return
    try:
        groups = re.compile(pattern).groups
    except re.error as err:
        raise ParamError(f"{name}={pattern!r} is not a regular expression: {err}") from None
    if groups < 1:
        raise ParamError(f"{name}={pattern!r} needs a capture group for the person, e.g. '^(.+)_\\d+\\.\\w+$'")


def _choice(name: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ParamError(f"{name}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def _range(name: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    if value < low or value > high or (low_open and value == low):
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ParamError(f"{name}={value!r} is out of range {bound}")


def _build(cls: type, raw: object, prefix: str):
    """Build dataclass `cls` from a YAML mapping, rejecting unknown keys and wrong types."""
    where = prefix.rstrip(".") or "params.yaml"
    if not isinstance(raw, dict):
        raise ParamError(f"{where} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ParamError(f"unknown param {prefix}{unknown[0]}; known here: {', '.join(sorted(known))}")
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in raw:
            continue
        name, hint, value = prefix + f.name, hints[f.name], raw[f.name]
        if dataclasses.is_dataclass(hint):
            values[f.name] = _merge(getattr(cls(), f.name), hint, value, name)
        else:
            values[f.name] = _coerce(name, hint, value)
    return cls(**values)


def _merge(default: object, hint: type, value: object, name: str):
    """Nested section: keys missing from YAML keep the section's own default."""
    built = _build(hint, value, name + ".")
    given = {k: getattr(built, k) for k in value}  # type: ignore[union-attr]
    return dataclasses.replace(default, **given)


def _coerce(name: str, hint: object, value: object):
    """`value` checked against the field annotation `hint`; None only where it says `| None`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamError(f"{name} must be a mapping, got {value!r}")
        return {str(k): _coerce(f"{name}.{k}", args[1], v) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ParamError(f"{name} must be a list, got {value!r}")
        return [_coerce(f"{name}[{i}]", args[0], v) for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamError(f"{name} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        return _number(name, hint, value)
    if hint is str:
        if not isinstance(value, str):
            raise ParamError(f"{name} must be a string, got {value!r}")
        return value
    raise TypeError(f"params.py cannot check {name}: no rule for its annotation {hint!r}")  # a new field needs one


def _number(name: str, hint: type, value: object) -> int | float:
    """A finite int (never a bool) or float; an int is fine for a float. A string only as YAML 1.1 leaves `1e-3`."""
    try:
        number = float(value) if isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value) else value
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise TypeError
        if hint is int and float(number) != int(number):
            raise TypeError
        return hint(number)
    except (TypeError, ValueError):
        raise ParamError(f"{name} must be {'an integer' if hint is int else 'a finite number'}, got {value!r}") from None
