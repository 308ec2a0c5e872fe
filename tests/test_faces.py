"""Face detection and cropping: geometry, alignment, no-face policy, caching, determinism, and real faces."""
import math
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook
from PIL import Image

from emopipe.data.faces import crop as crop_module
from emopipe.data.faces.crop import DROP_COLUMNS, crop_folder, find_and_crop
from emopipe.data.faces.detectors import (
    DETECTORS,
    FaceDetector,
    MtcnnDetector,
    make_detector,
    require_landmarks,
)
from emopipe.data.faces.geometry import FaceBox, align_face, crop_face
from emopipe.data.faces.sheet import contact_sheet
from emopipe.data.faces.stats import detection_rates
from emopipe.data.synthetic import generate
from emopipe.errors import MissingFileError, ParamError

MUXSPACE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "muxspace-dev"
# crop_folder's settings in these tests (params.yaml's faces section as it ships); a test changes one at a time
SETTINGS = {"no_face": "keep", "margin": 0.25, "size": 160, "detector": "haar", "align": False}


def crop_all(manifest: pd.DataFrame, out: Path, **changes):
    """crop_folder with SETTINGS, `changes` over them, no progress bar."""
    return crop_folder(manifest, out, **(SETTINGS | {"progress": False} | changes))


@pytest.fixture(scope="module")
def hopper() -> Image.Image:
    """A real portrait shipped with matplotlib (a dependency): Grace Hopper, 512×600."""
    with Image.open(cbook.get_sample_data("grace_hopper.jpg")) as img:
        return img.convert("RGB")


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def coordinates(width: int, height: int) -> Image.Image:
    """Red channel = x, green channel = y: a crop's first pixel tells where it was taken."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8))


def origin(crop: Image.Image) -> tuple[int, int]:
    r, g, _ = crop.getpixel((0, 0))
    return r, g


# --- detection ---------------------------------------------------------------------------

def test_finds_the_face_in_a_real_portrait(hopper, detector):
    boxes = detector.detect(hopper)
    assert boxes, "no face found in grace_hopper.jpg"
    box = boxes[0]
    assert 150 < box.x + box.w / 2 < 380 and 100 < box.y + box.h / 2 < 340
    assert 150 < box.w < 320
    assert boxes == sorted(boxes, key=lambda b: -b.area)


def test_boxes_are_in_source_pixels_whatever_the_size_and_position(hopper, detector):
    """Large photos are detected on a downscaled copy; boxes come back in source pixels."""
    small = detector.detect(hopper)[0]
    canvas = Image.new("RGB", (4 * hopper.width, 3 * hopper.height), (128, 128, 128))
    canvas.paste(hopper.resize((2 * hopper.width, 2 * hopper.height)), (700, 300))
    big = detector.detect(canvas)[0]
    expected = (700 + 2 * small.x, 300 + 2 * small.y, 2 * small.w)
    assert np.allclose((big.x, big.y, big.w), expected, atol=0.12 * expected[2])


def test_blank_and_tiny_images_have_no_face(detector):
    assert detector.detect(Image.new("RGB", (320, 240), (90, 90, 90))) == []
    assert detector.detect(Image.new("L", (5, 3))) == []


def test_detection_is_deterministic(hopper, detector):
    assert detector.detect(hopper) == FaceDetector().detect(hopper)


def test_min_size_fraction_is_checked():
    with pytest.raises(ValueError, match="min_size_fraction"):
        FaceDetector(min_size_fraction=0)


# --- the detector registry and MTCNN ------------------------------------------------------

def test_registry_matches_the_param_choices():
    assert set(DETECTORS) == {"haar", "mtcnn"} and DETECTORS.param == "faces.detector"
    assert isinstance(make_detector("haar"), FaceDetector)
    with pytest.raises(ParamError, match="faces.detector='dlib' is not a registered detector; choose one of: haar, mtcnn"):
        make_detector("dlib")
    assert all(DETECTORS[name].name == name for name in DETECTORS)  # each knows its key (alignment's error names it)


@pytest.fixture(scope="module")
def mtcnn() -> MtcnnDetector:
    pytest.importorskip("facenet_pytorch")
    return MtcnnDetector()


def test_mtcnn_finds_the_face_and_its_landmarks_in_a_real_portrait(hopper, mtcnn, detector):
    boxes = mtcnn.detect(hopper)
    assert len(boxes) == 1
    box = boxes[0]
    assert 150 < box.x + box.w / 2 < 380 and 100 < box.y + box.h / 2 < 340 and 150 < box.w < 320
    haar = detector.detect(hopper)[0]  # both find the same face
    assert abs(box.x + box.w / 2 - (haar.x + haar.w / 2)) < 0.25 * haar.w
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = box.landmarks
    assert box.x < lx < nx < rx < box.x + box.w  # eyes either side of the nose, inside the box
    assert max(ly, ry) < ny < min(mly, mry) < box.y + box.h  # eyes above the nose above the mouth
    assert mlx < mrx and abs(ly - ry) < 0.1 * box.w


def test_mtcnn_is_deterministic(hopper, mtcnn):
    assert mtcnn.detect(hopper) == mtcnn.detect(hopper) == MtcnnDetector().detect(hopper)
    assert mtcnn.version == MtcnnDetector().version and mtcnn.version != FaceDetector().version


def test_mtcnn_finds_generated_faces(tmp_path, mtcnn):
    """The embedded synthetic faces (160 px) are drawn well enough for MTCNN."""
    generate(tmp_path, {"happy": 3, "anger": 3}, size=160, progress=False)
    found = [mtcnn.detect(Image.open(f).convert("RGB")) for f in sorted(tmp_path.rglob("*.jpg"))]
    assert sum(bool(boxes) for boxes in found) >= 5
    assert all(len(boxes[0].landmarks) == 5 for boxes in found if boxes)


def test_mtcnn_blank_and_tiny_images_have_no_face(mtcnn):
    assert mtcnn.detect(Image.new("RGB", (320, 240), (90, 90, 90))) == []
    assert mtcnn.detect(Image.new("L", (5, 3))) == []


@pytest.fixture
def fake_facenet(monkeypatch):
    """A stand-in facenet_pytorch whose MTCNN reports fixed boxes (in the padded image it is given)."""
    seen = []

    class MTCNN:
        def __init__(self, **kwargs):
            self.kwargs, self.min_face_size = kwargs, kwargs["min_face_size"]

        def detect(self, pixels, landmarks):
            seen.append((pixels.shape, self.min_face_size))
            pad = (pixels.shape[1] - 200) // 2  # the source is 200×100
            boxes = np.array([[10, 10, 30, 30], [-20, 40, 90, 150]], dtype=object) + pad  # small; large, off the edge
            points = np.array([[[15, 15], [25, 15], [20, 20], [16, 25], [24, 25]],
                               [[20, 60], [60, 64], [40, 80], [25, 100], [55, 100]]], dtype=object) + pad
            return boxes, np.array([0.9, 0.99], dtype=object), points

    monkeypatch.setitem(sys.modules, "facenet_pytorch", types.SimpleNamespace(MTCNN=MTCNN))
    return seen


def test_mtcnn_boxes_and_landmarks_come_back_in_source_pixels(fake_facenet):
    found = MtcnnDetector().detect(Image.new("RGB", (200, 100)))
    assert [(b.x, b.y, b.w, b.h) for b in found] == [(0, 40, 90, 60), (10, 10, 20, 20)]  # largest first, clipped
    assert found[0].landmarks[:2] == ((20, 60), (60, 64)) and len(found[0].landmarks) == 5
    (shape, min_face), = fake_facenet
    assert shape == (100 + 2 * 30, 200 + 2 * 30, 3)  # a 15% edge-replicated border
    assert min_face == 20


def test_mtcnn_without_facenet_pytorch_is_one_clear_error(tmp_path, photos, monkeypatch):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import fails as if not installed
    with pytest.raises(MissingFileError, match="faces.detector=mtcnn needs facenet-pytorch: run make install") as err:
        make_detector("mtcnn")
    assert "\n" not in str(err.value)
    with pytest.raises(MissingFileError, match="run make install"):
        crop_all(photos, tmp_path / "faces", detector="mtcnn")


# --- alignment ---------------------------------------------------------------------------

def eyes_at(image: Image.Image) -> list[tuple[float, float]]:
    """Centroids (x, y) of the red and the blue mark."""
    pixels = np.asarray(image).astype(int)
    out = []
    for channel in (0, 2):
        others = [c for c in range(3) if c != channel]
        mask = (pixels[..., channel] > 150) & (pixels[..., others] < 100).all(axis=-1)
        ys, xs = np.nonzero(mask)
        out.append((xs.mean(), ys.mean()))
    return out


def tilted_face(angle: float, width: int = 240, height: int = 200) -> tuple[Image.Image, FaceBox]:
    """Grey image with a red 'left eye' and a blue 'right eye' 80 px apart, the line between them
    tilted ``angle`` degrees clockwise (image y points down), and the matching box and landmarks."""
    cx, cy, half = 120, 90, 40
    dx, dy = half * math.cos(math.radians(angle)), half * math.sin(math.radians(angle))
    left, right = (cx - dx, cy - dy), (cx + dx, cy + dy)
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.full((height, width, 3), 128, np.uint8)
    for (x, y), colour in ((left, (230, 20, 20)), (right, (20, 20, 230))):
        pixels[(xx - x) ** 2 + (yy - y) ** 2 <= 36] = colour
    marks = (left, right, (cx, cy + 30), (cx - 25, cy + 60), (cx + 25, cy + 60))
    return Image.fromarray(pixels), FaceBox(70, 50, 100, 110, marks)


def test_alignment_never_turns_a_face_upside_down():
    image, box = tilted_face(10.0)
    swapped = FaceBox(box.x, box.y, box.w, box.h, (box.landmarks[1], box.landmarks[0], *box.landmarks[2:]))
    aligned, _ = align_face(image, swapped)
    (lx, ly), (rx, ry) = eyes_at(aligned)
    assert abs(ly - ry) < 1 and lx < rx  # level, red still on the left


@pytest.mark.parametrize("angle", [-25.0, -8.0, 0.0, 12.0, 30.0])
def test_alignment_levels_the_eyes(angle):
    image, box = tilted_face(angle)
    (lx, ly), (rx, ry) = eyes_at(image)
    assert math.isclose(math.degrees(math.atan2(ry - ly, rx - lx)), angle, abs_tol=1.0)
    aligned, moved = align_face(image, box)
    (lx, ly), (rx, ry) = eyes_at(aligned)
    assert abs(ly - ry) < 1 and rx - lx > 75  # level, in the same order, as far apart
    assert abs((lx + rx) / 2 - 120) < 1 and abs((ly + ry) / 2 - 90) < 1  # rotated about their midpoint
    (mlx, mly), (mrx, mry) = moved.landmarks[:2]
    assert abs(mly - mry) < 1e-6 and abs(mlx - lx) < 1 and abs(mly - ly) < 1  # landmarks moved with the pixels
    assert (moved.w, moved.h) == (box.w, box.h)
    assert aligned.size == image.size


class FakeMtcnn:
    """A landmark-giving detector: the tilted face of `tilted_face`, wherever asked."""

    name, landmarks = "mtcnn", True
    version = "fake-mtcnn"
    calls: list = []

    def __init__(self, angle: float = 20.0):
        self.angle = angle

    def detect(self, image):
        FakeMtcnn.calls.append(image.size)
        return [tilted_face(self.angle)[1]] if np.asarray(image).mean() > 100 else []


def test_aligned_crop_has_level_eyes():
    image, _ = tilted_face(20.0)
    straight, box = find_and_crop(image, FakeMtcnn(), align=False, margin=0.25, size=150)
    aligned, same_box = find_and_crop(image, FakeMtcnn(), align=True, margin=0.25, size=150)
    assert same_box == box  # the box reported is the detected one, in source pixels
    (lx, ly), (rx, ry) = eyes_at(straight)
    assert ry - ly > 20
    (lx, ly), (rx, ry) = eyes_at(aligned)
    assert abs(ly - ry) < 1


def test_haar_cannot_align(tmp_path, photos, hopper):
    with pytest.raises(ParamError, match="faces.align needs eye landmarks, which the haar detector does not give"):
        require_landmarks(FaceDetector(), align=True)
    require_landmarks(FaceDetector(), align=False)
    require_landmarks(FakeMtcnn(), align=True)
    with pytest.raises(ParamError, match="faces.align needs eye landmarks, which the haar detector does not give"):
        find_and_crop(hopper, FaceDetector(), align=True, margin=0.25, size=160)
    with pytest.raises(ParamError, match="faces.align needs eye landmarks"):
        crop_all(photos, tmp_path / "faces", align=True)
    assert not (tmp_path / "faces").exists()  # refused before any crop is written
    with pytest.raises(ValueError, match="landmarks"):
        align_face(hopper, FaceBox(10, 10, 50, 50))


def test_real_aligned_crop(hopper, mtcnn):
    crop, box = find_and_crop(hopper.rotate(-15, center=(265, 190), fillcolor=(0, 0, 0)), mtcnn, align=True, margin=0.25, size=128)
    assert crop.size == (128, 128) and box is not None
    (lx, ly), (rx, ry) = box.landmarks[:2]
    assert math.degrees(math.atan2(ry - ly, rx - lx)) > 10  # the tilted portrait is seen as tilted
    again = mtcnn.detect(crop)[0].landmarks[:2]
    assert abs(again[0][1] - again[1][1]) < 0.05 * crop.width  # and its aligned crop is level


# --- crop geometry -----------------------------------------------------------------------

def test_crop_grows_the_box_by_the_margin_on_every_side():
    crop = crop_face(coordinates(200, 150), FaceBox(80, 50, 40, 40), margin=0.25, size=60)
    assert crop.size == (60, 60)
    assert origin(crop) == (70, 40)  # 60×60 square centred on the box


def test_crop_is_shifted_inside_the_image_at_the_border():
    crop = crop_face(coordinates(200, 150), FaceBox(0, 130, 20, 20), margin=0.25, size=30)
    assert origin(crop) == (0, 120)


def test_crop_larger_than_the_image_is_shrunk_to_its_shorter_side():
    image = coordinates(200, 150)
    crop = crop_face(image, FaceBox(10, 10, 140, 140), margin=0.25, size=150)
    assert origin(crop) == (5, 0)
    assert np.array_equal(np.asarray(crop), np.asarray(image.crop((5, 0, 155, 150))))


def test_no_box_gives_the_centre_square():
    image = coordinates(200, 150)
    crop = crop_face(image, None, margin=0.25, size=150)
    assert np.array_equal(np.asarray(crop), np.asarray(image.crop((25, 0, 175, 150))))


def test_real_face_crop(hopper, detector):
    crop = crop_face(hopper, detector.detect(hopper)[0], margin=0.25, size=96)
    assert crop.size == (96, 96) and crop.mode == "RGB"


# --- crop_folder -------------------------------------------------------------------------

@pytest.fixture
def photos(tmp_path) -> pd.DataFrame:
    """Four photos in two classes: bright ones 'have a face' for the fake detector."""
    rows = []
    for i, (label, shade) in enumerate([("happy", 200), ("happy", 30), ("sad", 220), ("sad", 40)]):
        folder = tmp_path / "raw" / label
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"p{i}.jpg"
        pixels = np.full((120, 100, 3), shade, np.uint8)
        pixels[20:60, 30:70] = 255 - shade
        Image.fromarray(pixels).save(path, quality=95)
        rows.append({"image": str(path), "label": label, "sha256": f"{i:064x}", "source": f"{label}/p{i}.png"})
    return pd.DataFrame(rows)


@pytest.fixture
def fake_detector(monkeypatch):
    """Replace the Haar cascades: a face at a fixed box in bright images; count the calls."""
    calls = []

    def detect(self, image):
        calls.append(image.size)
        return [FaceBox(30, 20, 40, 40)] if np.asarray(image).mean() > 128 else []

    monkeypatch.setattr(FaceDetector, "detect", detect)
    return calls


def test_keep_centre_crops_photos_without_a_face(tmp_path, photos, fake_detector):
    out = tmp_path / "faces"
    cropped, drops = crop_all(photos, out, size=64)
    assert drops.empty and list(drops.columns) == DROP_COLUMNS
    assert list(cropped.columns) == ["image", "label", "sha256", "source", "face_found", "face_box"]
    assert cropped["face_found"].tolist() == [True, False, True, False]
    assert cropped["face_box"].tolist() == ["30,20,40,40", "", "30,20,40,40", ""]
    assert cropped["source"].tolist() == photos["source"].tolist()
    assert cropped["image"].tolist() == [str(out / "happy" / "p0.jpg"), str(out / "happy" / "p1.jpg"),
                                         str(out / "sad" / "p2.jpg"), str(out / "sad" / "p3.jpg")]
    for path in cropped["image"]:
        with Image.open(path) as img:
            assert img.size == (64, 64) and img.format == "JPEG"
    assert detection_rates(cropped) == {"happy": 0.5, "sad": 0.5}


def test_drop_leaves_out_photos_without_a_face(tmp_path, photos, fake_detector):
    cropped, drops = crop_all(photos, tmp_path / "faces", no_face="drop")
    assert cropped["image"].map(lambda p: Path(p).name).tolist() == ["p0.jpg", "p2.jpg"]
    assert drops.to_dict("records") == [
        {"image": photos["image"][1], "label": "happy", "reason": "no-face"},
        {"image": photos["image"][3], "label": "sad", "reason": "no-face"},
    ]
    assert sorted(p.name for p in (tmp_path / "faces").rglob("*.jpg")) == ["p0.jpg", "p2.jpg"]
    assert detection_rates(cropped, drops) == {"happy": 0.5, "sad": 0.5}


def test_unknown_no_face_policy_names_the_param(tmp_path, photos):
    with pytest.raises(ValueError, match="faces.no_face='skip'"):
        crop_all(photos, tmp_path / "faces", no_face="skip")


def test_missing_columns_are_named(tmp_path, photos):
    with pytest.raises(ValueError, match="sha256"):
        crop_all(photos.drop(columns="sha256"), tmp_path / "faces")


def test_cached_rerun_decodes_nothing_and_detects_nothing(tmp_path, photos, fake_detector, monkeypatch):
    cache = tmp_path / "cache"
    first, _ = crop_all(photos, tmp_path / "a", cache_dir=cache)
    assert len(fake_detector) == 4

    def no_decoding(path, **kwargs):
        raise AssertionError(f"{path} decoded on a cached re-run")

    monkeypatch.setattr(crop_module, "load_rgb", no_decoding)
    second, drops = crop_all(photos, tmp_path / "b", no_face="drop", cache_dir=cache)
    assert len(fake_detector) == 4
    assert second["face_box"].tolist() == ["30,20,40,40"] * 2 and len(drops) == 2
    for a, b in zip(first["image"][[0, 2]], second["image"]):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    assert not list(cache.glob(".*")), "temporary files left in the cache"


def test_cache_key_includes_the_crop_settings(tmp_path, photos, fake_detector):
    cache = tmp_path / "cache"
    crop_all(photos, tmp_path / "a", cache_dir=cache)
    crop_all(photos, tmp_path / "b", margin=0.4, cache_dir=cache)
    crop_all(photos, tmp_path / "c", size=64, cache_dir=cache)
    assert len(fake_detector) == 12


def test_cache_key_includes_the_detector_and_alignment(tmp_path, photos, fake_detector, monkeypatch):
    """Switching the detector or alignment never reuses another setting's crops; each re-run is cached."""
    monkeypatch.setitem(DETECTORS, "mtcnn", FakeMtcnn)
    FakeMtcnn.calls = []
    cache = tmp_path / "cache"
    runs = {}
    for name, detector, align in (("haar", "haar", False), ("mtcnn", "mtcnn", False), ("aligned", "mtcnn", True)):
        for attempt in range(2):
            cropped, _ = crop_all(photos, tmp_path / f"{name}{attempt}", detector=detector, align=align, cache_dir=cache)
            runs[name, attempt] = [Path(p).read_bytes() for p in cropped["image"]]
    assert len(fake_detector) == 4 and len(FakeMtcnn.calls) == 8  # once per setting, not on re-runs
    assert all(runs[name, 0] == runs[name, 1] for name in ("haar", "mtcnn", "aligned"))
    assert runs["haar", 0][0] != runs["mtcnn", 0][0] != runs["aligned", 0][0]
    assert len(list(cache.glob("*.jpg"))) == 12


