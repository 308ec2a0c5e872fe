"""How often a face was found, per class."""
from __future__ import annotations

import pandas as pd


def detection_rates(manifest: pd.DataFrame, drops: pd.DataFrame | None = None) -> dict[str, float]:
    """Fraction of photos with a face, per class; pass the drops of a ``no_face="drop"`` run too."""
    found = manifest[["label", "face_found"]]
    if drops is not None and len(drops):
        found = pd.concat([found, drops[["label"]].assign(face_found=False)], ignore_index=True)
    rates = found.groupby("label", sort=True)["face_found"].mean()
    return {str(label): round(float(rate), 4) for label, rate in rates.items()}
