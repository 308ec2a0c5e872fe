"""metrics/data.json: what the data looks like after intake, face cropping and splitting."""
from __future__ import annotations

import numpy as np
import pandas as pd

from emopipe.data.dedup import group_report
from emopipe.data.split import count_table


def reason_counts(rejects: pd.DataFrame) -> dict[str, int]:
    """{'total': n, '<reason code>': n, ...}; codes are the part of a reason before ':'."""
    codes = rejects["reason"].astype(str).str.split(":").str[0].value_counts().sort_index()
    return {"total": len(rejects), **{k: int(v) for k, v in codes.items()}}


def detection_table(frame: pd.DataFrame) -> dict[str, dict[str, float]]:
    """{split: {class: fraction of images where a face was found}}."""
    return {
        split: {label: round(float(rate), 4) for label, rate in part.groupby("label")["face_found"].mean().items()}
        for split, part in frame.groupby("split", sort=False)
    }


def data_report(main: pd.DataFrame, shift: pd.DataFrame, rejects: dict[str, pd.DataFrame], drops: dict[str, pd.DataFrame]) -> dict:
    """Counts per class and split, duplicates, rejects by reason, and face detection rates."""
    report = {
        "classes": int(main["label"].nunique()),
        "images": {"main": len(main), "shift": len(shift)},
        "near_duplicates": {d: int(len(f) - f["duplicate_group"].nunique()) for d, f in (("main", main), ("shift", shift))},
        "duplicate_groups": {d: group_report(f["duplicate_group"].to_numpy(dtype=np.int64), f["label"], f["sha256"], f["source"])
                             for d, f in (("main", main), ("shift", shift))},
        "rejected": {d: reason_counts(r) for d, r in rejects.items()},
        "counts": count_table(main),
        "shift_counts": count_table(shift),
    }
    if "face_found" in main.columns:
        report["faces"] = {
            "dropped": {d: len(f) for d, f in drops.items()},
            "detection_rate": {d: round(float(f["face_found"].mean()), 4) for d, f in (("main", main), ("shift", shift)) if len(f)},
            "detection_rate_per_split": detection_table(main),
            "shift_detection_rate_per_split": detection_table(shift),
        }
    return report
