"""Intake: turn a class-per-folder tree of photos into normalised JPEGs + a manifest.

Nothing is silently dropped: every file under ``src`` ends up either in the
manifest or in the rejects table with a reason ``"<code>: <detail>"``. Codes:

    hidden               dot-files/folders, __MACOSX, Thumbs.db, desktop.ini
    no-class-folder      file directly in ``src`` (or in a split folder, see below)
    not-a-file           symlinked folder (not followed), broken link, FIFO, ...
    not-an-image-suffix  suffix not in IMAGE_SUFFIXES
    empty                zero-byte file
    unreadable           OS error while reading (permissions, I/O)
    not-an-image         content is not JPEG/PNG/WebP/BMP/GIF
    corrupt              looks like an accepted format but cannot be decoded
    truncated            file ends before the image data does
    decompression-bomb   header claims more pixels than ``MAX_PIXELS`` (larger than any camera)
    unsupported          valid file using a feature/mode we cannot decode
    other-part           outside the domain's ``part`` of a shared folder (set by ``sources``)
    class-not-selected   class left out by the domain's ``classes`` (set by ``sources``)

A source that ships its own splits (``src/train/<class>/``, ``src/test/<class>/``, optionally
``val``/``validation``; any case: `source_splits`) is read through its split folders: the class is
the folder inside, and the manifest gains a ``source_split`` column (train, val or test).

Only JPEG/PNG/WebP/BMP/GIF decoders are used, whatever the suffix says: this keeps
PIL away from exotic plugins (e.g. EPS would shell out to Ghostscript). Large photos
(48–200 MP phones) are kept: they are decoded with bounded memory to at most
``MAX_DECODED_SIDE`` pixels on their longest side.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import imagehash
import numpy as np
import pandas as pd
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from emopipe.errors import IntakeError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".jfif", ".bmp", ".gif"})
MANIFEST_COLUMNS = ["path", "label", "source", "sha256", "phash", "width", "height"]
REJECT_COLUMNS = ["source", "reason"]
# Folder names of a source's own splits (compared lower-case) -> the split they hold.
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test"}

_HIDDEN_NAMES = frozenset({"__macosx", "thumbs.db", "desktop.ini"})
_DECODERS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")  # JPEG also yields multi-picture MPO
# Leading bytes of the accepted formats: an unidentifiable file that starts like one
# of these is a damaged image ("corrupt"); anything else is "not-an-image".
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"BM": "BMP",
}
_JPEG_QUALITY = 95
# A header claiming more pixels than this is a decompression bomb, not a photo: the largest
# camera sensors (phones included) take about 200 MP.
MAX_PIXELS = 250_000_000
# Longest side of a decoded image. Bounds memory for 48–200 MP photos (a JPEG is decoded at
# 1/2, 1/4 or 1/8 scale right away); intake keeps at most 1024 px and later stages need no more.
MAX_DECODED_SIDE = 4096
_REJECT_EXAMPLES = 3


class ImageRejected(IntakeError):
    """A single file cannot be used; ``reason`` is the ``"<code>: <detail>"`` for the rejects table."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class IntakeResult:
    manifest: pd.DataFrame  # MANIFEST_COLUMNS, sorted by source
    rejects: pd.DataFrame  # REJECT_COLUMNS, sorted by source


