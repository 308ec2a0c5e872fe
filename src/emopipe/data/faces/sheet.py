"""Contact sheets: a PNG grid of sample crops per class, framed by whether a face was found."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from emopipe.data.faces.stats import detection_rates
from emopipe.io import atomic_path


def contact_sheet(manifest: pd.DataFrame, path: Path, per_class: int = 8, seed: int = 0, drops: pd.DataFrame | None = None) -> None:
    """PNG grid of sample crops, one row per class, framed green (face found) or red (centre crop).

    Without a ``face_found`` column (face cropping disabled) it shows the images as they are; a
    domain without images (``shift.source: none``) gets a sheet that says so.
    """
    from matplotlib.figure import Figure  # ~0.6 s to import: only the faces stage draws

    if manifest.empty:
        fig = Figure(figsize=(4, 1))
        fig.text(0.5, 0.5, "no images in this domain", ha="center", va="center")
        return _save_png(fig, path)
    detected = "face_found" in manifest.columns
    rates = detection_rates(manifest, drops) if detected else {}
    classes = sorted(manifest["label"].unique())
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(1.4 * per_class + 1.2, 1.5 * len(classes)))
    axes = fig.subplots(len(classes), per_class, squeeze=False)
    for row, label in zip(axes, classes):
        rows = manifest[manifest["label"] == label]
        picks = np.sort(rng.choice(len(rows), size=min(per_class, len(rows)), replace=False))
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
        for ax, (_, item) in zip(row, rows.iloc[picks].iterrows()):
            with Image.open(item["image"]) as img:
                ax.imshow(np.asarray(img.convert("RGB")))
            ax.set_frame_on(detected)
            for spine in ax.spines.values():
                spine.set_color("tab:green" if detected and item["face_found"] else "tab:red")
                spine.set_linewidth(2)
        found = f"{rates[label]:.0%} faces\n" if detected else ""
        row[0].set_ylabel(f"{label}\n{found}(n={len(rows)})", rotation=0, ha="right", va="center")
    fig.suptitle("face crops: green = face found, red = centre crop (no face)" if detected else "sample images (face cropping disabled)")
    _save_png(fig, path)


def _save_png(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
