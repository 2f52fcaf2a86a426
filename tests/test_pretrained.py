import hashlib
import json
import shutil
import urllib.error

import pytest
import torch
import torchvision

from ftcourse import cli, lab, models, pretrain
from ftcourse.train import evaluate


def test_the_shipped_lab_checkpoint_loads_and_knows_the_source_task():
    model = models.pretrained("lab")
    assert model.stage_names[-1] == "head" and model.num_classes == len(lab.SOURCE_SHAPES)
    assert (pretrain.CHECKPOINT_DIR / "lab.pt").stat().st_size < 10 * 2**20
    assert evaluate(model, lab.source(1, test_per_class=20).test)["accuracy"] > 0.95


@pytest.mark.parametrize("name", list(pretrain.RECIPES))
def test_every_shipped_checkpoint_loads_and_knows_its_own_source_task(name):
    model = models.pretrained(name)
    recipe = pretrain.RECIPES[name]
    source = lab.target(recipe["data"].get("task", "source"), 1, test_per_class=20)
    assert model.num_classes == source.num_classes == recipe["model"]["num_classes"]
    assert (pretrain.CHECKPOINT_DIR / f"{name}.pt").stat().st_size < 10 * 2**20
    assert evaluate(model, source.test)["accuracy"] > (0.6 if name == "lab-early" else 0.9)


def test_the_pretrain_command_offers_exactly_the_recipes():
    choices = next(a.choices for a in cli.build_parser()._subparsers._group_actions[0].choices["pretrain"]._actions
                   if a.dest == "source")
    assert choices == [*pretrain.RECIPES, "all"]


def test_pretrain_command_makes_another_source_and_refuses_one_out_for_all(tmp_path):
    out = tmp_path / "colours.pt"
    assert cli.main(["pretrain", "--quick", "--source", "lab-colours", "--out", str(out)]) == 0
    state = torch.load(out, weights_only=True)
    assert state["config"]["num_classes"] == len(lab.HUES) and state["recipe"]["data"]["task"] == "hues"
    with pytest.raises(SystemExit, match="one --source"):
        cli.main(["pretrain", "--quick", "--source", "all", "--out", str(out)])


def test_a_changed_checkpoint_is_refused(tmp_path, monkeypatch):
    shutil.copytree(pretrain.CHECKPOINT_DIR, tmp_path / "checkpoints")
    monkeypatch.setattr(pretrain, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    path = tmp_path / "checkpoints" / "lab.pt"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="changed or damaged"):
        models.pretrained("lab")


def test_unknown_pretrained_names_list_the_available_ones():
    with pytest.raises(ValueError, match="'lab'.*'resnet18-imagenet'"):
        models.pretrained("vit-huge")


def test_pretrain_command_runs_the_recipe_end_to_end_and_deterministically(tmp_path, capsys):
    first, second = tmp_path / "a" / "lab.pt", tmp_path / "b" / "lab.pt"
    assert cli.main(["pretrain", "--quick", "--out", str(first)]) == 0
    assert cli.main(["pretrain", "--quick", "--out", str(second)]) == 0
    assert "source test accuracy" in capsys.readouterr().out
    record = json.loads(first.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert first.read_bytes() == second.read_bytes()
    state = torch.load(first, weights_only=True)
    model = models.resnet(**state["config"])
    model.load_state_dict(state["state_dict"])


def test_imagenet_resnet18_loads_weights_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18()
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    target = tmp_path / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[1]
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    model = models.pretrained("resnet18-imagenet")
    assert torch.equal(model.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model.head.out_features == 1000 and model.stage_names[1] == "layer1"


def test_imagenet_resnet18_offline_points_to_the_course_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(RuntimeError, match=r"pretrained\('lab'\)"):
        models.pretrained("resnet18-imagenet")
