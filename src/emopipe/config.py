"""Typed, validated view of params.yaml: the schema (dataclasses), types and ranges.

params.yaml is the one source of defaults: the dataclasses below declare each param's type and
meaning but no value, and a params file that leaves one out is a one-line error naming it (a
recipe or an experiment changes params.yaml, it never starts from a second set of defaults).

A param that names a choice (`model`, `train.loss`, `data.source`, ...) is checked by the
registry that owns the choices when the code that uses it looks it up (emopipe.registry), so
this module imports no registry and no stage imports code it does not run.

A stage declares the params it reads (`PARAMS` in its script, the same list as its `params:` in
dvc.yaml) and loads a view of them (`load_params(path, only=PARAMS)`): reading any other param
is an error, so dvc.yaml cannot miss a param a stage reads.
"""
from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Collection, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from emopipe.errors import ParamError

NORMALIZATIONS = ("fixed", "per_image")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PROTOCOLS = ("holdout", "kfold")
RENAMED = {  # old key -> (new key, what it is), for a one-line error on an old params file
    "train.folds": ("train.cv_folds", "k-fold cross-validation of train+val inside the train stage"),
    "split.folds": ("split.test_folds", "the folds of split.protocol: kfold, each tested once"),
}
_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # YAML 1.1 reads 1e-3 (no dot) as a string


@dataclass(frozen=True)
class RenderParams:
    """Re-render a source's photos, e.g. the way lab sets look (greyscale, tight crop, 48 px)."""

    greyscale: bool
    crop: float  # keep this central fraction of each side (a tighter face crop)
    size: int  # resize to size×size; 0 keeps the size
    contrast: float  # scale each pixel's distance from mid-grey (< 1: a flat, low-contrast camera)
    brightness: float  # scale every pixel (< 1: a dim camera)
    blur: float  # Gaussian blur radius in pixels of the rendered image (an out-of-focus camera)

    @property
    def identity(self) -> bool:
        """Whether rendering leaves a photo as it is."""
        return (not self.greyscale and self.crop == 1.0 and self.size == 0 and self.contrast == 1.0
                and self.brightness == 1.0 and self.blur == 0.0)


@dataclass(frozen=True)
class SourceParams:
    """Where one domain's images come from (`data` is the main domain, `shift` the second)."""

    source: str  # a key of emopipe.data.sources.SOURCES
    kaggle_handle: str
    kaggle_sub_path: str | None
    folder: str | None
    synthetic_domain: str
    synthetic_counts: dict[str, int]
    synthetic_size: int
    label_noise: float
    class_map: dict[str, str]  # source folder name -> class name, e.g. {sadness: sad}
    classes: list[str] | None  # keep only these classes (after class_map); the rest are reported as rejects
    part: list[float]  # the files whose person hashes into [lo, hi)
    synthetic_severity: float  # generated shift style: 0 = the source style .. 1 = the full shift (the source domain ignores it)
    render: RenderParams


@dataclass(frozen=True)
class FacesParams:
    """Face detection and cropping between download and split."""

    enabled: bool
    margin: float  # added on every side of the detected box, as a fraction of its size
    size: int  # side of the square crop
    no_face: str  # keep (centre crop) | drop (reported in data/faces/<domain>/drops.csv)
    detector: str  # a key of emopipe.data.faces.detectors.DETECTORS
    align: bool  # rotate so the eyes are level before cropping (needs a detector with landmarks)


@dataclass(frozen=True)
class SplitParams:
    train: float
    val: float
    test: float
    near_duplicate_distance: int  # perceptual-hash bits that make two images near-duplicate candidates
    near_duplicate_correlation: float  # and the grey-thumbnail correlation that confirms one; 0: phash alone
    group_pattern: str | None  # regex over the file name; its first group names the person
    shift_group_pattern: str | None  # the shift domain's (null: group_pattern)
    unknown_shift_classes: str  # error | drop (reported in metrics/data.json)
    use_source_splits: bool | None  # a source with train/test folders: null = use them when found, true = require, false = pool
    source_leaks: str  # duplicates across the source's splits: drop their train/val copies | keep (reported either way)
    protocol: str  # holdout | kfold (the test figure: mean ± std over person-grouped folds)
    test_folds: int  # folds of split.protocol: kfold

    def person_pattern(self, domain: str) -> str | None:
        """The file-name pattern naming a domain's persons (`main` or `shift`)."""
        return self.group_pattern if domain == "main" else (self.shift_group_pattern or self.group_pattern)


