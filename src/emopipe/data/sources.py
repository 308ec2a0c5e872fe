"""Where a domain's images come from: generated faces, the Kaggle set, or a local folder.

Every source ends in the same intake (`ingest_folder`), so generated and real photos take
one code path from here on.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from emopipe.data import kaggle, synthetic
from emopipe.data.intake import IntakeResult, ingest_folder
from emopipe.config import SourceParams
from emopipe.errors import ParamError


def source_folder(src: SourceParams, section: str, staging: Path, seed: int, progress: bool) -> Path:
    """The class-per-folder tree for this source (generated into `staging` when synthetic)."""
    if src.source == "synthetic":
        try:
            synthetic.generate(staging, src.synthetic_counts, domain=src.synthetic_domain, size=src.synthetic_size,
                               seed=seed, label_noise=src.label_noise, severity=src.synthetic_severity,
                               progress=progress)
        except ValueError as err:
            raise ParamError(f"{section}.synthetic_counts / {section}.synthetic_domain: {err}") from None
        return staging
    if src.source == "kaggle":
        return kaggle.download(src.kaggle_handle, sub_path=src.kaggle_sub_path)
    folder = Path(src.folder).expanduser()
    if not folder.is_dir():
        raise ParamError(f"{section}.folder={src.folder!r} is not a directory")
    return folder


def fetch(src: SourceParams, section: str, out_dir: Path, seed: int, progress: bool = True) -> IntakeResult:
    """Bring one domain's images into `out_dir` (normalised JPEGs) and return manifest + rejects."""
    with tempfile.TemporaryDirectory(prefix="emopipe-") as staging:
        root = source_folder(src, section, Path(staging), seed, progress)
        return ingest_folder(root, out_dir, progress=progress)
