"""Classification metrics, one definition for validation and test.

Macro averages run over the classes present in the true labels: a shifted domain may hold a
subset of the classes, and a validation split may miss a rare one. A present class that is
never predicted counts as 0; a class predicted but absent from the labels does not enter the
average (it costs precision of the classes it was confused with, where it belongs).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int):
    return precision_recall_fscore_support(y_true, y_pred, labels=list(range(n_classes)), zero_division=0)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    """Mean F1 over the classes present in `y_true`, rounded to 4 places."""
    _, _, f, support = _per_class(y_true, y_pred, n_classes)
    return round(float(f[support > 0].mean()), 4)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    """accuracy, macro precision/recall/F1 (over the classes present) and per-class precision/recall/F1/support."""
    p, r, f, s = _per_class(y_true, y_pred, len(classes))
    present = s > 0
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_precision": round(float(p[present].mean()), 4),
        "macro_recall": round(float(r[present].mean()), 4),
        "macro_f1": round(float(f[present].mean()), 4),
        "per_class": {
            c: {"precision": round(float(p[i]), 4), "recall": round(float(r[i]), 4), "f1": round(float(f[i]), 4), "support": int(s[i])}
            for i, c in enumerate(classes)
        },
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes)))
