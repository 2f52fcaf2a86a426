"""Self-supervised pretraining (ftcourse.selfsup): the NT-Xent loss, the random views, a quick run, the shipped file."""

import hashlib
import json
import math

import pytest
import torch

from ftcourse import cli, lab, measure, models, pretrain, selfsup

NAME = "lab-simclr"


def quick_recipe(epochs=2):
    recipe = pretrain.quick_version(pretrain.RECIPES[NAME])
    return {**recipe, "fit": {**recipe["fit"], "epochs": epochs}}


def nt_xent_by_the_formula(z1, z2, temperature):
    """The paper's formula, term by term, with Python loops: l(i, j) averaged over all 2N ordered positive pairs."""
    z = [v / v.norm() for v in torch.cat([z1, z2]).double()]
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        below = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / temperature) / below)
    return total / (2 * n)


# ------------------------------------------------------------------------------------------------------------------
# The loss.

def test_nt_xent_of_two_pairs_matches_a_hand_computation():
    e = torch.eye(2)
    # Each view's partner is identical (similarity 1) and both negatives are orthogonal (0): log(1 + 2 exp(-1/tau)).
    assert float(selfsup.nt_xent(e, e, temperature=0.5)) == pytest.approx(math.log(1 + 2 * math.exp(-2)), abs=1e-6)
    # Partners swapped: each partner is orthogonal (0), one negative identical (1): log(2 + exp(1/tau)).
    assert float(selfsup.nt_xent(e, e.flip(0), temperature=0.5)) == pytest.approx(math.log(2 + math.exp(2)),
                                                                                  abs=1e-6)
    assert float(selfsup.nt_xent(e, e, temperature=1.0)) == pytest.approx(math.log(1 + 2 * math.exp(-1)), abs=1e-6)


def test_nt_xent_is_the_papers_formula_term_by_term():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    for temperature in (0.1, 0.5, 2.0):
        assert float(selfsup.nt_xent(z1, z2, temperature)) == pytest.approx(
            nt_xent_by_the_formula(z1, z2, temperature), rel=1e-5)


def test_nt_xent_ignores_the_length_of_each_projection_and_has_finite_gradients():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    scaled = z1 * torch.tensor([[2.0], [0.5], [7.0], [1.0]])
    assert torch.allclose(selfsup.nt_xent(z1, z2), selfsup.nt_xent(scaled, z2))
    z1.requires_grad_(True)
    selfsup.nt_xent(z1, z2).backward()
    assert torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0


@pytest.mark.parametrize("temperature", [0, -0.5, float("nan"), float("inf"), True, "0.5"])
def test_nt_xent_refuses_a_temperature_that_is_not_positive(temperature):
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        selfsup.nt_xent(torch.eye(2), torch.eye(2), temperature)


def test_nt_xent_refuses_a_batch_of_one_and_says_to_use_a_larger_batch():
    with pytest.raises(ValueError, match="at least 2 images per batch.*larger batch_size"):
        selfsup.nt_xent(torch.ones(1, 3), torch.ones(1, 3))


def test_nt_xent_refuses_views_of_different_shapes():
    with pytest.raises(ValueError, match=r"same shape.*\(3, 2\) and \(2, 2\)"):
        selfsup.nt_xent(torch.ones(3, 2), torch.ones(2, 2))


# ------------------------------------------------------------------------------------------------------------------
# The views.

@pytest.fixture(scope="module")
def images():
    return lab.source(2, test_per_class=1).train.images  # 16 uint8 images


def test_views_are_the_same_for_the_same_generator_seed(images):
    first = selfsup.two_views(images, torch.Generator().manual_seed(3))
    again = selfsup.two_views(images, torch.Generator().manual_seed(3))
    other = selfsup.two_views(images, torch.Generator().manual_seed(4))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_the_two_views_of_an_image_differ_and_are_images_in_0_1(images):
    first, second = selfsup.two_views(images, torch.Generator().manual_seed(0))
    assert first.shape == second.shape == images.shape and first.dtype == torch.float32
    assert 0 <= float(first.min()) and float(first.max()) <= 1
    differs = (first - second).flatten(1).abs().amax(1) > 0.05
    assert bool(differs.all()), "every image's two views should differ"


