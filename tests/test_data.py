"""Data specs: builtin sets and their fixed splits, factories, image folders, lazy batching."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from compress.data.builtin import sentence_texts
from compress.data.source import DatasetData
from compress.data.spec import load_data
from tests.helpers.sources import TINY_MODEL_SOURCE


def test_mnist5k_split_is_fixed_disjoint_and_shuffled() -> None:
    train = load_data("builtin:mnist5k", "train", "heldout")
    heldout = load_data("builtin:mnist5k", None, "heldout")
    assert (len(train), len(heldout)) == (4000, 1000)
    assert heldout.inputs[0].shape == (1000, 1, 28, 28)
    assert 0.0 <= float(train.inputs[0].min()) and float(train.inputs[0].max()) <= 1.0
    # the raw file is sorted by class: a shuffled held-out split holds every class in similar amounts
    assert torch.bincount(heldout.targets, minlength=10).min() >= 70
    again = load_data("builtin:mnist5k", "heldout", "train")
    assert torch.equal(again.inputs[0], heldout.inputs[0])
    train_rows = {tuple(r) for r in train.inputs[0].flatten(1).tolist()}
    heldout_rows = {tuple(r) for r in heldout.inputs[0].flatten(1).tolist()}
    assert not train_rows & heldout_rows


def test_digits_shape_and_range() -> None:
    data = load_data("builtin:digits", "all", "heldout")
    assert data.inputs[0].shape == (1797, 1, 8, 8)
    assert float(data.inputs[0].max()) == 1.0 and set(data.targets.tolist()) == set(range(10))


def test_sentences_are_many_varied_and_split() -> None:
    texts = sentence_texts()
    assert len(texts) >= 300 and len(set(texts)) == len(texts)
    lengths = [len(t.split()) for t in texts]
    assert min(lengths) <= 6 and max(lengths) >= 30
    calibration = load_data("builtin:sentences", "train", "heldout")
    heldout = load_data("builtin:sentences", "heldout", "heldout")
    assert not calibration.has_targets and len(calibration) + len(heldout) == len(texts)
    ids, mask = heldout.inputs
    assert ids.shape == mask.shape and ids.dtype == torch.long


def test_factory_returning_tensors(factory_file) -> None:
    path = factory_file(TINY_MODEL_SOURCE)
    data = load_data(f"{path}:digits_data", None, "heldout")
    assert len(data) == 20 and data.has_targets
    assert [len(b) for b in data.batches(8)] == [8, 8, 4]
    unlabeled = load_data(f"{path}:unlabeled_data", None, "heldout")
    assert not unlabeled.has_targets and len(unlabeled) == 12
    assert len(load_data(f"{path}:digits_data", "heldout", "heldout")) == 4


COUNTING_DATASET = """
import torch

class Counting(torch.utils.data.Dataset):
    reads = 0
    def __len__(self):
        return 1000
    def __getitem__(self, i):
        Counting.reads += 1
        return torch.full((3,), float(i)), i % 10

def make():
    return Counting()
"""


def test_dataset_factory_reads_only_what_a_batch_needs(factory_file) -> None:
    path = factory_file(COUNTING_DATASET, name="counting.py")
    data = load_data(f"{path}:make", None, "heldout")
    assert isinstance(data, DatasetData) and data.has_targets and len(data) == 1000
    dataset = data.dataset
    before = type(dataset).reads
    first = next(data.batches(16))
    assert type(dataset).reads - before == 16
    assert first.inputs[0].shape == (16, 3) and first.targets.tolist() == [i % 10 for i in range(16)]


def write_image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
            Image.fromarray(pixels, mode="L").save(root / label / f"{i}.png")


def test_image_folder(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "images")
    data = load_data(str(tmp_path / "images"), None, "heldout")
    batch = next(data.batches(4))
    assert batch.inputs[0].shape == (4, 1, 8, 8)
    assert sorted(t for b in data.batches(4) for t in b.targets.tolist()) == [0, 0, 0, 1, 1, 1]
    first = np.asarray(Image.open(tmp_path / "images" / "cat" / "0.png"), dtype=np.float32) / 255
    assert np.allclose(batch.inputs[0][0, 0].numpy(), first)


def test_unreadable_image_is_a_one_line_input_error(tmp_path: Path) -> None:
    from compress.errors import InputError

    write_image_folder(tmp_path / "images")
    (tmp_path / "images" / "cat" / "broken.png").write_bytes(b"not a png")
    data = load_data(str(tmp_path / "images"), None, "heldout")
    with pytest.raises(InputError, match=r"cannot read image .*broken\.png"):
        list(data.batches(8))


def test_unknown_split_is_rejected() -> None:
    from compress.errors import InputError

    with pytest.raises(InputError, match="unknown split"):
        load_data("builtin:digits", "validation", "heldout")
