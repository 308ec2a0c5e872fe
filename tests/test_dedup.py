import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw

from emopipe.data.dedup import ThumbnailCorrelation, duplicate_groups, group_report


def _picture(seed: int, size: int = 128) -> Image.Image:
    """Random coloured ellipses: photo-like structure, distinct per seed."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(12):
        x, y = (int(v) for v in rng.integers(0, size, 2))
        w, h = (int(v) for v in rng.integers(10, size // 2, 2))
        draw.ellipse([x, y, x + w, y + h], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return img


def _reencoded(img: Image.Image) -> Image.Image:
    """Resized and saved as JPEG: a near-duplicate (phash distance <= 2 for these pictures)."""
    buf = io.BytesIO()
    img.resize((100, 100), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=85)
    return Image.open(buf).convert("RGB")


def _phash(img: Image.Image) -> str:
    return str(imagehash.phash(img))


def test_identical_near_and_different_images():
    originals = [_picture(seed) for seed in range(5)]
    images = [*originals, originals[1], _reencoded(originals[3])]
    sha = [f"sha{i}" for i in range(len(images))]
    sha[5] = sha[1]  # the exact copy
    groups = duplicate_groups(sha, [_phash(img) for img in images])
    assert groups.tolist() == [0, 1, 2, 3, 4, 1, 3]


def test_identical_sha_groups_even_if_phash_differs():
    groups = duplicate_groups(["a", "b", "a"], ["0" * 16, "f" * 16, "0f" * 8])
    assert groups.tolist() == [0, 1, 0]


def test_a_chain_of_small_steps_does_not_become_one_group():
    """Each image within 3 bits of the next, the ends 21 bits apart: stars of the representatives
    (images 0, 2, 4, 6), never one chained group."""
    chain = [f"{(1 << (3 * k)) - 1:016x}" for k in range(8)]
    assert duplicate_groups([f"s{i}" for i in range(8)], chain, max_distance=3).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_an_image_joins_its_nearest_representative_and_groups_are_numbered_by_first_appearance():
    # c and a are 6 bits apart (two representatives); b is 3 bits from each: the tie goes to the earlier, c.
    a, b, c, far = "0000000000000000", "0000000000000007", "000000000000003f", "ffffffff00000000"
    assert duplicate_groups(list("wxyz"), [far, c, a, b]).tolist() == [0, 1, 2, 1]
    assert duplicate_groups(list("wxyz"), [far, c, a, "0000000000000001"]).tolist() == [0, 1, 2, 2]  # 1 bit from a, 5 from c


def test_max_distance_zero_means_exact_phash_only():
    phash = ["0000000000000000", "0000000000000001", "0000000000000000"]
    assert duplicate_groups(["a", "b", "c"], phash, max_distance=0).tolist() == [0, 1, 0]
    assert duplicate_groups(["a", "b", "c"], phash, max_distance=1).tolist() == [0, 0, 0]


def test_matches_a_naive_reference_on_clustered_hashes():
    rng = np.random.default_rng(7)
    centers = [int(c) for c in rng.integers(0, 2**63, 15)]
    hashes = []
    for _ in range(200):
        h = centers[rng.integers(0, 15)]
        for bit in rng.integers(0, 64, rng.integers(0, 5)):
            h ^= 1 << int(bit)
        hashes.append(h)
    sha = [f"s{rng.integers(0, 180)}" for _ in hashes]
    expected = _naive_stars(sha, hashes, max_distance=3)
    got = duplicate_groups(sha, [f"{h:016x}" for h in hashes], max_distance=3)
    assert got.tolist() == expected


def _naive_stars(sha, hashes, max_distance):
    """Copies share their first image's group; every other image joins the nearest earlier representative
    within the distance (ties: the earliest), else represents a group of its own."""
    rep, group = {}, []  # sha -> first image; per image its representative
    representatives = []
    for i, (s, h) in enumerate(zip(sha, hashes)):
        if s in rep:
            group.append(group[rep[s]])
            continue
        rep[s] = i
        near = [(bin(h ^ hashes[r]).count("1"), r) for r in representatives]
        near = [x for x in near if x[0] <= max_distance]
        if near:
            group.append(min(near)[1])
        else:
            representatives.append(i)
            group.append(i)
    ids = {}
    return [ids.setdefault(g, len(ids)) for g in group]


def test_copies_confirmed_by_thumbnails_group_and_other_pictures_do_not(tmp_path):
    """Re-encoded, resized and slightly cropped copies group with their original; pictures whose phash is
    close by chance are kept apart by the thumbnail correlation."""
    originals = [_picture(seed) for seed in range(6)]
    copies = {"reencoded": _reencoded(originals[0]), "resized": originals[1].resize((64, 64)),
              "cropped": originals[2].crop((3, 3, 125, 125)).resize((128, 128)), "brighter": originals[3].point(lambda v: min(255, int(v * 1.1)))}
    images = [*originals, *copies.values()]
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        img.save(paths[-1])
    hashes = [_phash(img) for img in images]
    confirm = ThumbnailCorrelation(paths, 0.98)
    groups = duplicate_groups([f"s{i}" for i in range(len(images))], hashes, max_distance=8, confirm=confirm)
    assert groups.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    # with every phash within the distance, only the thumbnails tell the pictures apart
    everything = duplicate_groups([f"s{i}" for i in range(len(images))], ["0" * 16] * len(images), max_distance=0, confirm=confirm)
    assert everything.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2, 3]
    assert confirm.similarity(0, 6) > 0.98 > max(confirm.similarity(i, j) for i in range(6) for j in range(i + 1, 6))


def test_the_report_counts_group_sizes_cross_class_groups_and_label_conflicts():
    groups = np.array([0, 0, 1, 2, 2, 2, 3])
    labels = ["happy", "happy", "sad", "sad", "fear", "sad", "anger"]
    sha = ["x", "x", "y", "z", "z", "w", "v"]  # z: one picture filed as sad and as fear
    report = group_report(groups, labels, sha, [f"src/{i}.jpg" for i in range(7)])
    assert report == {"groups": 2, "images": 5, "largest": 3, "sizes": {"2": 1, "3": 1, "4-5": 0, "6-10": 0, "11-20": 0, ">20": 0},
                      "cross_class_groups": 1, "label_conflicts": {"copies": 1, "examples": ["src/3.jpg", "src/4.jpg"]}}


def test_twenty_thousand_images_run():
    rng = np.random.default_rng(0)
    phash = [f"{int(h):016x}" for h in rng.integers(0, 2**63, 20_000, dtype=np.int64)]
    phash[-100:] = phash[:100]  # 100 duplicates of earlier images
    groups = duplicate_groups([f"s{i}" for i in range(20_000)], phash)
    assert groups.max() + 1 <= 19_900 and (groups[-100:] == groups[:100]).all()


def test_input_validation():
    assert duplicate_groups([], []).shape == (0,)
    with pytest.raises(ValueError, match="differ in length"):
        duplicate_groups(["a"], [])
    with pytest.raises(ValueError, match="max_distance"):
        duplicate_groups(["a"], ["0" * 16], max_distance=-1)
    with pytest.raises(ValueError, match="longer than 64 bits"):
        duplicate_groups(["a", "b"], ["0" * 16, "1" + "0" * 16])
