"""Where a domain's images come from: generated faces, the Kaggle set, a local folder, or none.

Every source ends in the same intake (`ingest_folder`), so generated and real photos take
one code path from here on. On the way a source can be cut (`part`: two domains from one
folder, never sharing a person), re-rendered (`render`: e.g. greyscale 48 px tight crops, the
way lab sets look, or a dim, flat, blurred camera), and have its classes renamed (`class_map`) or narrowed (`classes`).
"""
from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pandas as pd
from PIL import Image, ImageEnhance, ImageFilter

from emopipe.config import RenderParams, SourceParams
from emopipe.data import kaggle, synthetic
from emopipe.data.intake import MANIFEST_COLUMNS, REJECT_COLUMNS, IntakeResult, ingest_folder
from emopipe.errors import ParamError
from emopipe.machine import available_cores
from emopipe.registry import Registry

# A source brings one domain's class-per-folder tree: (its params, section, staging folder, data seed,
# progress) -> the tree's root, or None for no images at all.
SOURCES: Registry[Callable[[SourceParams, str, Path, int, bool], Path | None]] = Registry("data.source", "source")


@SOURCES.register("synthetic")
def generated(src: SourceParams, section: str, staging: Path, seed: int, progress: bool) -> Path:
    """Procedural faces (the offline default), drawn into `staging`."""
    if not src.synthetic_counts:
        raise ParamError(f"{section}.synthetic_counts must name at least one class when {section}.source is 'synthetic'")
    try:
        synthetic.generate(staging, src.synthetic_counts, domain=src.synthetic_domain, size=src.synthetic_size,
                           seed=seed, label_noise=src.label_noise, severity=src.synthetic_severity,
                           progress=progress, workers=available_cores())
    except ValueError as err:
        raise ParamError(f"{section}.synthetic_counts / {section}.synthetic_domain: {err}") from None
    return staging


@SOURCES.register("kaggle")
def kaggle_dataset(src: SourceParams, section: str, staging: Path, seed: int, progress: bool) -> Path:
    """A Kaggle dataset through kagglehub (its cache when offline)."""
    return kaggle.download(src.kaggle_handle, sub_path=src.kaggle_sub_path)


@SOURCES.register("folder")
def local_folder(src: SourceParams, section: str, staging: Path, seed: int, progress: bool) -> Path:
    """A class-per-folder tree on disk."""
    if not src.folder:
        raise ParamError(f"{section}.folder must be set when {section}.source is 'folder'")
    folder = Path(src.folder).expanduser()
    if not folder.is_dir():
        raise ParamError(f"{section}.folder={src.folder!r} is not a directory")
    return folder


@SOURCES.register("none")
def no_images(src: SourceParams, section: str, staging: Path, seed: int, progress: bool) -> None:
    """No second domain (shift only): shift evaluation and adaptation are skipped."""
    if section == "data":
        raise ParamError("data.source: none leaves the main domain without images; only shift.source may be none")
    return None


def part_position(name: str, pattern: str | None) -> float:
    """Where a file falls in [0, 1): a hash of its person (`pattern`'s first group) or, without a
    match, of its name. Stable across machines and runs, so disjoint parts never share a person."""
    match = re.search(pattern, name) if pattern else None
    key = match.group(1) if match else name
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def renderer(r: RenderParams):
    """The image transform `r` asks for, or None when it changes nothing."""
    if r.identity:
        return None

    def render(img: Image.Image) -> Image.Image:
        if r.crop < 1.0:
            w, h = img.size
            cw, ch = max(1, round(w * r.crop)), max(1, round(h * r.crop))
            left, top = (w - cw) // 2, (h - ch) // 2
            img = img.crop((left, top, left + cw, top + ch))
        if r.size:
            img = img.resize((r.size, r.size), Image.Resampling.LANCZOS)
        img = img.convert("L").convert("RGB") if r.greyscale else img
        if r.contrast != 1.0:
            img = ImageEnhance.Contrast(img).enhance(r.contrast)
        if r.brightness != 1.0:
            img = ImageEnhance.Brightness(img).enhance(r.brightness)
        return img.filter(ImageFilter.GaussianBlur(r.blur)) if r.blur else img

    return render


def select_classes(result: IntakeResult, src: SourceParams, section: str, images: Path) -> IntakeResult:
    """Rename classes by `class_map` and keep `classes`; left-out images become rejects (files removed)."""
    found = sorted(result.manifest["label"].unique())
    if stray := sorted(set(src.class_map) - set(found)):
        raise ParamError(f"{section}.class_map renames {stray}, which the source does not have (its classes: {', '.join(found)})")
    manifest = result.manifest.assign(label=result.manifest["label"].map(lambda c: src.class_map.get(c, c)))
    if src.classes is None:
        return IntakeResult(manifest, result.rejects)
    if missing := sorted(set(src.classes) - set(manifest["label"])):
        raise ParamError(f"{section}.classes names {missing}, not in the source (its classes after {section}.class_map: "
                         f"{', '.join(sorted(manifest['label'].unique()))})")
    left_out = manifest[~manifest["label"].isin(src.classes)]
    for rel in left_out["path"]:
        (images / rel).unlink()
    rejects = pd.DataFrame({"source": left_out["source"], "reason": [f"class-not-selected: '{c}' is not in {section}.classes" for c in left_out["label"]]})
    rejects = pd.concat([result.rejects, rejects], ignore_index=True).sort_values("source", ignore_index=True)
    return IntakeResult(manifest[manifest["label"].isin(src.classes)].reset_index(drop=True), rejects)


def fetch(src: SourceParams, section: str, out_dir: Path, seed: int, progress: bool = True,
          group_pattern: str | None = None) -> IntakeResult:
    """Bring one domain's images into `out_dir` (normalised JPEGs) and return manifest + rejects.

    `group_pattern` names the person in a file name, so that `part` cuts between people."""
    bring = SOURCES.lookup(src.source, f"{section}.source")
    lo, hi = src.part

    def outside_part(source: str) -> str | None:
        position = part_position(PurePosixPath(source).name, group_pattern)
        return None if lo <= position < hi else f"other-part: outside {section}.part [{lo:g}, {hi:g})"

    with tempfile.TemporaryDirectory(prefix="emopipe-") as staging:
        root = bring(src, section, Path(staging), seed, progress)
        if root is None:
            return IntakeResult(pd.DataFrame(columns=MANIFEST_COLUMNS), pd.DataFrame(columns=REJECT_COLUMNS))
        result = ingest_folder(root, out_dir, progress=progress, exclude=outside_part if (lo, hi) != (0.0, 1.0) else None,
                               render=renderer(src.render))
    return select_classes(result, src, section, out_dir)
