import gzip
import struct

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from ftcourse import data


def test_digits_split_by_class_into_source_and_target():
    source, target = data.digits("source"), data.digits("target")
    assert source.classes == ["0", "1", "2", "3", "4"] and target.classes == ["5", "6", "7", "8", "9"]
    assert source.train.images.shape[1:] == (3, 32, 32) and source.train.images.dtype == torch.uint8
    assert set(target.train.labels.tolist()) == {0, 1, 2, 3, 4}
    total = len(target.train) + len(target.val) + len(target.test)
    assert 880 < total < 920 and abs(len(target.test) / total - 0.3) < 0.02  # 1,797 digits, about half are 5-9
    assert abs(len(target.val) / (len(target.train) + len(target.val)) - 0.2) < 0.02  # val comes out of train


def _rows(split):
    return {bytes(image.flatten().tolist()) for image in split.images}


def test_digits_splits_are_disjoint_and_the_test_split_does_not_move_when_val_is_carved():
    task = data.digits("target")
    train, val, test = _rows(task.train), _rows(task.val), _rows(task.test)
    assert not (train & val) and not (train & test) and not (val & test)
    assert torch.bincount(task.val.labels).min() >= 20  # every class is in val
    # val is carved out of the training part: the test split is the same as with a smaller val_fraction
    assert torch.equal(data.digits("target", val_fraction=0.1).test.images, task.test.images)


def test_per_class_picks_a_balanced_few_shot_subset():
    few = data.digits("target").train.per_class(7, seed=1)
    assert torch.bincount(few.labels).tolist() == [7] * 5
    with pytest.raises(ValueError, match="has only"):
        data.digits("target").train.per_class(10_000)


def test_task_per_class_thins_the_training_set_and_keeps_the_test_set():
    task = data.digits("target")
    few = task.per_class(3, seed=2)
    assert torch.bincount(few.train.labels).tolist() == [3] * 5
    assert torch.equal(few.train.images, task.train.per_class(3, seed=2).images)
    assert few.test is task.test and few.val is task.val and few.classes == task.classes and few.name == task.name


def test_from_dataset_converts_torchvision_fakedata():
    fake = torchvision.datasets.FakeData(size=12, image_size=(3, 40, 50), num_classes=3,
                                         random_offset=0)
    images = data.from_dataset(fake, size=32)
    assert images.images.shape == (12, 3, 32, 32) and images.images.dtype == torch.uint8
    assert 0 <= images.labels.min() and images.labels.max() < 3


def _write_idx(path, array):
    with gzip.open(path, "wb") if str(path).endswith(".gz") else open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape))
        f.write(array.astype(np.uint8).tobytes())


def test_torchvision_dataset_reads_files_placed_by_hand(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 20), ("t10k", 10)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    task = data.torchvision_dataset("FashionMNIST", tmp_path, download=False, val_fraction=0.5)
    assert len(task.train) == 10 and len(task.val) == 10 and len(task.test) == 10  # val comes out of train
    assert task.classes[0] == "T-shirt/top" and not (_rows(task.train) & _rows(task.val))
    assert task.train.images.shape[1:] == (3, 32, 32)


def test_missing_dataset_files_give_a_message_with_the_way_out(tmp_path):
    with pytest.raises(RuntimeError, match="pass download=True .*data.digits\\(\\)"):
        data.torchvision_dataset("CIFAR10", tmp_path, download=False)
    with pytest.raises(ValueError, match="supported"):
        data.torchvision_dataset("ImageNet-42", tmp_path)


def test_image_folder_reads_one_subfolder_per_class(tmp_path):
    for cls, (r, b) in (("red", (255, 0)), ("blue", (0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(10):  # each image a slightly different colour, so that the splits can be told apart
            Image.new("RGB", (20 + i, 30), (r, i, b)).save(tmp_path / cls / f"{i}.png")
    task = data.image_folder(tmp_path, test_fraction=0.2, val_fraction=0.25)
    assert task.classes == ["blue", "red"]
    assert (len(task.train), len(task.val), len(task.test)) == (12, 4, 4)
    assert not (_rows(task.train) & _rows(task.val)) and not (_rows(task.val) & _rows(task.test))
    red = task.train.images[task.train.labels == 1]
    assert red[:, 0].float().mean() > 250 and red[:, 2].float().mean() < 5


def test_image_folder_errors_say_what_layout_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="one sub-folder per class"):
        data.image_folder(tmp_path / "nowhere")
    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(ValueError, match="two or more"):
        data.image_folder(tmp_path)


def test_a_task_needs_three_splits_with_the_same_classes():
    part = data.ImageData(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
    with pytest.raises(TypeError, match="Task.split_val"):
        data.Task("t", part, part)  # the old (name, train, test) form
    with pytest.raises(ValueError, match="one list of classes"):
        data.Task("t", part, part, data.ImageData(part.images, part.labels, ["a", "c"]))


def test_split_val_carves_a_stratified_validation_set_out_of_train():
    images = torch.arange(40, dtype=torch.uint8).view(40, 1, 1, 1).expand(40, 3, 2, 2).contiguous()
    train = data.ImageData(images, torch.arange(40) % 4)
    task = data.Task.split_val("t", train, train.subset(range(4)), val_fraction=0.3, seed=3)
    assert torch.bincount(task.val.labels).tolist() == [3] * 4 and len(task.train) == 28
    assert not (_rows(task.train) & _rows(task.val))


def test_fingerprints_change_with_any_pixel_and_stay_for_equal_data():
    task = data.digits("target")
    again = data.digits("target")
    assert task.fingerprint() == again.fingerprint()
    again.val.images[0, 0, 0, 0] ^= 1
    assert task.fingerprint() != again.fingerprint()
    assert task.per_class(3).fingerprint() != task.fingerprint()


def test_a_task_refuses_bad_validation_sets_and_says_what_to_do():
    from ftcourse import lab

    task = lab.target("related", 5, scarce_val=True, test_per_class=2)
    with pytest.raises(ValueError, match="no validation set 'tiny'.*also measures \\['scarce'\\]"):
        task.choosing_on("tiny")
    with pytest.raises(ValueError, match="leave val_per_class and val_seed at their defaults"):
        lab.target("related", 5, val_per_class=5, scarce_val=True)
    with pytest.raises(ValueError, match="must be an ImageData"):
        data.Task("x", task.train, task.val, task.test, "", {"s": "not data"})
    with pytest.raises(ValueError, match="give them different names"):
        data.Task("x", task.train, task.val, task.test, "", {"val": task.val})
