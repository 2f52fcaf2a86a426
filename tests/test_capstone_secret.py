"""The capstone's secret stays secret: every stream of it is drawn from a hash of the whole secret, and the class
names say nothing of the definition."""

import torch

from ftcourse import capstone


def test_secrets_that_differ_only_in_their_high_bits_give_different_targets():
    low = 12345
    for high in (2**32, 2**40, 2**61):
        assert capstone.definition(low) != capstone.definition(low + high)
        for split in ("train", "test"):
            a, b = capstone.images(low, 2, split), capstone.images(low + high, 2, split)
            assert not torch.equal(a.images, b.images), (high, split)


def test_the_streams_are_independent_hashes_of_the_secret():
    seeds = {stream: capstone.stream_seed(2026, stream) for stream in ("definition", "train", "test")}
    assert len(set(seeds.values())) == 3 and all(0 <= s < 2**64 for s in seeds.values())
    assert capstone.stream_seed(2026, "test") != capstone.stream_seed(2026, "train") + 1


def test_class_names_are_anonymous():
    train, test = capstone.practice()
    assert train.classes == test.classes == [f"class {k}" for k in range(capstone.CLASSES)]
    assert not any("hue" in name or "/" in name for name in train.classes)
