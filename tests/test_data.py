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
    total = len(target.train) + len(target.test)
    assert 880 < total < 920 and abs(len(target.test) / total - 0.3) < 0.02  # 1,797 digits, about half are 5-9


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
    assert few.test is task.test and few.classes == task.classes and few.name == task.name


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
    task = data.torchvision_dataset("FashionMNIST", tmp_path, download=False)
    assert len(task.train) == 20 and len(task.test) == 10 and task.classes[0] == "T-shirt/top"
    assert task.train.images.shape[1:] == (3, 32, 32)


def test_missing_dataset_files_give_a_message_with_the_way_out(tmp_path):
    with pytest.raises(RuntimeError, match="pass download=True .*data.digits\\(\\)"):
        data.torchvision_dataset("CIFAR10", tmp_path, download=False)
    with pytest.raises(ValueError, match="supported"):
        data.torchvision_dataset("ImageNet-42", tmp_path)


def test_image_folder_reads_one_subfolder_per_class(tmp_path):
    for cls, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (20 + i, 30), colour).save(tmp_path / cls / f"{i}.png")
    task = data.image_folder(tmp_path, test_fraction=0.2)
    assert task.classes == ["blue", "red"] and len(task.train) == 8 and len(task.test) == 2
    red = task.train.images[task.train.labels == 1]
    assert red[:, 0].float().mean() > 250 and red[:, 2].float().mean() < 5


def test_image_folder_errors_say_what_layout_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="one sub-folder per class"):
        data.image_folder(tmp_path / "nowhere")
    (tmp_path / "only").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a.png")
    with pytest.raises(ValueError, match="two or more"):
        data.image_folder(tmp_path)
