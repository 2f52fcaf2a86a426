"""Tests for the model-level helpers of ftcourse.measure: features, weight_distance, source_accuracy."""

import math

import pytest
import torch

from ftcourse import models
from ftcourse.data import ImageData, Task
from ftcourse.measure import features, source_accuracy, transferability, weight_distance
from ftcourse.train import evaluate, fit


pytestmark = pytest.mark.usefixtures("one_thread")


def small_model(num_classes=2, seed=0):
    torch.manual_seed(seed)
    return models.resnet(num_classes, width=8, blocks=(1, 1))  # stem 8, layer1 8, layer2 16 channels


@pytest.fixture(scope="module")
def pretrained(learnable):
    """A small model trained on the learnable problem: the "source task" it is pretrained on."""
    model = small_model()
    fit(model, learnable, epochs=3, lr=0.05, batch_size=32)
    return model.eval()


# --- features ------------------------------------------------------------------------------------------------------

def test_features_have_one_row_per_image_and_the_width_of_the_last_stage(learnable):
    out = features(small_model(), learnable)
    assert out.shape == (256, 16)
    assert out.dtype == torch.float32 and out.device.type == "cpu" and not out.requires_grad


@pytest.mark.parametrize("stage, width", [("stem", 8), ("layer1", 8), ("layer2", 16)])
def test_features_equal_model_features_in_eval_mode_for_every_stage(learnable, stage, width):
    images, labels = learnable
    model = small_model()
    out = features(model, (images[:40], labels[:40]), stage, batch_size=16)  # three batches: 16, 16, 8
    model.eval()
    with torch.no_grad():
        direct = model.features(images[:40], upto=stage)
    assert out.shape == (40, width)
    torch.testing.assert_close(out, direct)


def test_features_do_not_depend_on_the_batch_size(learnable):
    model = small_model().train()  # in training mode BatchNorm would use each batch's statistics
    torch.testing.assert_close(features(model, learnable, batch_size=7), features(model, learnable))


def test_features_run_in_eval_mode_and_restore_every_module_mode(learnable):
    model = small_model()
    for p in model.stem.parameters():
        p.requires_grad_(False)
    model.train()  # StagedNet.train keeps the frozen stem's BatchNorm in eval mode
    modes = [m.training for m in model.modules()]
    assert True in modes and False in modes
    seen = []
    model.layer1.register_forward_hook(lambda module, args, out: seen.append(module.training))
    features(model, learnable, batch_size=100)
    assert seen == [False, False, False]
    assert [m.training for m in model.modules()] == modes
    model.eval()
    features(model, learnable)
    assert not any(m.training for m in model.modules())


def test_features_accept_images_a_task_and_labels_beyond_the_head(learnable):
    images, labels = learnable
    model = small_model()
    from_images = features(model, images[:20])
    # A task's test split is used (as by predict); its 10 classes are more than the model's head has.
    test = ImageData(images[:20], torch.arange(20) % 10)
    task = Task("ten", ImageData(images[20:30], torch.arange(10)), test, test)
    torch.testing.assert_close(features(model, task), from_images)
    torch.testing.assert_close(features(model, task.train), features(model, images[20:30]))


@pytest.mark.parametrize("stage, message", [("head", "stop before the head"), ("layer3", "no stage 'layer3'")])
def test_features_refuse_the_head_and_unknown_stages(learnable, stage, message):
    with pytest.raises(ValueError, match=message):
        features(small_model(), learnable, stage)


# --- weight_distance -----------------------------------------------------------------------------------------------

def stage_vector(model, stage):
    return torch.cat([p.detach().flatten() for p in model.stage(stage).parameters()])


def test_weight_distance_is_zero_for_a_copy():
    model = small_model()
    assert weight_distance(models.copy_model(model), model) == {name: 0.0 for name in (*model.stage_names, "total")}


