import ast
import pathlib

import pytest
import torch
import torchvision

from ftcourse import models


def test_resnet_has_named_stages_and_maps_images_to_class_scores():
    model = models.resnet(num_classes=7, width=8, blocks=(1, 2, 1))
    assert model.stage_names == ("stem", "layer1", "layer2", "layer3", "head")
    assert len(model.layer2) == 2
    out = model(torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))
    assert out.shape == (3, 7) and model.num_classes == 7


def test_uint8_and_float_images_give_the_same_output():
    model = models.resnet(3, width=8).eval()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    assert torch.allclose(model(images), model(images.float() / 255), atol=1e-5)


def test_features_of_each_stage_have_that_stage_width():
    model = models.resnet(3, width=8)
    images = torch.zeros(2, 3, 32, 32)
    assert model.features(images, "stem").shape == (2, 8)
    assert model.features(images, "layer3").shape == (2, 32)
    assert model.features(images).shape == (2, 64)
    with pytest.raises(ValueError, match="no stage 'layer9'"):
        model.features(images, "layer9")


def test_replace_head_gives_new_classes_and_keeps_the_features():
    model = models.resnet(10, width=8).eval()
    images = torch.rand(2, 3, 32, 32)
    before = model.features(images)
    models.replace_head(model, 4)
    assert model(images).shape == (2, 4)
    assert torch.equal(before, model.features(images))
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        models.replace_head(model, 1)


def test_parameter_counts_by_stage_add_up_and_follow_freezing():
    model = models.resnet(10, width=8)
    counts = models.stage_parameter_counts(model)
    assert sum(c["trainable"] for c in counts.values()) == models.count_parameters(model)
    assert counts["head"]["trainable"] == 64 * 10 + 10
    model.stem.requires_grad_(False)
    counts = models.stage_parameter_counts(model)
    assert counts["stem"] == {"trainable": 0, "frozen": 8 * 3 * 9 + 2 * 8}
    assert models.count_parameters(model, trainable_only=True) == models.count_parameters(model) - 8 * 27 - 16


def test_frozen_batchnorm_keeps_its_running_statistics_in_train_mode():
    model = models.resnet(10, width=8)
    model.stem.requires_grad_(False)
    model.train()
    bn_stem, bn_layer1 = model.stem[1], model.layer1[0].bn1
    stem_mean, layer1_mean = bn_stem.running_mean.clone(), bn_layer1.running_mean.clone()
    model(torch.rand(8, 3, 32, 32))
    assert torch.equal(stem_mean, bn_stem.running_mean)
    assert not torch.equal(layer1_mean, bn_layer1.running_mean)


def test_torchvision_resnet18_is_wrapped_with_the_same_stage_names_and_weights():
    tv = torchvision.models.resnet18(num_classes=5).eval()
    model = models.from_torchvision(tv).eval()
    assert model.stage_names == ("stem", "layer1", "layer2", "layer3", "layer4", "head")
    assert model.layer3 is tv.layer3 and model.head is tv.fc
    images = torch.rand(2, 3, 64, 64)
    mean = torch.tensor(models.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(models.IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(model(images), tv((images - mean) / std), atol=1e-5)


def test_from_torchvision_rejects_other_models():
    with pytest.raises(TypeError, match="expects a torchvision ResNet"):
        models.from_torchvision(torch.nn.Linear(3, 3))


def test_resnet_rejects_bad_sizes():
    with pytest.raises(ValueError, match="at least one block per stage"):
        models.resnet(10, blocks=())


def test_replace_head_keeps_the_config_true_so_the_model_can_be_rebuilt():
    model = models.replace_head(models.resnet(10, width=8), 4)
    assert model.config["num_classes"] == 4
    models.resnet(**model.config).load_state_dict(model.state_dict())


def test_models_sit_at_the_bottom_importing_nothing_from_ftcourse_at_load_time():
    tree = ast.parse(pathlib.Path(models.__file__).read_text())
    imported = [node.module or "" for node in tree.body if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name.startswith("ftcourse")]
    assert not [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.level > 0]


def test_features_is_the_network_without_its_head_and_batchnorm_statistics_tell_when_they_move():
    net = models.pretrained("lab")
    features = models.Features(net)
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(features.eval()(images), models.copy_model(net).eval().features(images))
    assert not any(p is q for p in features.parameters() for q in net.parameters())  # a copy
    assert sum(p.numel() for p in features.parameters()) == sum(
        p.numel() for name, p in net.named_parameters() if not name.startswith("head."))
    before = models.batchnorm_statistics(features)
    assert before and all(name.endswith(("running_mean", "running_var")) for name in before)
    features.train()(images.float() / 255)  # a training-mode pass updates the running statistics
    after = models.batchnorm_statistics(features)
    assert any(not torch.equal(before[name], after[name]) for name in before)


def test_renormalised_changes_only_the_input_statistics_of_a_copy():
    from ftcourse.models import LAB_MEAN, renormalised

    model = models.resnet(3, width=8, blocks=(1, 1)).eval()
    raw = renormalised(model, (0, 0, 0), (1, 1, 1))
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    assert torch.equal(model.mean.flatten(), torch.tensor(LAB_MEAN))  # the original keeps its statistics
    assert torch.allclose(raw.normalise(images), images.float() / 255)
    assert not torch.allclose(raw(images), model(images))
    assert torch.equal(raw.stem[0].weight, model.stem[0].weight)
    with pytest.raises(ValueError, match="std must be 3 finite numbers, one per channel and each > 0"):
        renormalised(model, (0, 0, 0), (1, 0, 1))
    with pytest.raises(ValueError, match="mean must be 3 finite numbers"):
        renormalised(model, (0.5, 0.5), (1, 1, 1))