@dataclass(frozen=True)
class OversampleParams:
    method: str  # a key of emopipe.data.oversample.METHODS
    targets: dict[str, int]


@dataclass(frozen=True)
class InputParams:
    size: int
    channels: int
    normalization: str  # fixed | per_image (each image to zero mean, unit variance)


@dataclass(frozen=True)
class TransferParams:
    """Progressive unfreezing (fine-tuning a pretrained backbone)."""

    freeze_epochs: int  # epochs with only the new head trainable; 0 = off
    unfreeze_every: int  # then one more block, deepest first, every N epochs
    backbone_lr: float


@dataclass(frozen=True)
class TrainParams:
    epochs: int
    batch_size: int  # global batch: split across DDP ranks
    lr: float
    weight_decay: float
    loss: str  # a key of emopipe.modeling.losses.LOSSES
    focal_gamma: float
    focal_alpha: dict[str, float]  # class → factor (missing: 1)
    label_smoothing: float
    class_weights: bool
    weighted_sampler: bool
    augment: str  # a key of emopipe.data.augment.POLICIES
    scheduler: str  # a key of emopipe.modeling.schedulers.SCHEDULERS
    early_stopping: int
    grad_clip: float
    cv_folds: int
    processes: int
    precision: str
    transfer: TransferParams


@dataclass(frozen=True)
class EvalParams:
    batch_size: int
    tta: str  # a key of emopipe.engine.evaluate.TTA
    tta_scales: list[float]  # multiscale: central zooms (fraction kept)


@dataclass(frozen=True)
class AdaptParams:
    method: str  # a key of emopipe.engine.adapt.METHODS
    shots: int
    epochs: int
    lr: float
    batch_size: int
    augment: str  # a key of emopipe.data.augment.POLICIES
    replay: float  # replay: source train images per target shot, mixed into the adaptation set


@dataclass(frozen=True)
class Params:
    seed: int  # model init, batch order, augmentation
    data_seed: int  # generated data, split, oversampling: fixed while `seed` varies
    model: str  # a key of emopipe.modeling.models.MODELS
    model_args: dict[str, typing.Any]
    data: SourceParams
    shift: SourceParams
    faces: FacesParams
    split: SplitParams
    oversample: OversampleParams
    input: InputParams
    train: TrainParams
    eval: EvalParams
    adapt: AdaptParams


class UndeclaredParamError(RuntimeError):
    """Code read a param its stage does not declare: a bug in the stage, not a user error."""


class Undeclared:
    """Stands in for a param a stage did not declare: any use of it raises, naming the param."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)

    def __repr__(self) -> str:
        return f"<undeclared param {self.name}>"

    def _read(self, *args, **kwargs):
        raise UndeclaredParamError(f"this stage reads param {self.name!r} without declaring it: add it to PARAMS in the "
                                   "stage script and run `make deps` (which writes the stage's params in dvc.yaml)")

    def __getattr__(self, attr: str):
        if attr.startswith("__"):  # copy, pickle and friends probe for optional hooks
            raise AttributeError(attr)
        self._read()

    __bool__ = __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = _read
    __iter__ = __len__ = __contains__ = __getitem__ = __call__ = __fspath__ = _read
    __int__ = __float__ = __index__ = __str__ = __format__ = _read
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = __neg__ = _read


WHOLE = ("model_args",)  # replaced, not merged: a builder's arguments belong to the model they are given with


def merge(into: MutableMapping, overrides: Mapping) -> None:
    """The one rule for changing params (recipes, sandboxes, studies): every leaf of `overrides` is set
    in `into`, in place, creating sections as needed; a section merges key by key, except the sections
    in WHOLE and an empty mapping, which replace what was there. A ruamel mapping keeps its comments."""
    for key, value in overrides.items():
        if isinstance(value, Mapping) and value and isinstance(into.get(key), MutableMapping) and key not in WHOLE:
            merge(into[key], value)
        else:
            into[key] = value


def load_params(path: Path | str = "params.yaml", only: Collection[str] | None = None) -> Params:
    """params.yaml as `Params`; any bad or missing value is a ParamError naming the param.

    `only`: the dotted params a stage declares (`PARAMS`); the others read as `Undeclared`.
    """
    path = Path(path)
    if not path.exists():
        raise ParamError(f"{path} not found: run from the repository root or pass --params")
    raw = yaml.safe_load(path.read_text()) or {}
    params = _build(Params, raw, prefix="", source=path.name)
    validate(params)
    return params if only is None else _scope(params, "", tuple(only))


def expand(declared: Collection[str], item: str) -> list[str]:
    """A foreach stage's PARAMS with DVC's `${item}` replaced by this instance's item."""
    return [name.replace("${item}", item) for name in declared]


