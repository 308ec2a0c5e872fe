"""Emotions in a video file or a camera stream: every face of every (n-th) frame, labelled.

Faces are found with the detector the checkpoint records (its `input.faces`; haar for checkpoints
without one) and cropped as the training data was; a frame without a face is predicted on its
centre square, as a still photo is. The annotated video keeps every frame (boxes and labels
of the latest analysed frame drawn on it); the summary holds, per second, the faces seen and
the mean probability of each class.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image

from emopipe.data.faces.detectors import Detector, make_detector
from emopipe.data.faces.geometry import face_crop
from emopipe.data.store import to_tensor
from emopipe.engine.evaluate import predict_proba
from emopipe.errors import UserError
from emopipe.io import atomic_path
from emopipe.modeling.checkpoint import face_settings, load_checkpoint
from emopipe.runtime import select_runtime

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int] | None  # x, y, w, h in frame pixels; None: no face, the centre square
    probs: np.ndarray


def open_capture(source: str | int) -> tuple[cv2.VideoCapture, float]:
    """(the capture, its frames per second); a camera index or a video file, or a one-line UserError."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # our one line replaces OpenCV's warnings
    try:
        capture = cv2.VideoCapture(source)
    finally:
        cv2.utils.logging.setLogLevel(previous)
    if not capture.isOpened():
        what = f"camera {source} cannot be opened (no such device, or in use): check --camera" if isinstance(source, int) else \
            f"{source} cannot be read as a video (missing, or a codec OpenCV lacks): convert it to mp4"
        raise UserError(what)
    fps = capture.get(cv2.CAP_PROP_FPS)
    return capture, fps if fps and math.isfinite(fps) and fps > 0 else 25.0


def frame_faces(frame: Image.Image, model, spec: dict, runtime, detector: Detector | None, trained: dict) -> list[Face]:
    """Every face in the frame with its class probabilities (the centre square when none is found)."""
    found = detector.detect(frame) if detector is not None else []
    crops = [to_tensor(face_crop(frame, box, align=trained["align"], margin=trained["margin"], size=trained["size"]),
                       spec["size"], spec["channels"]) for box in found or [None]]
    probs = predict_proba(model, torch.stack(crops), spec, runtime)
    return [Face((b.x, b.y, b.w, b.h) if b is not None else None, p) for b, p in zip(found or [None], probs)]


def draw(frame_bgr: np.ndarray, faces: list[Face], classes: list[str]) -> None:
    """Box and "label 0.87" over each face (a centre-square prediction is written at the top left)."""
    for face in faces:
        best = int(face.probs.argmax())
        text = f"{classes[best]} {face.probs[best]:.2f}"
        if face.box is None:
            cv2.putText(frame_bgr, f"no face: {text}", (5, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 255), 1, cv2.LINE_AA)
            continue
        x, y, w, h = face.box
        cv2.rectangle(frame_bgr, (x, y), (x + w, y + h), (0, 200, 0), 2)
        cv2.putText(frame_bgr, text, (x, max(12, y - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 200, 0), 1, cv2.LINE_AA)


def per_second(rows: list[dict], classes: list[str]) -> pd.DataFrame:
    """One row per second: frames analysed, faces found, mean class probabilities, the top class."""
    columns = ["second", "frames", "faces", "label"] + [f"p_{c}" for c in classes]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    summary = frame.groupby("second").agg(frames=("frame", "nunique"), faces=("face_found", "sum"),
                                          **{f"p_{c}": (f"p_{c}", "mean") for c in classes}).reset_index()
    summary["label"] = [classes[i] for i in summary[[f"p_{c}" for c in classes]].to_numpy().argmax(1)]
    return summary[columns].round(4)


def predict_video(source: str | int, model_path: Path, video_out: Path | None, *, every: int = 1, faces: bool = True,
                  max_seconds: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per face per analysed frame, the per-second summary); writes the annotated video to
    `video_out` (atomically; mp4v). `every`: analyse every n-th frame; `max_seconds`: stop after
    this much video (a camera runs until then, or until it stops giving frames)."""
    runtime = select_runtime("fp32")
    model, meta = load_checkpoint(model_path, runtime.device)
    spec, classes = meta["input"], meta["classes"]
    trained = face_settings(spec)
    detector = make_detector(trained["detector"]) if faces else None
    capture, fps = open_capture(source)
    rows, latest, index, writer = [], [], 0, None
    try:
        with atomic_path(video_out) if video_out else contextlib.nullcontext() as tmp:
            while max_seconds is None or index < max_seconds * fps:
                ok, bgr = capture.read()
                if not ok:
                    break
                if index % every == 0:
                    latest = frame_faces(Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), model, spec, runtime, detector, trained)
                    rows += [{"frame": index, "second": int(index // fps), "face_found": f.box is not None,
                              "box": ",".join(map(str, f.box)) if f.box else "", "label": classes[int(f.probs.argmax())],
                              **{f"p_{c}": round(float(v), 4) for c, v in zip(classes, f.probs)}} for f in latest]
                if tmp is not None:
                    writer = writer or cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (bgr.shape[1], bgr.shape[0]))
                    draw(bgr, latest, classes)
                    writer.write(bgr)
                index += 1
            if not rows:
                raise UserError(f"{source}: no frame could be read")
            if writer is not None:
                writer.release()
    finally:
        capture.release()
    return pd.DataFrame(rows), per_second(rows, classes)
