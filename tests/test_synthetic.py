"""Tests for the procedural face generator (tiny images, a few seconds)."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from emopipe.data.synthetic import (
    CLASSES,
    DOMAIN_STYLES,
    DOMAINS,
    domain_style,
    generate,
)

SIZE = 64
FOUR_EACH = {c: 4 for c in CLASSES}


def _gen(path: Path, counts=FOUR_EACH, **kw) -> Path:
    generate(path, counts, size=SIZE, progress=False, **kw)
    return path


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return _gen(tmp_path_factory.mktemp("source"))


def test_public_constants():
    default_counts = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())["data"]["synthetic_counts"]
    assert set(default_counts) == set(CLASSES) and len(CLASSES) == 6
    assert sum(default_counts.values()) == 1148  # as many photos as the Kaggle set
    assert DOMAINS == ("source", "shift")


def test_layout_and_format(source, tmp_path):
    assert sorted(p.name for p in source.iterdir()) == sorted(CLASSES)
    for c in CLASSES:
        assert sorted(p.name for p in (source / c).iterdir()) == [f"{c}_{i:04d}.jpg" for i in range(4)]
    with Image.open(source / "happy" / "happy_0000.jpg") as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (SIZE, SIZE))
    assert generate(tmp_path, {"sad": 2, "fear": 1}, size=SIZE, progress=False) == 3


def test_same_seed_same_bytes_other_seed_differs(source, tmp_path):
    assert _files(_gen(tmp_path / "again")) == _files(source)
    other = _files(_gen(tmp_path / "seed1", seed=1))
    assert all(other[k] != v for k, v in _files(source).items())


def test_worker_processes_write_the_same_bytes(tmp_path):
    counts = {"pain": 70, "fear": 60}  # enough images for two worker processes
    assert _files(_gen(tmp_path / "two", counts, workers=2)) == _files(_gen(tmp_path / "one", counts))


def test_each_image_independent_of_other_counts(source, tmp_path):
    alone = _gen(tmp_path, {"happy": 3})
    assert _files(alone) == {k: v for k, v in _files(source).items() if k.startswith("happy") and not k.endswith("3.jpg")}


def test_unknown_class_and_domain_raise(tmp_path):
    with pytest.raises(ValueError, match="surprise.*happy"):
        generate(tmp_path, {"surprise": 1}, progress=False)
    with pytest.raises(ValueError, match="target"):
        generate(tmp_path, FOUR_EACH, domain="target", progress=False)
    assert not any(tmp_path.iterdir())


def _stats(root: Path) -> np.ndarray:
    """Per image: edge energy at half resolution (sharpness, with pixel noise averaged out)
    and warmth (mean red minus mean blue)."""
    rows = []
    for p in sorted(root.rglob("*.jpg")):
        rgb = np.asarray(Image.open(p), float)
        half = np.asarray(Image.open(p).convert("L").resize((SIZE // 2, SIZE // 2), Image.Resampling.BOX), float)
        edges = np.abs(np.diff(half, axis=0)).mean() + np.abs(np.diff(half, axis=1)).mean()
        rows.append((edges, rgb[..., 0].mean() - rgb[..., 2].mean()))
    return np.array(rows)


def test_shift_domain_is_blurrier_and_warmer(source, tmp_path):
    src, sh = _stats(source), _stats(_gen(tmp_path, domain="shift"))
    assert sh[:, 0].mean() < 0.8 * src[:, 0].mean()
    assert sh[:, 1].mean() > src[:, 1].mean() + 20


def test_severity_moves_the_shift_style_from_source_to_shift(source, tmp_path):
    assert domain_style("shift", 1.0) == DOMAIN_STYLES["shift"]  # exactly: the default shift is unchanged
    assert domain_style("shift", 0.0) == DOMAIN_STYLES["source"]
    assert domain_style("source", 0.3) == DOMAIN_STYLES["source"]
    src, mild, full = _stats(source), _stats(_gen(tmp_path / "mild", domain="shift", severity=0.3)), _stats(_gen(tmp_path / "full", domain="shift"))
    assert src[:, 1].mean() < mild[:, 1].mean() < full[:, 1].mean()  # warmth grows with severity
    with pytest.raises(ValueError, match="severity"):
        generate(tmp_path, FOUR_EACH, domain="shift", severity=1.5, progress=False)


def test_label_noise_changes_only_some_images(source, tmp_path):
    counts = {c: 10 for c in CLASSES}
    clean = _files(_gen(tmp_path / "clean", counts, label_noise=0.0))
    noisy = _files(_gen(tmp_path / "noisy", counts, label_noise=0.5))
    always = _files(_gen(tmp_path / "always", counts, label_noise=1.0))
    changed = sum(clean[k] != noisy[k] for k in clean)
    assert 0 < changed < len(clean)
    assert all(clean[k] != always[k] for k in clean)
