import hashlib
import json
import pathlib
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
    assert (models.CHECKPOINT_DIR / "lab.pt").stat().st_size < 10 * 2**20
    assert evaluate(model, lab.source(1, test_per_class=20).test)["accuracy"] > 0.95


# lab-simclr learned without labels and has no classifier to test (its head is the identity on the features):
# tests/test_selfsup.py checks it with a linear probe instead.
@pytest.mark.parametrize("name", [n for n in models.SHIPPED if "contrastive" not in pretrain.RECIPES[n]])
def test_every_shipped_checkpoint_loads_and_knows_its_own_source_task(name):
    model = models.pretrained(name)
    recipe = pretrain.RECIPES[name]
    source = lab.target(recipe["data"].get("task", "source"), 1, test_per_class=20)
    assert model.num_classes == source.num_classes == recipe["model"]["num_classes"]
    assert (models.CHECKPOINT_DIR / f"{name}.pt").stat().st_size < 10 * 2**20
    assert evaluate(model, source.test)["accuracy"] > (0.6 if name == "lab-early" else 0.9)


def test_every_shipped_checkpoint_has_a_recipe_and_every_recipe_a_shipped_checkpoint():
    assert tuple(pretrain.RECIPES) == models.SHIPPED
    assert set(models.SHIPPED) < set(models.PRETRAINED)
    assert sorted(p.stem for p in models.CHECKPOINT_DIR.glob("*.pt")) == sorted(models.SHIPPED)


def test_the_pretrain_command_offers_exactly_the_shipped_checkpoints():
    """The parser imports no torch (so --help is quick): the command checks the name, against the recipes, which
    are the shipped checkpoints' own list."""
    from ftcourse.pretrain import RECIPES

    assert list(RECIPES) == list(models.SHIPPED)
    with pytest.raises(SystemExit, match=r"no such checkpoint; choose one of lab, .*text or all"):
        cli.main(["pretrain", "--quick", "--source", "imagenet"])  # text: lesson 09's language model (ftcourse.text)


def test_pretrain_command_makes_another_source_and_refuses_one_out_for_all(tmp_path):
    out = tmp_path / "colours.pt"
    assert cli.main(["pretrain", "--quick", "--source", "lab-colours", "--out", str(out)]) == 0
    state = torch.load(out, weights_only=True)
    assert state["config"]["num_classes"] == len(lab.HUES) and state["recipe"]["data"]["task"] == "hues"
    with pytest.raises(SystemExit, match="one --source"):
        cli.main(["pretrain", "--quick", "--source", "all", "--out", str(out)])


def test_a_changed_checkpoint_is_refused(tmp_path, monkeypatch):
    shutil.copytree(models.CHECKPOINT_DIR, tmp_path / "checkpoints")
    monkeypatch.setattr(models, "CHECKPOINT_DIR", tmp_path / "checkpoints")
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
    model = models.load_checkpoint(first)
    assert model.checkpoint_file == first and model.num_classes == len(lab.SOURCE_SHAPES)


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


def test_pretrained_reads_each_shipped_file_once_and_gives_a_fresh_model_each_call(tmp_path, monkeypatch):
    shutil.copytree(models.CHECKPOINT_DIR, tmp_path / "checkpoints")  # a path no earlier test has loaded
    monkeypatch.setattr(models, "CHECKPOINT_DIR", tmp_path / "checkpoints")
    reads, real_load = [], torch.load

    def counting_load(path, **kwargs):
        reads.append(path)
        return real_load(path, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    first, second = models.pretrained("lab"), models.pretrained("lab")
    assert reads == [tmp_path / "checkpoints" / "lab.pt"]
    assert first is not second
    with torch.no_grad():
        first.head.weight.zero_()  # what fine-tuning does to a model: the next one must not see it
    assert not torch.equal(first.head.weight, second.head.weight)
    assert not torch.equal(models.pretrained("lab").head.weight, first.head.weight)


def test_pretrained_says_which_file_it_loaded():
    assert models.pretrained("lab-early").checkpoint_file == models.CHECKPOINT_DIR / "lab-early.pt"
    assert models.resnet(3).checkpoint_file is None


def test_pretrained_digests_are_the_recorded_sha256_of_the_shipped_files():
    digests = models.pretrained_digests()
    assert list(digests) == list(models.SHIPPED)
    for name, digest in digests.items():
        assert digest == hashlib.sha256((models.CHECKPOINT_DIR / f"{name}.pt").read_bytes()).hexdigest()


def test_pretrain_writes_to_the_user_cache_folder_and_never_into_the_package(tmp_path, monkeypatch, capsys):
    shipped = {p.name: p.read_bytes() for p in models.CHECKPOINT_DIR.iterdir() if p.is_file()}
    monkeypatch.setenv("FTCOURSE_HOME", str(tmp_path))
    assert cli.main(["pretrain", "--quick", "--source", "lab"]) == 0
    assert {p.name: p.read_bytes() for p in models.CHECKPOINT_DIR.iterdir() if p.is_file()} == shipped
    written = tmp_path / "checkpoints" / "lab.pt"
    assert f"load_checkpoint({str(written)!r})" in capsys.readouterr().out
    assert models.load_checkpoint(written).num_classes == len(lab.SOURCE_SHAPES)


def test_the_user_checkpoint_folder_follows_ftcourse_home_then_the_xdg_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FTCOURSE_HOME", str(tmp_path / "home"))
    assert pretrain.user_checkpoint_dir() == tmp_path / "home" / "checkpoints"
    monkeypatch.delenv("FTCOURSE_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert pretrain.user_checkpoint_dir() == tmp_path / "cache" / "ftcourse" / "checkpoints"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert pretrain.user_checkpoint_dir() == pathlib.Path.home() / ".cache" / "ftcourse" / "checkpoints"


def test_the_pretraining_cost_is_read_from_the_shipped_recipe_and_record():
    from ftcourse import pretrain

    cost = pretrain.cost("lab")
    recipe = pretrain.RECIPES["lab"]
    per_epoch = recipe["data"]["n_per_class"] * recipe["model"]["num_classes"] // recipe["fit"]["batch_size"]
    assert cost["steps"] == recipe["fit"]["epochs"] * per_epoch
    assert cost["images"] == cost["steps"] * recipe["fit"]["batch_size"]
    assert cost["seconds"] > 0 and cost["device"]
    assert pretrain.cost("lab-early")["steps"] == cost["steps"] // recipe["fit"]["epochs"]
    with pytest.raises(ValueError, match="shipped"):
        pretrain.cost("imagenet")


def test_pretrain_text_writes_a_verified_folder_to_the_user_cache(tmp_path, monkeypatch, capsys):
    from ftcourse import text

    shipped = {p.name: p.read_bytes() for p in (models.CHECKPOINT_DIR / "text").iterdir()}
    monkeypatch.setenv("FTCOURSE_HOME", str(tmp_path))
    assert cli.main(["pretrain", "--quick", "--source", "text"]) == 0
    written = tmp_path / "checkpoints" / "text"
    assert f"ftcourse.text.pretrained({str(written)!r})" in capsys.readouterr().out
    model, tokenizer = text.pretrained(written)  # its sha256s are checked against the record written beside it
    assert model.config.num_hidden_layers == text.RECIPE["model"]["num_hidden_layers"]
    assert {p.name: p.read_bytes() for p in (models.CHECKPOINT_DIR / "text").iterdir()} == shipped
