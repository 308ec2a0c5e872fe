import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw

from emopipe.data.dedup import duplicate_groups


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


def test_groups_are_transitive_and_numbered_by_first_appearance():
    # 3 bits from a to b, 3 from b to c, 6 from a to c: still one group through b.
    a, b, c, far = "0000000000000000", "0000000000000007", "000000000000003f", "ffffffff00000000"
    assert duplicate_groups(list("wxyz"), [far, c, a, b]).tolist() == [0, 1, 1, 1]
    assert duplicate_groups(list("wxy"), [a, c, far]).tolist() == [0, 1, 2]


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
    expected = _naive_groups(sha, hashes, max_distance=3)
    got = duplicate_groups(sha, [f"{h:016x}" for h in hashes], max_distance=3)
    assert got.tolist() == expected


def _naive_groups(sha, hashes, max_distance):
    n = len(sha)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if sha[i] == sha[j] or bin(hashes[i] ^ hashes[j]).count("1") <= max_distance:
                parent[max(find(i), find(j))] = min(find(i), find(j))
    ids = {}
    return [ids.setdefault(find(i), len(ids)) for i in range(n)]


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
