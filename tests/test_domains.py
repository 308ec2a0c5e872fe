"""A domain's images: parts of one folder, re-rendering, class maps and subsets, and shift classes."""
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO_PARAMS
from PIL import Image

from emopipe.config import RenderParams, SourceParams
from emopipe.data.sources import fetch, part_position, renderer
from emopipe.data.split import shift_classes
from emopipe.errors import ParamError

PERSON = r"^(.+)_\d+\.\w+$"


def photo_folder(root: Path, classes: dict[str, list[str]]) -> Path:
    """root/<class>/<name> for each name, each a distinct 64×48 RGB image."""
    rng = np.random.default_rng(0)
    for label, names in classes.items():
        (root / label).mkdir(parents=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / label / name)
    return root


def folder_source(root: Path, **changes) -> SourceParams:
    """params.yaml's data section, reading the folder `root`."""
    return replace(REPO_PARAMS.data, **{"source": "folder", "folder": str(root), **changes})


def render(**changes) -> RenderParams:
    """params.yaml's render settings (which leave a photo as it is) with `changes`."""
    return replace(REPO_PARAMS.data.render, **changes)


def test_the_default_render_leaves_photos_alone_and_any_change_does_not():
    assert REPO_PARAMS.data.render.identity and renderer(REPO_PARAMS.data.render) is None
    for change in ({"greyscale": True}, {"crop": 0.9}, {"size": 48}, {"contrast": 0.5}, {"brightness": 0.5}, {"blur": 1.0}):
        assert not render(**change).identity and renderer(render(**change)) is not None


@pytest.fixture
def people(tmp_path) -> Path:
    """Twelve persons with three photos each, in two classes."""
    names = [f"person{p}_{i:04d}.png" for p in range(12) for i in range(3)]
    return photo_folder(tmp_path / "src", {"happy": names[:18], "sad": names[18:]})


def test_part_position_is_stable_and_follows_the_person():
    assert part_position("Al_Gore_0002.jpg", PERSON) == part_position("Al_Gore_0007.jpg", PERSON)
    assert part_position("a.jpg", None) == part_position("a.jpg", None) != part_position("b.jpg", None)
    assert 0.0 <= part_position("x.jpg", None) < 1.0


def test_two_parts_of_one_folder_share_no_person_and_lose_no_file(people, tmp_path):
    first = fetch(folder_source(people, part=[0.0, 0.5]), "data", tmp_path / "a", seed=0, progress=False, group_pattern=PERSON)
    second = fetch(folder_source(people, part=[0.5, 1.0]), "shift", tmp_path / "b", seed=0, progress=False, group_pattern=PERSON)
    persons = [set(m["source"].str.extract(r"/(person\d+)_")[0]) for m in (first.manifest, second.manifest)]
    assert persons[0] and persons[1] and not persons[0] & persons[1]
    assert len(first.manifest) + len(second.manifest) == 36
    assert len(first.rejects) == len(second.manifest)  # the other part's files are reported, not lost
    assert set(first.rejects["reason"]) == {"other-part: outside data.part [0, 0.5)"}


def test_render_makes_grey_tight_crops_at_the_size_asked(people, tmp_path):
    result = fetch(folder_source(people, render=render(greyscale=True, crop=0.5, size=24)), "shift", tmp_path / "out", seed=0, progress=False)
    with Image.open(tmp_path / "out" / result.manifest["path"][0]) as img:
        pixels = np.asarray(img.convert("RGB")).astype(int)
    assert pixels.shape == (24, 24, 3)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() <= 3  # grey (up to JPEG noise)
    assert set(result.manifest[["width", "height"]].itertuples(index=False, name=None)) == {(24, 24)}


def test_a_camera_render_dims_flattens_and_blurs(people, tmp_path):
    def pixels(look: RenderParams) -> np.ndarray:
        out = tmp_path / str(hash(look))
        result = fetch(folder_source(people, render=look), "shift", out, seed=0, progress=False)
        with Image.open(out / sorted(result.manifest["path"])[0]) as img:
            return np.asarray(img.convert("L")).astype(float)

    plain = pixels(render(greyscale=True))
    dim, flat = pixels(render(greyscale=True, brightness=0.5)), pixels(render(greyscale=True, contrast=0.5))
    blurred = pixels(render(greyscale=True, blur=2.0))
    assert dim.mean() == pytest.approx(plain.mean() / 2, rel=0.05)
    assert flat.std() == pytest.approx(plain.std() / 2, rel=0.1) and flat.mean() == pytest.approx(plain.mean(), rel=0.05)
    assert np.abs(np.diff(blurred)).mean() < np.abs(np.diff(plain)).mean() / 2  # neighbours alike: detail gone


def test_class_map_renames_and_classes_keep_a_subset_reporting_the_rest(people, tmp_path):
    src = folder_source(people, class_map={"sad": "sadness"}, classes=["sadness"])
    result = fetch(src, "shift", tmp_path / "out", seed=0, progress=False)
    assert set(result.manifest["label"]) == {"sadness"} and len(result.manifest) == 18
    assert len(result.rejects) == 18 and set(result.rejects["reason"]) == {"class-not-selected: 'happy' is not in shift.classes"}
    assert not (tmp_path / "out" / "happy").exists() or not any((tmp_path / "out" / "happy").iterdir())


@pytest.mark.parametrize("changes, needle", [
    ({"class_map": {"sadd": "sad"}}, "shift.class_map renames ['sadd'], which the source does not have"),
    ({"classes": ["angry"]}, "shift.classes names ['angry'], not in the source"),
])
def test_class_params_naming_nothing_fail_in_one_line(people, tmp_path, changes, needle):
    with pytest.raises(ParamError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        fetch(folder_source(people, **changes), "shift", tmp_path / "out", seed=0, progress=False)


def test_a_source_of_none_has_no_images(tmp_path):
    result = fetch(replace(REPO_PARAMS.shift, source="none"), "shift", tmp_path / "out", seed=0, progress=False)
    assert result.manifest.empty and result.rejects.empty and "label" in result.manifest.columns


def test_a_shift_class_the_model_does_not_know_is_an_error_or_dropped_and_counted():
    shift = pd.DataFrame({"label": ["sad", "happy", "surprise", "surprise"]})
    with pytest.raises(ParamError, match=r"\['surprise'\] are not in the main domain .*shift.class_map"):
        shift_classes(shift, {"sad", "happy", "anger"}, "error")
    kept, dropped = shift_classes(shift, {"sad", "happy", "anger"}, "drop")
    assert kept["label"].tolist() == ["sad", "happy"] and dropped == {"surprise": 2}
