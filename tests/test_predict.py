"""predict: new photos of any format in, a table and CSV/JSON out; bad files never stop the run."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook
from PIL import Image
from typer.testing import CliRunner

from emopipe.apps.predict import app, find_images, predict_files
from emopipe.data.faces import geometry
from emopipe.data.faces.detectors import DETECTORS, FaceDetector
from emopipe.data.faces.geometry import FaceBox
from emopipe.errors import MissingFileError
from emopipe.modeling import checkpoint, models

CLASSES = ["a", "b", "c"]
runner = CliRunner()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    faces = {"enabled": True, "margin": 0.25, "size": 160}
    checkpoint.save_checkpoint(path, models.build("small", 3), "small", {}, CLASSES, checkpoint.input_spec(48, 3, faces))
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A real face in PNG, JPEG (upper-case suffix, in a sub-folder), WebP, greyscale; a corrupt JPEG; notes."""
    folder = tmp_path_factory.mktemp("photos")
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as img:
        face = img.convert("RGB")
    face.save(folder / "face.png")
    (folder / "sub").mkdir()
    face.save(folder / "sub" / "face.JPG")
    face.save(folder / "face.webp")
    face.convert("L").save(folder / "grey.png")
    Image.new("RGB", (64, 40), (200, 120, 90)).save(folder / "plain.bmp")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    (folder / "notes.txt").write_text("not a photo")
    (folder / ".hidden.png").write_bytes(b"")
    return folder


def files(folder: Path, *names: str) -> list[Path]:
    return [folder / name for name in names]


def test_find_images_walks_folders_by_suffix(photos):
    images, skipped = find_images(photos)
    assert [p.relative_to(photos).as_posix() for p in images] == [
        "broken.jpg", "face.png", "face.webp", "grey.png", "plain.bmp", "sub/face.JPG"]
    assert skipped == 2  # notes.txt, .hidden.png
    assert find_images(photos / "notes.txt") == ([photos / "notes.txt"], 0)