def test_weight_distance_of_a_constant_shift_is_the_shift_times_the_root_of_the_parameter_count():
    reference = small_model()
    model = models.copy_model(reference)
    with torch.no_grad():
        for p in model.layer1.parameters():
            p.add_(0.01)
        for p in model.head.parameters():
            p.sub_(0.1)
    n_layer1, n_head = stage_vector(model, "layer1").numel(), stage_vector(model, "head").numel()
    distance = weight_distance(model, reference)
    assert distance["layer1"] == pytest.approx(0.01 * math.sqrt(n_layer1), rel=1e-5)
    assert distance["head"] == pytest.approx(0.1 * math.sqrt(n_head), rel=1e-5)
    assert distance["stem"] == distance["layer2"] == 0.0
    assert distance["total"] == pytest.approx(math.sqrt(0.01**2 * n_layer1 + 0.1**2 * n_head), rel=1e-5)

    relative = weight_distance(model, reference, relative=True)
    assert relative["layer1"] == pytest.approx(0.01 * math.sqrt(n_layer1) / stage_vector(reference, "layer1").norm().item(),
                                               rel=1e-5)
    all_reference = torch.cat([stage_vector(reference, s) for s in reference.stage_names])
    assert relative["total"] == pytest.approx(distance["total"] / all_reference.norm().item(), rel=1e-5)


def test_weight_distance_skips_a_head_of_another_size():
    reference = small_model()
    model = models.replace_head(models.copy_model(reference), 5)
    with torch.no_grad():
        model.stem[0].weight.add_(0.01)
    distance = weight_distance(model, reference)
    assert "head" not in distance
    assert distance["total"] == pytest.approx(0.01 * math.sqrt(model.stem[0].weight.numel()), rel=1e-5)


def test_weight_distance_refuses_models_with_nothing_in_common():
    with pytest.raises(ValueError, match="same shapes"):
        weight_distance(small_model(), models.resnet(3, width=4, blocks=(1, 1)))


# --- source_accuracy -----------------------------------------------------------------------------------------------

def test_an_unchanged_body_keeps_the_pretrained_accuracy(pretrained, learnable):
    finetuned = models.replace_head(models.copy_model(pretrained), 3)  # a new head for a 3-class target
    own = evaluate(pretrained, learnable)["accuracy"]
    assert own > 0.9
    assert source_accuracy(finetuned, pretrained, learnable) == own
    assert finetuned.num_classes == 3  # the fine-tuned model itself is left as it was


def test_a_scrambled_body_forgets_the_source_task(pretrained, learnable):
    finetuned = models.replace_head(models.copy_model(pretrained), 3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in finetuned.named_parameters():
            if not name.startswith("head"):
                p.copy_(p.flatten()[torch.randperm(p.numel(), generator=g)].view_as(p))
    before = [p.clone() for p in pretrained.parameters()]
    forgotten = source_accuracy(finetuned, pretrained, learnable)
    assert forgotten < evaluate(pretrained, learnable)["accuracy"] - 0.2
    assert all(torch.equal(a, b) for a, b in zip(before, pretrained.parameters()))


def test_source_accuracy_uses_the_test_split_of_a_source_task(pretrained, learnable):
    images, labels = learnable
    task = Task("bright", ImageData(images[:200], labels[:200]), ImageData(images[:10], labels[:10]),
                ImageData(images[200:], labels[200:]))
    finetuned = models.replace_head(models.copy_model(pretrained), 3)
    expected = evaluate(pretrained, (images[200:], labels[200:]))["accuracy"]
    assert source_accuracy(finetuned, pretrained, task) == expected


def test_source_accuracy_refuses_a_body_of_another_model(pretrained, learnable):
    other = models.resnet(3, width=4, blocks=(1, 1))
    with pytest.raises(ValueError, match="fine-tuned from `pretrained`"):
        source_accuracy(other, pretrained, learnable)


# --- transferability -----------------------------------------------------------------------------------------------

def test_transferability_scores_a_trained_source_above_a_random_one(pretrained, learnable):
    data = ImageData(*learnable)
    trained = transferability(pretrained, data)
    random = transferability(small_model(seed=3).eval(), data)
    assert set(trained) == {"logme", "hscore", "knn", "leep", "nce"}
    assert all(math.isfinite(v) for v in trained.values())
    assert trained["knn"] > 0.9  # bright vs dark: even random features separate it, so no comparison here
    for score in ("logme", "leep", "nce"):
        assert trained[score] > random[score], score


def test_transferability_uses_only_training_data_and_leaves_the_model_as_it_was(pretrained, learnable):
    data = ImageData(*learnable)
    task = Task("t", data, data, data, "same data")
    with pytest.raises(ValueError, match="pass task.train"):
        transferability(pretrained, task)
    pretrained.train()
    transferability(pretrained, data)
    assert pretrained.training and pretrained.head.training
    pretrained.eval()
