import pytest
import torch

from ftcourse import lab
from ftcourse.data import ImageData, Task


def test_images_are_deterministic_for_a_seed_and_differ_between_seeds():
    a = lab.make_images("source", 3, seed=1)
    b = lab.make_images("source", 3, seed=1)
    c = lab.make_images("source", 3, seed=2)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert a.images.dtype == torch.uint8 and a.images.shape == (24, 3, 32, 32)


def test_every_task_is_balanced_with_named_classes():
    for name, (classes, _) in lab.TASKS.items():
        task = lab.target(name, 4, val_per_class=3, test_per_class=2)
        assert isinstance(task, Task) and task.classes == list(classes)
        assert torch.bincount(task.train.labels).tolist() == [4] * len(classes)
        assert torch.bincount(task.val.labels).tolist() == [3] * len(classes)
        assert torch.bincount(task.test.labels).tolist() == [2] * len(classes)


def test_smaller_training_sets_are_prefixes_of_larger_ones():
    small, large = lab.make_images("related", 5, seed=3), lab.make_images("related", 20, seed=3)
    assert torch.equal(small.images, large.images[: len(small)])


def test_the_val_and_test_sets_do_not_depend_on_the_training_seed():
    a, b = lab.target("conflict", 2, seed=0), lab.target("conflict", 2, seed=7)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.val.images, b.val.images)


@pytest.mark.parametrize("name", ["related", "conflict", "mixed"])
def test_train_val_and_test_are_disjoint_draws(name):
    task = lab.target(name, 40, val_per_class=40, test_per_class=40, relatedness=0.5)
    rows = [{bytes(image.flatten().tolist()) for image in split.images} for split in (task.train, task.val, task.test)]
    assert len(rows[0] | rows[1] | rows[2]) == sum(len(r) for r in rows)  # no image in two splits


def test_shifted_conditions_keep_the_classes_and_change_the_look():
    usual = lab.make_images("related", 20, split="test", seed=10_000)
    shifted = lab.make_images("related", 20, split="test", seed=10_000, conditions="shifted")
    assert torch.equal(usual.labels, shifted.labels) and usual.classes == shifted.classes
    assert shifted.images.float().mean() > usual.images.float().mean() + 40  # light backgrounds
    with pytest.raises(ValueError, match="conditions"):
        lab.make_images("related", 2, conditions="rainy")


def test_conflict_labels_are_the_hue_and_source_colours_are_random():
    task = lab.target("conflict", 30, test_per_class=1)
    images = task.train.images.float()
    # Mean colour of the brightest pixels (the shape) per class: red has most red, blue most blue, ...
    rgb = torch.stack([images[task.train.labels == c].amax(dim=(2, 3)).mean(0) for c in range(5)])
    assert rgb[0].argmax() == 0 and rgb[2].argmax() == 1 and rgb[3].argmax() == 2  # red, green, blue
    source = lab.make_images("source", 30).images.float().amax(dim=(2, 3))
    per_class = torch.stack([source[lab.make_images("source", 30).labels == c].mean(0) for c in range(8)])
    assert per_class.std(0).max() < 25  # colour says nothing about a source class


def test_relatedness_interpolates_between_conflict_and_related():
    shapes_of = lambda r: lab._factors_for("mixed", torch.arange(2000) % 5, torch.Generator().manual_seed(0), r)
    for r in (0.0, 0.3, 1.0):
        by_new_shape = (shapes_of(r)["shape"] >= len(lab.SOURCE_SHAPES)).float().mean().item()
        assert by_new_shape == pytest.approx(r, abs=0.04)


def test_shifted_keeps_the_source_labels_under_other_conditions():
    shifted, source = lab.target("shifted", 10), lab.source(10, test_per_class=1)
    assert shifted.classes == source.classes
    assert shifted.train.images.float().mean() > source.train.images.float().mean() + 50  # light backgrounds


def test_bad_arguments_say_what_is_allowed():
    with pytest.raises(ValueError, match="the lab has"):
        lab.target("cats", 5)
    with pytest.raises(ValueError, match="positive int"):
        lab.target("related", 0)
    with pytest.raises(ValueError, match=r"relatedness must lie in \[0, 1\]"):
        lab.target("mixed", 5, relatedness=1.5)


def test_every_shape_draws_a_visible_distinct_mask():
    u = torch.linspace(-1.2, 1.2, 48)
    v, u = torch.meshgrid(u, u, indexing="ij")
    masks = {name: (lab.shape_distance(name, u, v) < 0) for name in lab.SHAPES}
    for name, mask in masks.items():
        assert 0.05 < mask.float().mean() < 0.7, name
    names = list(masks)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert (masks[a] ^ masks[b]).float().mean() > 0.05, (a, b)


def test_show_draws_a_labelled_grid():
    fig = lab.target("related", 2).show(n=8)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert len(titles) == 8 and set(titles) <= set(lab.NEW_SHAPES)


def test_images_are_made_on_the_cpu_by_default():
    default = lab.make_images("unrelated", 2, seed=0)
    assert default.images.device.type == "cpu"
    assert torch.equal(default.images, lab.make_images("unrelated", 2, seed=0, device="cpu").images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_rendering_on_the_gpu_draws_the_same_images_up_to_rounding():
    for task in ("unrelated", "shifted", "mixed"):
        cpu = lab.make_images(task, 20, seed=0, relatedness=0.5).images.int()
        gpu = lab.make_images(task, 20, seed=0, relatedness=0.5, device="cuda").images.cpu().int()
        # The same random draws; float rounding may move a pixel by a level, or flip one that sits on an edge.
        assert ((cpu - gpu).abs() > 1).float().mean() < 1e-4


def test_hues_source_labels_are_hue_bins_and_the_shape_is_random():
    labels = torch.arange(800) % len(lab.HUES)
    factors = lab._factors_for("hues", labels, torch.Generator().manual_seed(0), 1.0)
    assert torch.equal((factors["hue"] * len(lab.HUES)).floor().long(), labels)  # class k: hue in [k/8, (k+1)/8)
    shape_counts = torch.bincount(factors["shape"][labels == 0], minlength=len(lab.SOURCE_SHAPES))
    assert (shape_counts > 0).all()  # every source shape appears in one hue class


def test_noise_bank_is_unit_variance_and_the_same_on_every_call():
    bank = lab.noise_bank()
    assert bank.shape == (lab.NOISE_PATTERNS, 3, lab.SIZE, lab.SIZE) and bank is lab.noise_bank()
    assert abs(bank.mean().item()) < 0.01 and bank.std().item() == pytest.approx(1.0, abs=0.01)


def test_validation_as_scarce_as_the_labels_is_drawn_with_each_seed():
    generous = [lab.target("related", 5, test_per_class=2, seed=s) for s in (0, 1)]
    assert torch.equal(generous[0].val.images, generous[1].val.images)  # one shared, generous validation set
    scarce = [lab.target("related", 5, val_per_class=5, val_seed=s, test_per_class=2, seed=s) for s in (0, 1)]
    assert len(scarce[0].val) == 5 * scarce[0].num_classes
    assert not torch.equal(scarce[0].val.images, scarce[1].val.images)  # each replicate has its own
    assert not torch.equal(scarce[0].val.images, scarce[0].train.images)  # and they are not its training images
    assert torch.equal(scarce[0].test.images, generous[0].test.images)  # the test set stays the same