def test_output_is_deterministic_and_replaces_stale_files(tmp_path, photos, fake_detector):
    out = tmp_path / "faces"
    crop_all(photos, out)
    first = {p: p.read_bytes() for p in out.rglob("*.jpg")}
    (out / "old-class").mkdir()
    (out / "old-class" / "stale.jpg").write_bytes(b"stale")
    crop_all(photos, out)
    assert {p: p.read_bytes() for p in out.rglob("*.jpg")} == first


def test_same_stem_in_one_class_gets_numbered(tmp_path, photos, fake_detector):
    twin = tmp_path / "elsewhere" / "p0.jpg"
    twin.parent.mkdir()
    twin.write_bytes(Path(photos["image"][0]).read_bytes())
    manifest = pd.concat([photos, photos.iloc[[0]].assign(image=str(twin))], ignore_index=True)
    cropped, _ = crop_all(manifest, tmp_path / "faces")
    assert Path(cropped["image"].iloc[-1]).name == "p0-2.jpg"


def test_contact_sheet_is_a_png(tmp_path, photos, fake_detector):
    cropped, drops = crop_all(photos, tmp_path / "faces", no_face="drop")
    sheet = tmp_path / "plots" / "faces.png"
    contact_sheet(cropped, sheet, per_class=3, drops=drops)
    with Image.open(sheet) as img:
        assert img.format == "PNG"
    assert [p.name for p in sheet.parent.iterdir()] == ["faces.png"]
    contact_sheet(photos, sheet)  # face cropping disabled: no face_found column


# --- real photos -------------------------------------------------------------------------

@pytest.mark.skipif(not MUXSPACE.is_dir(), reason="../shared/datasets/muxspace-dev is not available")
def test_detection_rate_on_real_face_photos(detector):
    """A sample of muxspace-dev's 350×350 'neutral' photos: the Haar cascades find nearly all."""
    files = sorted((MUXSPACE / "neutral").glob("*.jpg"))[:20]
    found = sum(bool(detector.detect(Image.open(f).convert("RGB"))) for f in files)
    assert found >= 17


@pytest.mark.skipif(not MUXSPACE.is_dir(), reason="../shared/datasets/muxspace-dev is not available")
def test_mtcnn_detection_rate_on_real_face_photos(mtcnn):
    files = sorted((MUXSPACE / "neutral").glob("*.jpg"))[:20]
    found = sum(bool(mtcnn.detect(Image.open(f).convert("RGB"))) for f in files)
    assert found >= 18