def test_predict_files(photos, model_path):
    paths = files(photos, "face.png", "sub/face.JPG", "face.webp", "grey.png", "plain.bmp", "broken.jpg")
    frame = predict_files(paths, model_path)
    assert frame["file"].tolist() == [str(p) for p in paths]
    assert list(frame.columns) == ["file", "face_found", "face_box", "label", "probability", "error", "p_a", "p_b", "p_c"]
    ok, bad = frame.iloc[:5], frame.iloc[5]
    assert (ok["error"] == "").all() and ok["label"].isin(CLASSES).all()
    probs = ok[["p_a", "p_b", "p_c"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(ok["probability"], probs.max(axis=1))
    assert ok["face_found"].tolist() == [True, True, True, True, False]
    assert ok["face_box"].iloc[0] and ok["face_box"].iloc[4] == ""
    assert bad["error"].startswith("corrupt") and bad["label"] == "" and pd.isna(bad["face_found"])
    assert np.isnan(bad[["p_a", "p_b", "p_c"]].to_numpy(dtype=float)).all()


def test_no_faces_skips_detection(photos, model_path):
    frame = predict_files(files(photos, "face.png", "sub/face.JPG"), model_path, faces=False)
    assert frame["face_found"].isna().all() and (frame["face_box"] == "").all()
    png, jpeg = frame[["p_a", "p_b", "p_c"]].to_numpy()
    assert np.allclose(png, jpeg, atol=0.02)  # same photo, PNG vs JPEG


def test_greyscale_checkpoint(tmp_path, photos):
    path = tmp_path / "grey.pt"
    checkpoint.save_checkpoint(path, models.build("small", 2, in_channels=1), "small", {}, ["x", "y"], checkpoint.input_spec(32, 1))
    frame = predict_files(files(photos, "face.webp"), path)
    assert frame["label"].iloc[0] in ("x", "y") and frame["p_x"].iloc[0] + frame["p_y"].iloc[0] == pytest.approx(1.0)


def test_cli_folder_with_csv_and_json(tmp_path, photos, model_path):
    csv, js = tmp_path / "out" / "pred.csv", tmp_path / "out" / "pred.json"
    done = runner.invoke(app, [str(photos), "--model", str(model_path), "--csv", str(csv), "--json", str(js), "--top", "2"])
    assert done.exit_code == 0, done.output
    assert "predicted 5 of 6 photo(s), 1 unreadable; skipped 2" in done.output
    assert "faces: cropped to the largest face, haar (the model was trained on face crops)" in done.output
    assert "corrupt" in done.output and "top 2" in done.output
    table = pd.read_csv(csv, keep_default_na=False)
    assert len(table) == 6 and {"p_a", "p_b", "p_c", "error"} <= set(table.columns)
    records = json.loads(js.read_text())
    assert len(records) == 6
    broken = next(r for r in records if r["file"].endswith("broken.jpg"))
    assert broken["error"].startswith("corrupt") and broken["p_a"] is None and broken["face_found"] is None
    good = [r for r in records if not r["error"]]
    assert all(abs(r["p_a"] + r["p_b"] + r["p_c"] - 1) < 1e-5 for r in good)
    assert sorted(p.name for p in csv.parent.iterdir()) == ["pred.csv", "pred.json"]  # no temp files left


def test_cli_single_file_without_faces(photos, model_path):
    done = runner.invoke(app, [str(photos / "grey.png"), "--model", str(model_path), "--no-faces"])
    assert done.exit_code == 0, done.output
    assert "predicted 1 of 1 photo(s)" in done.output
    assert "faces: not cropped (--no-faces given)" in done.output


def test_cli_exits_1_when_nothing_could_be_predicted(tmp_path, photos, model_path):
    done = runner.invoke(app, [str(photos / "broken.jpg"), "--model", str(model_path)])
    assert done.exit_code == 1
    assert "predicted 0 of 1" in done.output
    empty = tmp_path / "empty"
    empty.mkdir()
    done = runner.invoke(app, [str(empty), "--model", str(model_path)])
    assert done.exit_code == 1 and "error: no image files" in done.output


@pytest.mark.parametrize("args, needle", [
    (["{photos}", "--model", "{tmp}/missing.pt"], "error: model checkpoint"),
    (["{tmp}/nowhere", "--model", "{model}"], "nowhere does not exist"),
    (["{photos}", "--model", "{model}", "--top", "0"], "top"),
    ([], "Missing argument"),
])
def test_cli_usage_errors_exit_2(tmp_path, photos, model_path, args, needle):
    args = [a.format(photos=photos, tmp=tmp_path, model=model_path) for a in args]
    done = runner.invoke(app, args)
    assert done.exit_code == 2
    assert needle in done.output


def test_predict_crops_as_the_model_was_trained(tmp_path, monkeypatch):
    """A checkpoint trained without face cropping is not face-cropped at prediction time."""
    from emopipe.apps import predict as predict_module
    from emopipe.modeling.checkpoint import input_spec, save_checkpoint
    from emopipe.modeling.models import build

    calls = []
    monkeypatch.setattr(FaceDetector, "detect", lambda self, image: calls.append(1) or [])
    Image.new("RGB", (64, 64), (120, 90, 60)).save(tmp_path / "x.png")
    for enabled, expected in ((False, 0), (True, 1)):
        path = tmp_path / f"m{enabled}.pt"
        save_checkpoint(path, build("small", 2), "small", {}, ["a", "b"], input_spec(48, 3, {"enabled": enabled, "margin": 0.2, "size": 96}))
        calls.clear()
        frame = predict_module.predict_files([tmp_path / "x.png"], path)
        assert len(calls) == expected and frame["label"].iloc[0] in ("a", "b")


def test_checkpoint_without_face_settings_is_not_face_cropped(tmp_path, photos, monkeypatch):
    calls = []
    monkeypatch.setattr(FaceDetector, "detect", lambda self, image: calls.append(1) or [])
    path = tmp_path / "plain.pt"
    checkpoint.save_checkpoint(path, models.build("small", 3), "small", {}, CLASSES, checkpoint.input_spec(48, 3))
    frame = predict_files(files(photos, "face.png"), path)
    assert calls == [] and frame["face_found"].isna().all()
    assert frame.attrs["faces"] == "not cropped (the checkpoint has no face settings)"
    done = runner.invoke(app, [str(photos / "face.png"), "--model", str(path)])
    assert done.exit_code == 0 and "faces: not cropped (the checkpoint has no face settings)" in done.output
    forced = runner.invoke(app, [str(photos / "face.png"), "--model", str(path), "--faces"])
    assert forced.exit_code == 0 and "faces: cropped to the largest face, haar (--faces given)" in forced.output
    assert calls == [1]


class RecordingDetector:
    """Stands in for mtcnn: a face with level-or-not eyes; records what it was asked."""

    name, landmarks = "mtcnn", True
    version = "recording"
    seen: list = []

    def detect(self, image):
        RecordingDetector.seen.append(image.size)
        return [FaceBox(150, 100, 220, 240, ((200.0, 180.0), (320.0, 230.0), (260.0, 240.0), (210.0, 300.0), (300.0, 300.0)))]


def mtcnn_checkpoint(path: Path, align: bool) -> Path:
    faces = {"enabled": True, "margin": 0.25, "size": 160, "detector": "mtcnn", "align": align}
    checkpoint.save_checkpoint(path, models.build("small", 3), "small", {}, CLASSES, checkpoint.input_spec(48, 3, faces))
    return path


def test_predict_uses_the_checkpoints_detector_and_alignment(tmp_path, photos, monkeypatch):
    monkeypatch.setitem(DETECTORS, "mtcnn", RecordingDetector)
    crops = []
    real = geometry.crop_face  # find_and_crop -> face_crop (aligns) -> crop_face, all looked up in geometry
    monkeypatch.setattr(geometry, "crop_face", lambda image, box, **kw: crops.append((box, kw)) or real(image, box, **kw))
    RecordingDetector.seen = []
    frame = predict_files(files(photos, "face.png"), mtcnn_checkpoint(tmp_path / "aligned.pt", True))
    assert RecordingDetector.seen == [(512, 600)]
    assert frame["face_found"].tolist() == [True] and frame["face_box"].tolist() == ["150,100,220,240"]
    assert frame.attrs["faces"] == "cropped to the largest face, mtcnn, aligned (the model was trained on face crops)"
    (box, kw), = crops
    (lx, ly), (rx, ry) = box.landmarks[:2]
    assert abs(ly - ry) < 1e-6 and kw == {"margin": 0.25, "size": 160}  # aligned before the crop
    crops.clear()
    frame = predict_files(files(photos, "face.png"), mtcnn_checkpoint(tmp_path / "straight.pt", False))
    assert frame.attrs["faces"] == "cropped to the largest face, mtcnn (the model was trained on face crops)"
    assert crops[0][0].landmarks[:2] == ((200.0, 180.0), (320.0, 230.0))  # not rotated


def test_checkpoint_without_detector_settings_uses_haar_unaligned(photos, model_path, monkeypatch):
    """Checkpoints from before faces.detector/align: haar, no alignment."""
    monkeypatch.setitem(DETECTORS, "mtcnn", RecordingDetector)
    RecordingDetector.seen = []
    frame = predict_files(files(photos, "face.png"), model_path)
    assert RecordingDetector.seen == [] and frame["face_found"].tolist() == [True]
    assert frame.attrs["faces"] == "cropped to the largest face, haar (the model was trained on face crops)"


def test_mtcnn_checkpoint_without_facenet_pytorch_is_one_line(tmp_path, photos, monkeypatch):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)
    path = mtcnn_checkpoint(tmp_path / "m.pt", False)
    with pytest.raises(MissingFileError, match="needs facenet-pytorch: run make install"):
        predict_files(files(photos, "face.png"), path)
    done = runner.invoke(app, [str(photos / "face.png"), "--model", str(path)])
    assert done.exit_code == 2 and "error: faces.detector=mtcnn needs facenet-pytorch: run make install" in done.output
    assert "Traceback" not in done.output


def test_predict_with_real_mtcnn(tmp_path, photos):
    pytest.importorskip("facenet_pytorch")
    frame = predict_files(files(photos, "face.png", "plain.bmp"), mtcnn_checkpoint(tmp_path / "m.pt", True))
    assert frame["face_found"].tolist() == [True, False] and frame["label"].isin(CLASSES).all()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """2.5 s at 10 fps, 200×150: Grace Hopper's face moving right for 2 s, then 5 empty frames."""
    import cv2

    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as img:
        face = np.asarray(img.convert("RGB").resize((120, 150)))[..., ::-1]  # BGR
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (200, 150))
    for i in range(25):
        frame = np.full((150, 200, 3), 90, np.uint8)
        if i < 20:
            frame[:, 2 * i : 2 * i + 120] = face
        writer.write(frame)
    writer.release()
    return path