def load_rgb(path: Path, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode ``path`` into an upright RGB image (first frame, alpha composited on white).

    Images whose header claims more than ``max_pixels`` are rejected before any decoding;
    larger than ``MAX_DECODED_SIDE`` ones are downscaled to it.

    Raises ImageRejected (an IntakeError) with a ``reason`` for anything unusable.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageRejected(path, "empty: zero-byte file")
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise ImageRejected(path, f"unreadable: {e.strerror or e}") from e

    with _strict_decoding(max_pixels):
        try:
            img = Image.open(path, formats=_DECODERS)
        except UnidentifiedImageError as e:
            raise ImageRejected(path, _unidentified_reason(head)) from e
        except Exception as e:  # untrusted bytes: any parser failure is a reject, never a crash
            raise ImageRejected(path, _decode_reason(e)) from e
        with img:
            if img.width * img.height > max_pixels:
                raise ImageRejected(
                    path,
                    f"decompression-bomb: {img.width}x{img.height} = {img.width * img.height:,} pixels > {max_pixels:,}",
                )
            try:
                if max(img.size) > MAX_DECODED_SIDE:
                    img.draft("RGB", _draft_size(img.size))  # JPEG: decode at a reduced scale; others: no-op
                img.load()  # first frame of animations; raises on truncated data
                upright = ImageOps.exif_transpose(img)
            except Exception as e:
                raise ImageRejected(path, _decode_reason(e)) from e
    try:
        rgb = _to_rgb(upright)
    except (ValueError, OSError) as e:
        raise ImageRejected(path, f"unsupported: cannot convert mode {upright.mode} to RGB ({e})") from e
    rgb.thumbnail((MAX_DECODED_SIDE, MAX_DECODED_SIDE), Image.Resampling.LANCZOS)  # shrinks only
    return rgb


def ingest_folder(
    src: Path,
    out_dir: Path,
    *,
    max_side: int = 1024,
    max_pixels: int = MAX_PIXELS,
    progress: bool = True,
    exclude: Callable[[str], str | None] | None = None,
    render: Callable[[Image.Image], Image.Image] | None = None,
) -> IntakeResult:
    """Normalise every image under ``src/<class>/**`` into ``out_dir/<class>/<slug>-<sha8>.jpg``.

    ``out_dir`` must be missing or empty, so no stale images survive from an older run.
    Exact duplicates are kept (the split stage groups them); output is deterministic.
    ``exclude(source)`` may give a reject reason from the relative path alone (e.g. another domain's
    part of the folder); ``render`` re-renders each decoded image before it is hashed and saved.
    """
    src, out_dir = Path(src), Path(out_dir)
    splits = source_splits(src)
    depth = 1 if splits else 0  # path components above the class folder
    classes = sorted({c for folder in splits for c in _class_folders(src / folder)}) if splits else _class_folders(src)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise IntakeError(f"output folder {out_dir} is not empty; remove it or pick another one")

    rejects: list[tuple[str, str]] = []
    candidates: list[tuple[Path, str, str]] = []  # (file, source, label)
    for file in _walk(src):
        source = file.relative_to(src).as_posix()
        reason = _early_reject_reason(file, source, depth) or (exclude(source) if exclude else None)
        if reason:
            rejects.append((source, reason))
        else:
            candidates.append((file, source, source.split("/")[depth]))
    _check_classes(src, classes, {label for _, _, label in candidates}, rejects, depth)

    rows = []
    taken: set[str] = set()
    for file, source, label in tqdm(candidates, desc="intake", unit="img", disable=not progress):
        try:
            img = load_rgb(file, max_pixels=max_pixels)
        except ImageRejected as e:
            rejects.append((source, e.reason))
            continue
        img = render(img) if render else img
        sha256 = _pixel_sha256(img)
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        rel = unique_name(label, f"{_slug(file.stem)}-{sha256[:8]}", taken)  # numbered if a.png + a.bmp share pixels
        (out_dir / label).mkdir(parents=True, exist_ok=True)
        img.save(out_dir / rel, "JPEG", quality=_JPEG_QUALITY)
        rows.append((rel, label, source, sha256, str(imagehash.phash(img)), img.width, img.height))
    _check_classes(src, classes, {row[1] for row in rows}, rejects, depth)

    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("source", ignore_index=True)
    if splits:
        manifest["source_split"] = [splits[s.split("/", 1)[0]] for s in manifest["source"]]
    rejects_df = pd.DataFrame(rejects, columns=REJECT_COLUMNS).sort_values("source", ignore_index=True)
    return IntakeResult(manifest=manifest, rejects=rejects_df)


@contextmanager
def _strict_decoding(max_pixels: int) -> Iterator[None]:
    """Refuse truncated files; PIL's own bomb limit becomes ``max_pixels``. Restores global state.

    PIL only warns between its limit and twice that: the warning is silenced because
    ``load_rgb`` rejects every header over ``max_pixels`` itself, before decoding.
    """
    previous = ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS
    ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = False, max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS = previous


def _draft_size(size: tuple[int, int]) -> tuple[int, int]:
    """The size ``size`` has when shrunk to ``MAX_DECODED_SIDE`` on its longest side (a JPEG draft decodes at least this)."""
    scale = MAX_DECODED_SIDE / max(size)
    return max(1, math.ceil(size[0] * scale)), max(1, math.ceil(size[1] * scale))


def _unidentified_reason(head: bytes) -> str:
    fmt = "WEBP" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else None
    fmt = fmt or next((name for sig, name in _SIGNATURES.items() if head.startswith(sig)), None)
    if fmt:
        return f"corrupt: starts like {fmt} but cannot be identified"
    return "not-an-image: content is not JPEG, PNG, WebP, BMP or GIF"


def _decode_reason(e: Exception) -> str:
    message = str(e) or type(e).__name__
    lowered = message.lower()
    if isinstance(e, Image.DecompressionBombError):  # over twice max_pixels: PIL refuses in Image.open
        return f"decompression-bomb: {message}"
    if "truncated" in lowered:
        return f"truncated: {message}"
    if "unsupported" in lowered or "not supported" in lowered or "not available" in lowered:
        return f"unsupported: {message}"
    return f"corrupt: {message}"


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to RGB.

    16/32-bit integer modes are scaled from 0..65535 (PIL's own convert would clip at 255,
    turning most 16-bit photos white); float mode is taken as 0..255 and clipped.
    """
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        values = np.asarray(img, dtype=np.float64)
        if img.mode != "F":
            values = values / 257.0
        gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _pixel_sha256(img: Image.Image) -> str:
    """Hash of size + decoded RGB pixels, so one picture hashes the same in any lossless format."""
    digest = hashlib.sha256(f"{img.width}x{img.height}:".encode())
    digest.update(img.tobytes())
    return digest.hexdigest()


def source_splits(src: Path) -> dict[str, str]:
    """{folder: split} when every visible folder in `src` names a split (`SPLIT_FOLDERS`, any case) and
    train and test are among them (a source with its own splits, e.g. FER2013's); else {}."""
    if not src.is_dir():
        return {}
    folders = [e.name for e in _scan(src) if e.is_dir(follow_symlinks=False) and not _is_hidden(e.name)]
    splits = {f: SPLIT_FOLDERS.get(f.lower()) for f in folders}
    if None in splits.values() or not {"train", "test"} <= set(splits.values()):
        return {}
    if len(set(splits.values())) < len(splits):
        raise IntakeError(f"source folder {src} has two folders for one split ({', '.join(sorted(folders))}); keep one of each")
    return splits


def _class_folders(src: Path) -> list[str]:
    if not src.is_dir():
        raise IntakeError(f"source folder {src} does not exist or is not a folder")
    classes = [e.name for e in _scan(src) if e.is_dir(follow_symlinks=False) and not _is_hidden(e.name)]
    if not classes:
        raise IntakeError(f"source folder {src} has no class sub-folders; expected {src}/<class>/<images>")
    return classes


def _walk(folder: Path) -> Iterator[Path]:
    """Every non-folder entry below ``folder``, sorted; folder symlinks are yielded, not followed."""
    for entry in _scan(folder):
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(Path(entry.path))
        else:
            yield Path(entry.path)


def _scan(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda entry: entry.name)
    except OSError as e:
        raise IntakeError(f"cannot list folder {folder}: {e.strerror or e}; fix its permissions") from e


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in _HIDDEN_NAMES


def _early_reject_reason(file: Path, source: str, depth: int = 0) -> str | None:
    """Reason to reject ``file`` from its name and type alone, or None if it must be decoded.
    ``depth``: folders above the class folder (1 in a source with its own splits)."""
    *folders, name = source.split("/")
    hidden_folder = next((part for part in folders if _is_hidden(part)), None)
    if hidden_folder:
        return f"hidden: inside hidden folder '{hidden_folder}'"
    if _is_hidden(name):
        return f"hidden: '{name}'"
    if not file.is_file():
        kind = "link to a folder (not followed)" if file.is_dir() else "broken link or special file"
        return f"not-a-file: {kind}"
    if len(folders) <= depth:
        return "no-class-folder: files must be inside a class sub-folder"
    if file.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not-an-image-suffix: '{file.suffix}'" if file.suffix else "not-an-image-suffix: no suffix"
    return None


def _check_classes(src: Path, classes: list[str], usable: set[str], rejects: list[tuple[str, str]], depth: int = 0) -> None:
    problems = []
    for label in classes:
        if label in usable:
            continue
        own = sorted((s, r) for s, r in rejects if s.split("/")[depth:depth + 1] == [label] and s.count("/") > depth)
        examples = ", ".join(f"'{s}' {r.split(':', 1)[0]}" for s, r in own[:_REJECT_EXAMPLES])
        more = ", ..." if len(own) > _REJECT_EXAMPLES else ""
        detail = f"{len(own)} rejected: {examples}{more}" if own else "it contains no files"
        problems.append(f"class folder '{label}' in {src} has no usable images ({detail}); remove it or add images")
    if problems:
        raise IntakeError("; ".join(problems))


def _slug(stem: str) -> str:
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_stem.lower()).strip("-")[:60].rstrip("-")
    return slug or "image"


def unique_name(label: str, stem: str, taken: set[str]) -> str:
    """``<label>/<stem>.jpg``, numbered (``-2``, ...) when the name is taken already."""
    rel, n = f"{label}/{stem}.jpg", 1
    while rel.lower() in taken:  # lower(): stay unique on case-insensitive filesystems
        n += 1
        rel = f"{label}/{stem}-{n}.jpg"
    taken.add(rel.lower())
    return rel
