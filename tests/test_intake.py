import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageFile

from emopipe.data import intake
from emopipe.data.intake import (
    MANIFEST_COLUMNS,
    MAX_DECODED_SIDE,
    REJECT_COLUMNS,
    ImageRejected,
    IntakeError,
    _to_rgb,
    ingest_folder,
    load_rgb,
)

MAX_PIXELS = 10_000_000


def _photo(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    """A smooth, non-trivial RGB picture (phash needs structure, not noise)."""
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    fx, fy, phase = rng.uniform(1, 4, 3)
    r = 127 + 120 * np.sin(fx * x / width * np.pi + phase)
    g = 127 + 120 * np.cos(fy * y / height * np.pi)
    b = 255 * (x + y) / (width + height)
    return Image.fromarray(np.stack([r, g, b], axis=-1).astype(np.uint8))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but holds almost no data (a bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _encoded(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# source (relative to src) -> expected reject code, or "ok" when it must be accepted.
EXPECTED = {
    "happy/plain.jpg": "ok",
    "happy/photo.jpeg": "ok",
    "happy/lossless.png": "ok",
    "happy/same-pixels.bmp": "ok",
    "happy/modern.webp": "ok",
    "happy/old.jfif": "ok",
    "happy/anim.gif": "ok",
    "happy/UPPER.JPG": "ok",
    "happy/nested/deeper/lossless.png": "ok",
    "happy/Grinsen Ä (1).png": "ok",
    "happy/.DS_Store": "hidden",
    "happy/.hidden.jpg": "hidden",
    "happy/.trash/deleted.jpg": "hidden",
    "happy/Thumbs.db": "hidden",
    "__MACOSX/happy/._plain.jpg": "hidden",
    "desktop.ini": "hidden",
    "readme.jpg": "no-class-folder",
    "sad/mode_L.png": "ok",
    "sad/mode_LA.png": "ok",
    "sad/mode_P.png": "ok",
    "sad/mode_P_transparent.png": "ok",
    "sad/mode_RGBA.png": "ok",
    "sad/mode_CMYK.jpg": "ok",
    "sad/mode_I16.png": "ok",
    "sad/mode_1.bmp": "ok",
    "sad/rotated.jpg": "ok",
    "sad/big.png": "ok",
    "sad/corrupt.png": "corrupt",
    "sad/random-bytes.jpg": "not-an-image",
    "sad/text.png": "not-an-image",
    "sad/truncated.jpg": "truncated",
    "sad/zero.jpg": "empty",
    "sad/notes.txt": "not-an-image-suffix",
    "sad/no_suffix": "not-an-image-suffix",
    "sad/bomb.png": "decompression-bomb",
    "sad/over-max-pixels.png": "decompression-bomb",
    "sad/link-to-folder": "not-a-file",
    "sad/dangling.jpg": "not-a-file",
}


def _build_tree(src: Path) -> None:
    photo = _photo()
    files = {
        "happy/plain.jpg": _encoded(photo, "JPEG"),
        "happy/photo.jpeg": _encoded(_photo(seed=1), "JPEG"),
        "happy/lossless.png": _encoded(photo, "PNG"),
        "happy/same-pixels.bmp": _encoded(photo, "BMP"),
        "happy/modern.webp": _encoded(_photo(seed=2), "WEBP"),
        "happy/old.jfif": _encoded(_photo(seed=3), "JPEG"),
        "happy/UPPER.JPG": _encoded(_photo(seed=4), "JPEG"),
        "happy/nested/deeper/lossless.png": _encoded(photo, "PNG"),
        "happy/Grinsen Ä (1).png": _encoded(_photo(seed=5), "PNG"),
        "happy/.DS_Store": b"\0\0\0\1Bud1",
        "happy/.hidden.jpg": _encoded(photo, "JPEG"),
        "happy/.trash/deleted.jpg": _encoded(photo, "JPEG"),
        "happy/Thumbs.db": b"thumbs",
        "__MACOSX/happy/._plain.jpg": b"\0\5\26\7 resource fork",
        "desktop.ini": b"[.ShellClassInfo]",
        "readme.jpg": _encoded(photo, "JPEG"),
        "sad/mode_L.png": _encoded(photo.convert("L"), "PNG"),
        "sad/mode_LA.png": _encoded(Image.new("LA", (32, 32), (0, 0)), "PNG"),
        "sad/mode_P.png": _encoded(photo.convert("P"), "PNG"),
        "sad/mode_P_transparent.png": _encoded(Image.new("P", (32, 32), 0), "PNG", transparency=0),
        "sad/mode_RGBA.png": _encoded(Image.new("RGBA", (32, 32), (255, 0, 0, 0)), "PNG"),
        "sad/mode_CMYK.jpg": _encoded(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"),
        "sad/mode_I16.png": _encoded(Image.fromarray(np.full((32, 32), 32896, np.uint16)), "PNG"),
        "sad/mode_1.bmp": _encoded(photo.convert("1"), "BMP"),
        "sad/big.png": _encoded(_photo(3000, 2000), "PNG", compress_level=1),
        "sad/random-bytes.jpg": np.random.default_rng(0).bytes(4096),
        "sad/text.png": b"this is a text file pretending to be a PNG\n",
        "sad/zero.jpg": b"",
        "sad/notes.txt": b"notes",
        "sad/no_suffix": _encoded(photo, "PNG"),
        "sad/bomb.png": _png_header_only(30_000, 30_000),
        "sad/over-max-pixels.png": _png_header_only(4_000, 4_000),
    }
    frames = [Image.new("RGB", (16, 16), "red"), Image.new("RGB", (16, 16), "blue")]
    files["happy/anim.gif"] = _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    files["sad/rotated.jpg"] = _encoded(_photo(40, 20), "JPEG", exif=exif)
    jpeg = _encoded(_photo(seed=6), "JPEG")
    files["sad/truncated.jpg"] = jpeg[: len(jpeg) // 2]
    png = bytearray(_encoded(_photo(seed=7), "PNG"))
    png[png.find(b"IDAT") + 20] ^= 0xFF  # damage the compressed pixels
    files["sad/corrupt.png"] = bytes(png)
    for rel, data in files.items():
        _write(src / rel, data)
    outside = src.parent / "outside"
    _write(outside / "x.png", files["happy/lossless.png"])
    os.symlink(outside, src / "sad" / "link-to-folder")  # reported, not followed (could loop)
    os.symlink(src / "nowhere.jpg", src / "sad" / "dangling.jpg")


def _all_files(src: Path) -> set[str]:
    found = set()
    for dirpath, dirnames, filenames in os.walk(src):
        for name in filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            found.add((Path(dirpath) / name).relative_to(src).as_posix())
    return found


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("intake")
    src = root / "src"
    _build_tree(src)
    result = ingest_folder(src, root / "out", max_side=1024, max_pixels=MAX_PIXELS, progress=False)
    return src, root / "out", result


def _row(result, source: str) -> pd.Series:
    rows = result.manifest[result.manifest.source == source]
    assert len(rows) == 1, source
    return rows.iloc[0]


def _saved(out: Path, result, source: str) -> Image.Image:
    return Image.open(out / _row(result, source).path)


def test_every_file_accepted_or_rejected_with_the_right_reason(ingested):
    src, _, result = ingested
    assert list(result.manifest.columns) == MANIFEST_COLUMNS
    assert list(result.rejects.columns) == REJECT_COLUMNS
    accepted, rejected = set(result.manifest.source), set(result.rejects.source)
    assert accepted.isdisjoint(rejected)
    assert len(result.manifest) + len(result.rejects) == len(_all_files(src))
    assert accepted | rejected == _all_files(src) == set(EXPECTED)
    codes = dict(zip(result.rejects.source, result.rejects.reason.str.split(":").str[0], strict=True))
    assert codes == {s: code for s, code in EXPECTED.items() if code != "ok"}
    assert accepted == {s for s, code in EXPECTED.items() if code == "ok"}
    assert all(": " in reason for reason in result.rejects.reason)


def test_manifest_rows_describe_the_saved_images(ingested):
    _, out, result = ingested
    m = result.manifest
    assert m.source.is_monotonic_increasing and m.path.is_unique
    assert (m.label == m.source.str.split("/").str[0]).all()
    assert m.phash.str.fullmatch(r"[0-9a-f]{16}").all()
    assert m.sha256.str.fullmatch(r"[0-9a-f]{64}").all()
    assert m.path.str.fullmatch(r"(happy|sad)/[a-z0-9-]+-[0-9a-f]{8}(-\d+)?\.jpg").all()
    for row in m.itertuples():
        with Image.open(out / row.path) as img:
            assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (row.width, row.height))
            assert max(img.size) <= 1024
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == sorted(m.path)


def test_geometry_frames_and_colours(ingested):
    _, out, result = ingested
    assert _saved(out, result, "sad/big.png").size == (1024, 683)
    assert _saved(out, result, "sad/rotated.jpg").size == (20, 40)  # EXIF orientation 6 applied
    assert _saved(out, result, "happy/anim.gif").getpixel((8, 8))[0] > 200  # first (red) frame
    for transparent in ("sad/mode_P_transparent.png", "sad/mode_RGBA.png", "sad/mode_LA.png"):
        assert min(_saved(out, result, transparent).getpixel((16, 16))) > 245, transparent  # on white
    assert 115 < _saved(out, result, "sad/mode_I16.png").getpixel((16, 16))[0] < 141  # scaled, not clipped


def test_exact_duplicates_are_kept_and_hash_alike(ingested):
    _, _, result = ingested
    sha = {s: _row(result, s).sha256 for s in ("happy/lossless.png", "happy/same-pixels.bmp")}
    nested = _row(result, "happy/nested/deeper/lossless.png")
    assert sha["happy/lossless.png"] == sha["happy/same-pixels.bmp"] == nested.sha256
    assert nested.path.endswith("-2.jpg")  # same stem + same pixels: numbered, not overwritten
    assert _row(result, "happy/plain.jpg").sha256 != nested.sha256  # lossy JPEG differs in pixels


def test_output_is_deterministic(ingested, tmp_path):
    src, out, result = ingested
    again = ingest_folder(src, tmp_path / "again", max_pixels=MAX_PIXELS, progress=False)
    pd.testing.assert_frame_equal(again.manifest, result.manifest)
    pd.testing.assert_frame_equal(again.rejects, result.rejects)
    for rel in result.manifest.path:
        assert (tmp_path / "again" / rel).read_bytes() == (out / rel).read_bytes()


def test_refuses_non_empty_output_folder(ingested):
    src, out, _ = ingested
    with pytest.raises(IntakeError, match="not empty"):
        ingest_folder(src, out, max_pixels=MAX_PIXELS, progress=False)


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    _write(tmp_path / "src/happy/a.png", _encoded(_photo(), "PNG"))
    (tmp_path / "src/angry").mkdir()
    with pytest.raises(IntakeError, match=r"class folder 'angry' .* no usable images \(it contains no files\)"):
        ingest_folder(tmp_path / "src", tmp_path / "out", progress=False)


def test_class_folder_with_only_rejects_is_an_error_listing_them(tmp_path):
    _write(tmp_path / "src/happy/a.png", _encoded(_photo(), "PNG"))
    _write(tmp_path / "src/sad/broken.jpg", b"\xff\xd8\xff\xe0 not really")
    _write(tmp_path / "src/sad/notes.txt", b"x")
    expected = r"class folder 'sad' .*\(2 rejected: 'sad/broken.jpg' truncated, 'sad/notes.txt' not-an-image-suffix\)"
    with pytest.raises(IntakeError, match=expected):
        ingest_folder(tmp_path / "src", tmp_path / "out", progress=False)


@pytest.mark.parametrize("make", [lambda p: None, lambda p: _write(p / "loose.jpg", b"x")])
def test_missing_source_or_no_class_folders(tmp_path, make):
    src = tmp_path / "src"
    make(src)
    with pytest.raises(IntakeError, match=str(src)):
        ingest_folder(src, tmp_path / "out", progress=False)


def test_load_rgb_leaves_global_truncation_flag_alone(tmp_path, monkeypatch):
    jpeg = _encoded(_photo(), "JPEG")
    _write(tmp_path / "t.jpg", jpeg[: len(jpeg) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageRejected) as err:
        load_rgb(tmp_path / "t.jpg")
    assert err.value.reason.startswith("truncated: ")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


@pytest.mark.parametrize("pixels", [15 * 10, 20 * 20])  # PIL warns above its limit, errors above 2x
def test_pil_global_bomb_limit_is_replaced_by_max_pixels_and_restored(tmp_path, monkeypatch, pixels):
    _write(tmp_path / "x.png", _encoded(Image.new("RGB", (pixels // 10, 10)), "PNG"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert load_rgb(tmp_path / "x.png", max_pixels=10**9).size == (pixels // 10, 10)
    assert Image.MAX_IMAGE_PIXELS == 100
    with pytest.raises(ImageRejected) as err:
        load_rgb(tmp_path / "x.png", max_pixels=pixels - 1)
    assert err.value.reason == f"decompression-bomb: {pixels // 10}x10 = {pixels:,} pixels > {pixels - 1:,}"
    assert Image.MAX_IMAGE_PIXELS == 100


@pytest.fixture(scope="module")
def phone_photo(tmp_path_factory) -> Path:
    """A 50 MP phone-camera JPEG (8700x5800); one colour, so it is small on disk and quick to write."""
    path = tmp_path_factory.mktemp("large") / "src" / "happy" / "phone.jpg"
    path.parent.mkdir(parents=True)
    Image.new("RGB", (8700, 5800), (200, 150, 120)).save(path, "JPEG", quality=80)
    return path


def test_large_photo_is_kept_and_decoded_downscaled(phone_photo, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000_000)  # a strict global limit must not reject it
    img = load_rgb(phone_photo)
    assert max(img.size) <= MAX_DECODED_SIDE and max(img.size) > MAX_DECODED_SIDE // 2
    assert abs(img.width / img.height - 8700 / 5800) < 0.01
    assert img.mode == "RGB" and img.getpixel((10, 10)) == pytest.approx((200, 150, 120), abs=3)
    assert Image.MAX_IMAGE_PIXELS == 40_000_000


def test_large_photo_ends_in_the_manifest(phone_photo, tmp_path):
    result = ingest_folder(phone_photo.parents[1], tmp_path / "out", progress=False)
    assert result.rejects.empty
    row = _row(result, "happy/phone.jpg")
    assert (row.width, row.height) == (1024, 683)
    assert Image.open(tmp_path / "out" / row.path).size == (1024, 683)


def test_large_png_is_downscaled_after_decoding(tmp_path):
    _write(tmp_path / "wide.png", _encoded(Image.new("RGB", (6000, 60), (10, 20, 30)), "PNG"))
    assert load_rgb(tmp_path / "wide.png").size == (MAX_DECODED_SIDE, 41)


def test_header_over_the_absurd_bound_is_a_decompression_bomb(tmp_path):
    assert intake.MAX_PIXELS >= 200_000_000  # above any camera
    _write(tmp_path / "bomb.png", _png_header_only(20_000, 20_000))  # 400 MP claimed, ~100 bytes on disk
    with pytest.raises(ImageRejected) as err:
        load_rgb(tmp_path / "bomb.png")
    assert err.value.reason == f"decompression-bomb: 20000x20000 = 400,000,000 pixels > {intake.MAX_PIXELS:,}"


@pytest.mark.parametrize(
    ("img", "expected"),
    [
        (Image.fromarray(np.full((2, 2), 32896, np.int32)), 128),
        (Image.fromarray(np.full((2, 2), 300.0, np.float32)), 255),
        (Image.new("1", (2, 2), 1), 255),
        (Image.new("PA", (2, 2), (0, 0)), 255),
    ],
)
def test_numeric_and_exotic_modes_become_rgb(img, expected):
    rgb = _to_rgb(img)
    assert rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (expected,) * 3