def test_a_video_gets_an_annotated_copy_and_emotions_per_second(model_path, video, tmp_path):
    import cv2

    out, csv = tmp_path / "annotated.mp4", tmp_path / "seconds.csv"
    done = runner.invoke(app, [str(video), "--model", str(model_path), "--video-out", str(out), "--csv", str(csv),
                               "--json", str(tmp_path / "s.json"), "--every", "2"])
    assert done.exit_code == 0, done.output
    written = cv2.VideoCapture(str(out))
    assert int(written.get(cv2.CAP_PROP_FRAME_COUNT)) == 25 and written.read()[1].shape == (150, 200, 3)
    seconds = pd.read_csv(csv)
    assert seconds["second"].tolist() == [0, 1, 2] and seconds["frames"].tolist() == [5, 5, 3]  # every 2nd of 10 fps
    assert seconds.loc[0, "faces"] >= 4 and seconds.loc[2, "faces"] == 0  # the face, then empty frames
    probs = seconds[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert np.allclose(probs.sum(1), 1, atol=1e-3) and set(seconds["label"]) <= set(CLASSES)
    assert json.loads((tmp_path / "s.json").read_text())[0]["second"] == 0


def test_video_defaults_write_beside_it_and_a_missing_camera_is_one_line(model_path, video, tmp_path):
    done = runner.invoke(app, [str(video), "--model", str(model_path), "--max-seconds", "1", "--no-faces"])
    assert done.exit_code == 0, done.output
    assert video.with_name("clip.annotated.mp4").stat().st_size > 0
    assert pd.read_csv(video.with_name("clip.emotions.csv"))["faces"].tolist() == [0]
    done = runner.invoke(app, ["--camera", "97", "--model", str(model_path)])
    assert done.exit_code == 2 and "camera 97 cannot be opened" in done.output and done.output.strip().count("\n") == 0
