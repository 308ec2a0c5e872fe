"""Predict the emotion in new photos with a trained checkpoint.

    emopipe predict photo.jpg --model models/model.pt
    emopipe predict photos/ --model models/model.pt --csv predictions.csv --top 3
    emopipe predict clip.mp4 --every 5          # annotated video + per-second emotions
    emopipe predict --camera 0 --max-seconds 30 # a webcam

Each photo is decoded like intake does, cropped to its largest face like the faces stage
does (a centre crop when none is found) if the model was trained on face crops (the
checkpoint's input.faces; --faces/--no-faces override it; the output says which applied),
with the same detector, alignment, margin and size (checkpoints from before detector and
align were recorded: haar, unaligned), and resized to the checkpoint's input size. Files that cannot be decoded get an error row
and do not stop the run. Exit status: 0 when at least one photo was predicted, 1 when none
was, 2 for usage errors.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import typer
from rich.console import Console
from rich.table import Table

from emopipe.apps.video import VIDEO_SUFFIXES, predict_video
from emopipe.cli import run
from emopipe.data.faces.crop import find_and_crop
from emopipe.data.faces.detectors import Detector, make_detector
from emopipe.data.intake import IMAGE_SUFFIXES, ImageRejected, load_rgb
from emopipe.data.store import to_tensor
from emopipe.engine.evaluate import predict_proba
from emopipe.errors import UserError
from emopipe.io import atomic_path, write_csv
from emopipe.modeling.checkpoint import face_settings, load_checkpoint
from emopipe.runtime import select_runtime

COLUMNS = ["file", "face_found", "face_box", "label", "probability", "error"]  # then one p_<class> per class
_CHUNK = 256  # photos decoded at a time: bounds memory on large folders

app = typer.Typer(add_completion=False, help=__doc__)


def find_images(target: Path) -> tuple[list[Path], int]:
    """(image files to predict, number of other files skipped).

    A file is taken as it is, whatever its suffix; a folder is walked recursively for files
    with an image suffix (any case), skipping hidden files and folders.
    """
    if target.is_file():
        return [target], 0
    files = sorted(p for p in target.rglob("*") if p.is_file())
    images = [
        p for p in files
        if p.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in p.relative_to(target).parts)
    ]
    return images, len(files) - len(images)


def predict_files(paths: list[Path], model_path: Path, *, faces: bool | None = None) -> pd.DataFrame:
    """One row per path (COLUMNS, then ``p_<class>``); unreadable files get an ``error`` and no label.

    ``faces=None`` crops faces as the model was trained (see `face_cropping`); ``frame.attrs["faces"]``
    says what was done and why. ``face_found`` is NA when detection was skipped or the file is unreadable.
    """
    runtime = select_runtime("fp32")
    model, meta = load_checkpoint(model_path, runtime.device)
    spec, classes = meta["input"], meta["classes"]
    faces, why = face_cropping(spec, faces)
    trained = face_settings(spec)
    detector = make_detector(trained["detector"]) if faces else None
    rows = []
    for start in range(0, len(paths), _CHUNK):
        prepared = [_prepare(Path(path), spec, detector, trained) for path in paths[start : start + _CHUNK]]
        inputs = [pixels for _, pixels in prepared if pixels is not None]
        probs = iter(predict_proba(model, torch.stack(inputs), spec, runtime) if inputs else ())
        for row, pixels in prepared:
            p = next(probs) if pixels is not None else np.full(len(classes), np.nan)
            label = classes[int(p.argmax())] if pixels is not None else ""
            rows.append({**row, "label": label, "probability": float(p.max()), **{f"p_{c}": float(v) for c, v in zip(classes, p)}})
    frame = pd.DataFrame(rows, columns=COLUMNS + [f"p_{c}" for c in classes])
    frame["face_found"] = frame["face_found"].astype("boolean")
    how = f"cropped to the largest face, {trained['detector']}{', aligned' if trained['align'] else ''}" if faces else "not cropped"
    frame.attrs["faces"] = f"{how} ({why})"
    return frame


def face_cropping(spec: dict, faces: bool | None) -> tuple[bool, str]:
    """(crop faces?, why): the user's choice, else the checkpoint's ``input.faces``; off when it has none."""
    if faces is not None:
        return faces, f"--{'faces' if faces else 'no-faces'} given"
    if "faces" not in spec:
        return False, "the checkpoint has no face settings"
    enabled = bool(spec["faces"].get("enabled"))
    return enabled, f"the model was trained {'on' if enabled else 'without'} face crops"


def _prepare(path: Path, spec: dict, detector: Detector | None, trained: dict) -> tuple[dict, torch.Tensor | None]:
    """(the row's file, face and error fields; the model input, None when the file is unusable)."""
    row = {"file": str(path), "face_found": pd.NA, "face_box": "", "error": ""}
    try:
        image = load_rgb(path)
    except ImageRejected as err:
        return {**row, "error": err.reason}, None
    if detector is not None:  # crop as the training data was cropped
        image, box = find_and_crop(image, detector, align=trained["align"], margin=trained["margin"], size=trained["size"])
        row.update(face_found=box is not None, face_box=str(box) if box else "")
    return row, to_tensor(image, spec["size"], spec["channels"])  # as the pack stage does


def top_k(frame: pd.DataFrame, k: int) -> list[str]:
    """Per row, the k most probable classes as "label 0.71, label 0.20"; "" for error rows."""
    prob_columns = [c for c in frame.columns if c.startswith("p_")]
    out = []
    for values in frame[prob_columns].to_numpy(dtype=float):
        if np.isnan(values).any():
            out.append("")
            continue
        best = np.argsort(-values, kind="stable")[:k]
        out.append(", ".join(f"{prob_columns[i][2:]} {values[i]:.2f}" for i in best))
    return out


def _table(frame: pd.DataFrame, k: int, folder: Path | None) -> Table:
    """Files are shown relative to ``folder`` when a folder was given."""
    table = Table(title=f"predictions for {folder}" if folder else "predictions")
    table.add_column("file", overflow="fold")
    table.add_column("face")
    table.add_column("label")
    table.add_column("prob", justify="right")
    table.add_column(f"top {k}")
    table.add_column("error", overflow="fold")
    for (_, row), best in zip(frame.iterrows(), top_k(frame, k)):
        face = "-" if pd.isna(row["face_found"]) else ("yes" if row["face_found"] else "no")
        prob = "" if row["error"] else f"{row['probability']:.2f}"
        file = Path(row["file"]).relative_to(folder).as_posix() if folder else row["file"]
        table.add_row(file, face, row["label"], prob, best, row["error"], style="red" if row["error"] else None)
    return table


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@app.command(help=__doc__)
def main(
    target: Path | None = typer.Argument(None, help="an image file, a folder searched recursively for images, or a video file"),
    model: Path = typer.Option(Path("models/model.pt"), help="checkpoint from the train or adapt stage"),
    csv: Path | None = typer.Option(None, help="also write every prediction, with all class probabilities, as CSV "
                                    "(video: the per-second summary; default <video>.emotions.csv)"),
    json_out: Path | None = typer.Option(None, "--json", help="the same as a JSON list of records"),
    faces: bool | None = typer.Option(None, "--faces/--no-faces", help="crop the largest face first (default: as the model was trained; "
                                      "video: detect every face unless --no-faces)"),
    top: int = typer.Option(3, min=1, help="number of most probable classes to show per photo"),
    camera: int | None = typer.Option(None, help="read this camera (index, e.g. 0) instead of TARGET"),
    video_out: Path | None = typer.Option(None, help="annotated video (default <video>.annotated.mp4, camera-N.annotated.mp4)"),
    every: int = typer.Option(1, min=1, help="video: analyse every n-th frame (faster; the others show the latest labels)"),
    max_seconds: float | None = typer.Option(None, min=0.1, help="video: stop after this many seconds (a camera: required to stop)"),
) -> None:
    if target is None and camera is None:
        raise _fail("Missing argument 'TARGET': pass an image file, a folder of images, a video file or --camera N", 2)
    if not model.is_file():
        raise _fail(f"model checkpoint {model} not found: train one (`dvc repro`) or pass --model", 2)
    if camera is not None or target.suffix.lower() in VIDEO_SUFFIXES:
        raise typer.Exit(_video(target, camera, model, csv, json_out, faces, video_out, every, max_seconds))
    if not target.exists():
        raise _fail(f"{target} does not exist: pass an image file or a folder of images", 2)
    paths, skipped = find_images(target)
    if not paths:
        raise _fail(f"no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {target}", 1)

    try:
        frame = predict_files(paths, model, faces=faces)
    except UserError as err:  # e.g. a checkpoint cropped with mtcnn, facenet-pytorch not installed
        raise _fail(str(err), 2) from None
    Console().print(_table(frame, top, target if target.is_dir() else None))
    typer.echo(f"faces: {frame.attrs['faces']}")
    _write(frame, csv, json_out)
    predicted = int((frame["error"] == "").sum())
    note = f"; skipped {skipped} non-image or hidden file(s)" if skipped else ""
    typer.echo(f"predicted {predicted} of {len(frame)} photo(s), {len(frame) - predicted} unreadable{note}")
    raise typer.Exit(0 if predicted else 1)


def _write(frame: pd.DataFrame, csv: Path | None, json_out: Path | None) -> None:
    if csv:
        write_csv(csv, frame)
    if json_out:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(json.loads(frame.to_json(orient="records")), indent=2) + "\n")


def _video(target: Path | None, camera: int | None, model: Path, csv: Path | None, json_out: Path | None, faces: bool | None,
           video_out: Path | None, every: int, max_seconds: float | None) -> int:
    """A video file or a camera: annotated video and per-second emotions; the exit status."""
    if camera is None and not target.is_file():
        raise _fail(f"{target} does not exist: pass a video file", 2)
    stem = Path(f"camera-{camera}") if camera is not None else target.with_suffix("")
    video_out = video_out or stem.with_name(stem.name + ".annotated.mp4")
    csv = csv or stem.with_name(stem.name + ".emotions.csv")
    try:
        detections, seconds = predict_video(camera if camera is not None else str(target), model, video_out, every=every,
                                            faces=faces is not False, max_seconds=max_seconds)
    except UserError as err:
        raise _fail(str(err), 2) from None
    _write(seconds, csv, json_out)
    Console().print(seconds.to_string(index=False))
    typer.echo(f"{detections['frame'].nunique()} frames analysed, {int(detections['face_found'].sum())} faces; "
               f"annotated video {video_out}, per-second emotions {csv}")
    return 0


if __name__ == "__main__":
    run(app)
