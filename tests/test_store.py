"""The image store: a packed split reads back as the tensors it was made from, a batch at a time."""
import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from emopipe.data import store
from emopipe.errors import IntakeError, MissingFileError


@pytest.fixture
def saved(tmp_path, toy_set):
    data = toy_set(n_per_class=7, size=12)
    store.save(tmp_path / "train", data, batch=5)  # batches that do not divide the set
    return data, store.load(tmp_path / "train")


def test_a_saved_split_reads_back_the_same_bytes_in_any_order(saved):
    data, back = saved
    assert isinstance(back.images, store.ImageFile) and back.images.shape == tuple(data.images.shape)
    assert torch.equal(back.images[:], data.images) and torch.equal(back.labels, data.labels)
    assert back.classes == data.classes and back.paths == data.paths
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    assert torch.equal(back.images[order[:9]], data.images[order[:9]])  # scattered rows
    assert torch.equal(back.images[3:11], data.images[3:11]) and torch.equal(back.images[4], data.images[4])
    assert torch.equal(back.images[np.array([2, 2, 0])], data.images[[2, 2, 0]])  # oversampled copies


def test_subsets_stay_on_disk_and_compose(saved):
    data, back = saved
    part = back.subset(np.arange(1, 20, 2)).subset([4, 0, 3])
    assert isinstance(part.images, store.ImageFile)
    rows = np.arange(1, 20, 2)[[4, 0, 3]]
    assert torch.equal(part.images[:], data.images[rows]) and part.paths == [data.paths[i] for i in rows]
    joined = store.concat(part, data.subset(torch.tensor([0])))  # on disk and in memory
    assert torch.equal(joined.images, torch.cat([data.images[rows], data.images[:1]]))


def test_a_pickled_view_reads_in_another_process_state(saved):
    data, back = saved
    back.images[0]  # open the descriptor, then send the view elsewhere
    copy = pickle.loads(pickle.dumps(back.images.take(np.arange(3))))
    assert torch.equal(copy[:], data.images[:3])


def test_pack_decodes_each_row_and_repeats_oversampled_copies(tmp_path):
    paths = []
    for i, colour in enumerate([(250, 0, 0), (0, 250, 0)]):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (20, 10), colour).save(paths[-1])
    manifest = pd.DataFrame({"image": [paths[0], paths[1], paths[0]], "label": ["b", "a", "b"]})
    store.pack(tmp_path / "packed", manifest, ["a", "b"], size=8, channels=3)
    back = store.load(tmp_path / "packed")
    assert back.labels.tolist() == [1, 0, 1] and back.paths == manifest["image"].tolist()
    assert back.images.shape == (3, 3, 8, 8) and torch.equal(back.images[0], back.images[2])
    assert back.images[1][1].min() == 250 and back.images[1][0].max() == 0
    assert np.load(tmp_path / "packed" / "images.npy").shape == (3, 3, 8, 8)  # plain numpy format for anyone


def test_a_missing_or_truncated_split_names_the_fix(tmp_path, saved):
    with pytest.raises(MissingFileError, match=r"nowhere is not a packed split.*dvc repro pack"):
        store.load(tmp_path / "nowhere")
    images = tmp_path / "train" / "images.npy"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(IntakeError, match=r"images.npy holds 27 images but its header says 28"):
        store.load(tmp_path / "train")
    index = json.loads((tmp_path / "train" / "index.json").read_text())
    store.save(tmp_path / "other", saved[0])
    (tmp_path / "other" / "index.json").write_text(json.dumps(index | {"labels": index["labels"][:-1]}))
    with pytest.raises(IntakeError, match="28 images but 27 labels"):
        store.load(tmp_path / "other")