def _scope(section, prefix: str, only: tuple[str, ...]):
    values = {}
    for f in dataclasses.fields(section):
        name, value = prefix + f.name, getattr(section, f.name)
        if any(name == d or name.startswith(d + ".") for d in only):
            values[f.name] = value
        elif dataclasses.is_dataclass(value) and any(d.startswith(name + ".") for d in only):
            values[f.name] = _scope(value, name + ".", only)
        else:
            values[f.name] = Undeclared(name)
    return dataclasses.replace(section, **values)


def validate(p: Params) -> None:
    """Types are checked while building; these are the ranges and combinations types cannot express."""
    for name, src in (("data", p.data), ("shift", p.shift)):
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
    _range("faces.margin", p.faces.margin, 0.0, 2.0)
    _range("faces.size", p.faces.size, 16, 2048)
    _choice("faces.no_face", p.faces.no_face, ("keep", "drop"))
    s = p.split
    for key in ("train", "val", "test"):
        _range(f"split.{key}", getattr(s, key), 0.0, 1.0, low_open=True)
    if not math.isclose(s.train + s.val + s.test, 1.0, abs_tol=1e-6):
        raise ParamError(f"split.train + split.val + split.test = {s.train + s.val + s.test:g}; they must sum to 1")
    _range("split.near_duplicate_distance", s.near_duplicate_distance, 0, 32)
    _range("split.near_duplicate_correlation", s.near_duplicate_correlation, 0.0, 1.0)
    for key in ("group_pattern", "shift_group_pattern"):
        _check_group_pattern(f"split.{key}", getattr(s, key))
    _choice("split.unknown_shift_classes", s.unknown_shift_classes, ("error", "drop"))
    _choice("split.source_leaks", s.source_leaks, ("drop", "keep"))
    _choice("split.protocol", s.protocol, PROTOCOLS)
    _range("split.test_folds", s.test_folds, 2, 100)
    if s.protocol == "kfold" and s.use_source_splits:
        raise ParamError("split.protocol: kfold re-splits the whole source, split.use_source_splits: true keeps its test split; "
                         "choose one (kfold with split.use_source_splits: false, or holdout)")
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
    _range("train.cv_folds", t.cv_folds, 1, 100)
    _range("train.processes", t.processes, 1, 1024)
    _range("train.transfer.freeze_epochs", t.transfer.freeze_epochs, 0, 10_000)
    _range("train.transfer.unfreeze_every", t.transfer.unfreeze_every, 1, 10_000)
    _range("train.transfer.backbone_lr", t.transfer.backbone_lr, 0.0, 10.0, low_open=True)
    if t.processes > 1 and t.cv_folds > 1:
        raise ParamError("train.cv_folds > 1 runs in one process; set train.processes: 1 for cross-validation")
    _range("eval.batch_size", p.eval.batch_size, 1, 65_536)
    if not p.eval.tta_scales:
        raise ParamError("eval.tta_scales is empty; give the central fractions to zoom to, e.g. [1.0, 0.9, 0.8]")
    for i, scale in enumerate(p.eval.tta_scales):
        _range(f"eval.tta_scales[{i}]", scale, 0.0, 1.0, low_open=True)
    a = p.adapt
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


def _build(cls: type, raw: object, prefix: str, source: str):
    """Dataclass `cls` from a YAML mapping: every field given, no unknown key, each of the right type."""
    where = prefix.rstrip(".") or source
    if not isinstance(raw, dict):
        raise ParamError(f"{where} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    for key in sorted(set(raw) - known):
        if (old := prefix + str(key)) in RENAMED:
            new, meaning = RENAMED[old]
            raise ParamError(f"param {old} is now {new} ({meaning}): rename it in {source}")
        raise ParamError(f"unknown param {prefix}{key}; known here: {', '.join(sorted(known))}")
    if missing := [f.name for f in fields if f.name not in raw]:
        raise ParamError(f"{source} does not set {prefix}{missing[0]}: every param must be set "
                         "(the repository's params.yaml lists each one with its default)")
    values = {}
    for f in fields:
        name, hint, value = prefix + f.name, hints[f.name], raw[f.name]
        values[f.name] = _build(hint, value, name + ".", source) if dataclasses.is_dataclass(hint) else _coerce(name, hint, value)
    return cls(**values)


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
    raise TypeError(f"config.py cannot check {name}: no rule for its annotation {hint!r}")  # a new field needs one


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
