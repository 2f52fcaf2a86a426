"""The remedies for negative transfer in ftcourse.experiments: each runs and does what its name says."""

import pytest
import torch

from ftcourse import experiments, lab, models

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def conflict():
    return lab.target("conflict", 8, test_per_class=10)


@pytest.mark.parametrize("remedy", list(experiments.REMEDIES))
def test_every_remedy_trains_and_reports_accuracy_and_error(conflict, remedy):
    result = experiments.remedy_run(conflict, remedy, steps=4, batch_size=16)
    assert result["remedy"] == remedy and 0 <= result["accuracy"] <= 1
    assert result["error"] == pytest.approx(1 - result["accuracy"])


def test_another_source_starts_from_the_named_checkpoint(conflict, monkeypatch):
    asked = []
    real = models.pretrained
    monkeypatch.setattr(models, "pretrained", lambda name="lab": asked.append(name) or real(name))
    experiments.remedy_run(conflict, "another source", other_source="lab-textures", steps=2, batch_size=16)
    assert asked[0] == "lab-textures"


def test_re_init_top_keeps_the_lower_stages_and_redraws_the_upper_ones(conflict, monkeypatch):
    seen = {}
    real_fit = experiments.fit

    def spy(model, *args, **kwargs):
        pretrained = models.pretrained("lab")
        seen.update({name: all(torch.equal(p, q) for p, q in zip(model.stage(name).parameters(),
                                                                   pretrained.stage(name).parameters()))
                     for name in pretrained.stage_names[:-1]})
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(experiments, "fit", spy)
    experiments.remedy_run(conflict, "re-init top", steps=2, batch_size=16)
    assert seen == {"stem": True, "layer1": True, "layer2": True, "layer3": False, "layer4": False}


def test_an_unknown_remedy_lists_the_known_ones(conflict):
    with pytest.raises(ValueError, match="'lower rate'.*'another source'"):
        experiments.remedy_run(conflict, "prayer")


def test_scratch_from_a_torchvision_model_has_its_architecture_with_fresh_weights():
    torchvision = pytest.importorskip("torchvision")
    reference = models.from_torchvision(torchvision.models.resnet18(num_classes=7))
    model = experiments.make_model("scratch", 3, pretrained=reference, seed=1)
    assert type(model.layer4) is type(reference.layer4) and model.num_classes == 3
    assert [p.shape for p in model.layer4.parameters()] == [p.shape for p in reference.layer4.parameters()]
    assert not torch.equal(model.layer4[0].conv1.weight, reference.layer4[0].conv1.weight)
    again = experiments.make_model("scratch", 3, pretrained=reference, seed=1)
    assert torch.equal(model.layer4[0].conv1.weight, again.layer4[0].conv1.weight)
