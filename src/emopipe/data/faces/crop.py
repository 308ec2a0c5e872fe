"""Cropping faces: one photo (`find_and_crop`, which predict shares), or a domain's manifest into
a folder of crops (`crop_folder`, the faces stage). Crops are cached by the source pixels' hash,
the crop settings and the detector's version, so re-running the stage on unchanged inputs
neither decodes an image nor runs a detector.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from emopipe.data.faces.detectors import Detector, make_detector, require_landmarks
from emopipe.data.faces.geometry import FaceBox, face_crop
from emopipe.data.intake import load_rgb, unique_name
from emopipe.io import atomic_path

NO_FACE_POLICIES = ("keep", "drop")
DROP_COLUMNS = ["image", "label", "reason"]
_JPEG_QUALITY = 95


def find_and_crop(image: Image.Image, detector: Detector, *, align: bool, margin: float,
                  size: int) -> tuple[Image.Image, FaceBox | None]:
    """(the crop of the largest face, aligned if asked; that face's box in source pixels, None
    when there is none and the crop is the centre square): the faces stage and predict share it."""
    require_landmarks(detector, align)
    found = detector.detect(image)
    box = found[0] if found else None
    return face_crop(image, box, align=align, margin=margin, size=size), box


def crop_folder(
    manifest: pd.DataFrame,
    out_dir: Path,
    *,
    no_face: str,
    margin: float,
    size: int,
    detector: str,
    align: bool,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Crop the largest face of every ``image`` in ``manifest`` into ``out_dir/<label>/<name>.jpg``.

    Returns (the manifest with ``image`` pointing at the crop, plus ``face_found`` and
    ``face_box`` "x,y,w,h" or ""; the drops, DROP_COLUMNS). ``no_face`` "keep" centre-crops
    photos without a face, "drop" leaves them out. ``detector`` names one of `DETECTORS`;
    ``align`` levels the eyes first (mtcnn only). ``out_dir`` is replaced as a whole, so no
    stale crop survives a re-run.
    """
    if no_face not in NO_FACE_POLICIES:
        raise ValueError(f"faces.no_face={no_face!r} is not one of: {', '.join(NO_FACE_POLICIES)}")
    missing = [c for c in ("image", "label", "sha256") if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}; expected image, label and sha256")

    out_dir = Path(out_dir)
    finder = make_detector(detector)
    require_landmarks(finder, align)
    kept, images, boxes, drops = [], [], [], []
    taken: set[str] = set()
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        rows = manifest[["image", "label", "sha256"]].itertuples(index=False)
        for source, label, sha256 in tqdm(rows, total=len(manifest), desc="faces", unit="img", disable=not progress):
            cached = _CachedCrop(Path(cache_dir), sha256, margin, size, finder.version, align) if cache_dir else None
            if cached and cached.exists():
                crop, box = None, cached.box()
            else:
                crop, box = find_and_crop(load_rgb(Path(source)), finder, align=align, margin=margin, size=size)
                if cached:
                    cached.store(crop, box)
            kept.append(box is not None or no_face == "keep")
            if not kept[-1]:
                drops.append((source, label, "no-face"))
                continue
            target = tmp / unique_name(label, Path(source).stem, taken)
            target.parent.mkdir(exist_ok=True)
            if cached:
                shutil.copyfile(cached.jpeg, target)
            else:
                _save_jpeg(crop, target)
            images.append(str(out_dir / target.relative_to(tmp)))
            boxes.append(str(box) if box else "")

    cropped = manifest[np.array(kept, dtype=bool)].reset_index(drop=True)
    cropped["image"] = images
    cropped["face_found"] = np.array([b != "" for b in boxes], dtype=bool)
    cropped["face_box"] = boxes
    return cropped, pd.DataFrame(drops, columns=DROP_COLUMNS)


class _CachedCrop:
    """One crop in the cache: ``<key>.jpg`` plus ``<key>.json`` (the face box), written in that order."""

    def __init__(self, cache_dir: Path, sha256: str, margin: float, size: int, detector_version: str, align: bool = False):
        settings = [sha256, float(margin), int(size), detector_version] + (["aligned"] if align else [])  # unaligned keys as before
        key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()
        self.jpeg = cache_dir / f"{key}.jpg"
        self.meta = cache_dir / f"{key}.json"

    def exists(self) -> bool:
        return self.meta.exists() and self.jpeg.exists()

    def box(self) -> FaceBox | None:
        text = json.loads(self.meta.read_text())["face_box"]
        return FaceBox.parse(text) if text else None

    def store(self, crop: Image.Image, box: FaceBox | None) -> None:
        with atomic_path(self.jpeg) as tmp:
            _save_jpeg(crop, tmp)
        with atomic_path(self.meta) as tmp:
            tmp.write_text(json.dumps({"face_box": str(box) if box else ""}))


def _save_jpeg(image: Image.Image, path: Path) -> None:
    image.save(path, "JPEG", quality=_JPEG_QUALITY)