def test_a_full_size_square_crop_is_the_image_itself(images):
    crop = selfsup.random_resized_crop(images, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(crop, images.float() / 255, atol=1e-5)


def test_a_hue_turn_of_a_third_takes_red_to_green_and_keeps_grey():
    pixels = torch.tensor([[1.0, 0.0, 0.0], [0.4, 0.4, 0.4]]).view(2, 3, 1, 1)
    turned = selfsup.rotate_hue(pixels, torch.full((2,), 2 * math.pi / 3))
    assert torch.allclose(turned.flatten(1), torch.tensor([[0.0, 1.0, 0.0], [0.4, 0.4, 0.4]]), atol=1e-6)


def test_colour_distortion_keeps_grey_images_grey():
    g = torch.Generator().manual_seed(0)
    greys = torch.rand(32, 1, 8, 8, generator=g).expand(-1, 3, -1, -1)
    out = selfsup.colour_distortion(greys, g, strength=1.0)
    assert torch.allclose(out[:, 0], out[:, 1], atol=1e-5) and torch.allclose(out[:, 1], out[:, 2], atol=1e-5)


def test_two_views_refuses_images_that_are_not_an_rgb_batch(images):
    with pytest.raises(ValueError, match=r"batch of RGB images \(N, 3, H, W\); got shape \(3, 32, 32\)"):
        selfsup.two_views(images[0])


# ------------------------------------------------------------------------------------------------------------------
# Pretraining.

@pytest.fixture(scope="module")
def quick_run(one_thread):
    return selfsup.pretrain_contrastive(quick_recipe(epochs=6), progress=False)


def test_the_loss_falls_on_a_quick_run(quick_run):
    _, info = quick_run
    losses = info["loss_per_epoch"]  # chance is log(2N - 1) = log(127) = 4.84 for batches of N = 64 images
    assert len(losses) == 6 and sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.05, losses


def test_pretraining_gives_the_lab_network_with_an_identity_head(quick_run):
    model, info = quick_run
    reference = models.resnet(**pretrain.RECIPE["model"])
    assert model.stage_names == reference.stage_names
    body = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("head.")}
    assert body == {k: v.shape for k, v in reference.state_dict().items() if not k.startswith("head.")}
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    assert torch.equal(model(images), model.features(images))  # the head is the identity: no classes were learned
    assert 0 <= info["source_probe_accuracy"] <= 1 and info["seconds"] > 0


def test_pretraining_is_deterministic_for_its_recipe(quick_run, one_thread):
    again, _ = selfsup.pretrain_contrastive(quick_recipe(epochs=6), progress=False)
    first = quick_run[0].state_dict()
    assert all(torch.equal(first[k], v) for k, v in again.state_dict().items())


def test_a_recipe_without_its_contrastive_part_is_refused_with_what_it_needs():
    recipe = {k: v for k, v in quick_recipe().items() if k != "contrastive"}
    with pytest.raises(ValueError, match=r"no 'contrastive'.*RECIPES\['lab-simclr'\]"):
        selfsup.pretrain_contrastive(recipe)
    with pytest.raises(ValueError, match="at least 2 images"):
        selfsup.pretrain_contrastive({**quick_recipe(), "fit": {**quick_recipe()["fit"], "batch_size": 1}})


def test_the_pretrain_command_makes_the_self_supervised_checkpoint(tmp_path, capsys, one_thread):
    out = tmp_path / "simclr.pt"
    assert cli.main(["pretrain", "--quick", "--source", NAME, "--out", str(out)]) == 0
    assert "source probe accuracy" in capsys.readouterr().out
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest() and "contrastive" in record["recipe"]
    assert models.load_checkpoint(out).num_classes == selfsup.feature_width(models.pretrained("lab"))


# ------------------------------------------------------------------------------------------------------------------
# The shipped checkpoint.

def test_the_shipped_checkpoint_is_small_loads_and_matches_its_recorded_sha256():
    path = models.CHECKPOINT_DIR / f"{NAME}.pt"
    record = json.loads(path.with_suffix(".json").read_text())
    assert path.stat().st_size <= 2 * 2**20
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["recipe"] == json.loads(json.dumps(pretrain.RECIPES[NAME]))  # made by the recipe as it is now
    model = models.pretrained(NAME)
    assert model.checkpoint_file == path and model.stage_names == models.pretrained("lab").stage_names
    assert torch.equal(model.head.weight, torch.eye(model.num_classes)) and not model.head.bias.any()


def test_the_shipped_features_tell_the_source_shapes_apart_though_pretraining_saw_no_label(one_thread):
    record = json.loads((models.CHECKPOINT_DIR / f"{NAME}.json").read_text())
    assert record["source_probe_accuracy"] > 0.8  # chance is 1/8; the measured figure is in the record
    task = lab.source(30, test_per_class=30)  # a small probe here, on the same split's first images
    torch.manual_seed(0)
    untrained = models.resnet(**pretrain.RECIPES[NAME]["model"]).eval()
    probes = {}
    for name, model in (("simclr", models.pretrained(NAME)), ("untrained", untrained)):
        train, test = measure.features(model, task.train), measure.features(model, task.test)
        probes[name] = measure.linear_probe_accuracy(train, task.train.labels, test, task.test.labels)
    assert probes["simclr"] > 0.9 and probes["simclr"] > probes["untrained"] + 0.15, probes  # measured 1.0, 0.33


def test_the_cost_of_the_self_supervised_checkpoint_counts_images_not_feature_dimensions():
    recipe = pretrain.RECIPES[NAME]
    cost = pretrain.cost(NAME)
    per_epoch = recipe["data"]["n_per_class"] * len(lab.SOURCE_SHAPES) // recipe["fit"]["batch_size"]
    assert cost["steps"] == recipe["fit"]["epochs"] * per_epoch and cost["seconds"] > 0
