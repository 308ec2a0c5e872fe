"""Face detection and cropping: geometry, no-face policy, caching, determinism, and real faces."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook
from PIL import Image

from emopipe.data import faces
from emopipe.data.faces import (
    FaceBox,
    FaceDetector,
    contact_sheet,
    crop_face,
    crop_folder,
    detection_rates,
)

MUXSPACE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "muxspace-dev"


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
    crop = crop_face(image, None, size=150)
    assert np.array_equal(np.asarray(crop), np.asarray(image.crop((25, 0, 175, 150))))


def test_real_face_crop(hopper, detector):
    crop = crop_face(hopper, detector.detect(hopper)[0], size=96)
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
    cropped, drops = crop_folder(photos, out, size=64, progress=False)
    assert drops.empty and list(drops.columns) == faces.DROP_COLUMNS
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
    cropped, drops = crop_folder(photos, tmp_path / "faces", no_face="drop", progress=False)
    assert cropped["image"].map(lambda p: Path(p).name).tolist() == ["p0.jpg", "p2.jpg"]
    assert drops.to_dict("records") == [
        {"image": photos["image"][1], "label": "happy", "reason": "no-face"},
        {"image": photos["image"][3], "label": "sad", "reason": "no-face"},
    ]
    assert sorted(p.name for p in (tmp_path / "faces").rglob("*.jpg")) == ["p0.jpg", "p2.jpg"]
    assert detection_rates(cropped, drops) == {"happy": 0.5, "sad": 0.5}


def test_unknown_no_face_policy_names_the_param(tmp_path, photos):
    with pytest.raises(ValueError, match="faces.no_face='skip'"):
        crop_folder(photos, tmp_path / "faces", no_face="skip", progress=False)


def test_missing_columns_are_named(tmp_path, photos):
    with pytest.raises(ValueError, match="sha256"):
        crop_folder(photos.drop(columns="sha256"), tmp_path / "faces", progress=False)


def test_cached_rerun_decodes_nothing_and_detects_nothing(tmp_path, photos, fake_detector, monkeypatch):
    cache = tmp_path / "cache"
    first, _ = crop_folder(photos, tmp_path / "a", cache_dir=cache, progress=False)
    assert len(fake_detector) == 4

    def no_decoding(path, **kwargs):
        raise AssertionError(f"{path} decoded on a cached re-run")

    monkeypatch.setattr(faces, "load_rgb", no_decoding)
    second, drops = crop_folder(photos, tmp_path / "b", no_face="drop", cache_dir=cache, progress=False)
    assert len(fake_detector) == 4
    assert second["face_box"].tolist() == ["30,20,40,40"] * 2 and len(drops) == 2
    for a, b in zip(first["image"][[0, 2]], second["image"]):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    assert not list(cache.glob(".*")), "temporary files left in the cache"


def test_cache_key_includes_the_crop_settings(tmp_path, photos, fake_detector):
    cache = tmp_path / "cache"
    crop_folder(photos, tmp_path / "a", cache_dir=cache, progress=False)
    crop_folder(photos, tmp_path / "b", margin=0.4, cache_dir=cache, progress=False)
    crop_folder(photos, tmp_path / "c", size=64, cache_dir=cache, progress=False)
    assert len(fake_detector) == 12


def test_output_is_deterministic_and_replaces_stale_files(tmp_path, photos, fake_detector):
    out = tmp_path / "faces"
    crop_folder(photos, out, progress=False)
    first = {p: p.read_bytes() for p in out.rglob("*.jpg")}
    (out / "old-class").mkdir()
    (out / "old-class" / "stale.jpg").write_bytes(b"stale")
    crop_folder(photos, out, progress=False)
    assert {p: p.read_bytes() for p in out.rglob("*.jpg")} == first


def test_same_stem_in_one_class_gets_numbered(tmp_path, photos, fake_detector):
    twin = tmp_path / "elsewhere" / "p0.jpg"
    twin.parent.mkdir()
    twin.write_bytes(Path(photos["image"][0]).read_bytes())
    manifest = pd.concat([photos, photos.iloc[[0]].assign(image=str(twin))], ignore_index=True)
    cropped, _ = crop_folder(manifest, tmp_path / "faces", progress=False)
    assert Path(cropped["image"].iloc[-1]).name == "p0-2.jpg"


def test_contact_sheet_is_a_png(tmp_path, photos, fake_detector):
    cropped, drops = crop_folder(photos, tmp_path / "faces", no_face="drop", progress=False)
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
