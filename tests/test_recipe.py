"""ftcourse.recipe: each ingredient reaches fit as its name says, the budget stays the same, and bad names are
refused; experiments.pretrained_on_digits trains once and then reads its checkpoint back."""

from pathlib import Path

import pytest
import torch

from ftcourse import experiments, lab, models, protocol, recipe, transfer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def related():
    return lab.target("related", 4, val_per_class=4, test_per_class=4)


@pytest.fixture(scope="module")
def small_source():
    torch.manual_seed(0)
    return models.resnet(8, width=8, blocks=(1, 1))


def fit_calls(monkeypatch):
    """The keyword arguments of every run a recipe starts with fit (a run that pauses to be validated goes on in a
    second call, from its checkpoint: that call is not a new run)."""
    calls = []

    def spy(real):
        def fit(*args, **kwargs):
            if kwargs.get("checkpoint") is None or not Path(kwargs["checkpoint"]).exists():
                calls.append(kwargs)
            return real(*args, **kwargs)
        return fit

    for module in (transfer, protocol):
        monkeypatch.setattr(module, "fit", spy(module.fit))
    return calls


def test_plain_fine_tuning_has_no_ingredient(related, small_source, monkeypatch):
    calls = fit_calls(monkeypatch)
    result = recipe.recipe_run(related, recipe.PLAIN, pretrained=small_source, steps=8, batch_size=8, lr=0.05)
    (run,) = calls
    assert run["steps"] == 8 and run["augment"] is False and "layer_decay" not in run and "keep_best" not in run
    assert result["lr"] == 0.05 and 0 <= result["accuracy"] <= 1


def test_the_full_recipe_spends_a_quarter_on_the_head_then_trains_everything_with_its_ingredients(
        related, small_source, monkeypatch):
    calls = fit_calls(monkeypatch)
    result = recipe.recipe_run(related, recipe.FULL, pretrained=small_source, steps=8, batch_size=8, lr=0.05)
    head, rest = calls
    assert head["steps"] + rest["steps"] == 8 and head["steps"] == 2  # the same budget as plain
    assert head["lr"] == experiments.DEFAULT_LR["probe"] and rest["lr"] == 0.05
    assert rest["augment"] is True and rest["layer_decay"] == recipe.LAYER_DECAY
    assert rest["keep_best"] is True and rest["val"] is related.val
    history = result["history"]
    assert history.config["keep_best"] and history.best_step is not None
    rates = [rate for _, rate in history.config["param_groups"]]
    assert rates == pytest.approx([0.05 / recipe.LAYER_DECAY**d for d in range(len(rates))])


def test_the_head_first_phase_moves_only_the_head(related, small_source, monkeypatch):
    started = {}
    real_run = experiments.run

    def spy(task, method, *, prepare, **kwargs):
        model = experiments.make_model(method, task.num_classes, pretrained=kwargs["pretrained"], seed=0)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        prepare(model)
        started.update(before=before, after=model.state_dict(), trainable=all(p.requires_grad
                                                                              for p in model.parameters()))
        return real_run(task, method, prepare=prepare, **kwargs)

    monkeypatch.setattr(experiments, "run", spy)
    recipe.recipe_run(related, ["head first"], pretrained=small_source, steps=8, batch_size=8, lr=0.05)
    changed = {k.split(".")[0] for k in started["before"] if not torch.equal(started["before"][k],
                                                                                 started["after"][k])}
    assert changed == {"head"} and started["trainable"]  # everything trains after the head's quarter


def test_digits_are_cropped_never_mirrored(related, small_source, monkeypatch):
    calls = fit_calls(monkeypatch)
    recipe.recipe_run(related, ["augment"], pretrained=small_source, steps=4, batch_size=8, lr=0.05, flip=False)
    assert calls[0]["augment"] == "crop"


def test_ingredients_are_named_and_put_in_the_recipes_order():
    assert recipe.check_ingredients(["best checkpoint", "augment"]) == ("augment", "best checkpoint")
    assert recipe.check_ingredients("augment") == ("augment",)
    with pytest.raises(ValueError, match=r"Unknown ingredient\(s\) \['dropout'\]; the recipe's ingredients are"):
        recipe.check_ingredients(["augment", "dropout"])


def test_the_digits_source_is_trained_once_then_read_back(tmp_path):
    first = experiments.pretrained_on_digits(2, folder=tmp_path)
    checkpoint = tmp_path / "06_digits_source_2steps.pt"
    written = checkpoint.stat().st_mtime_ns
    second = experiments.pretrained_on_digits(2, folder=tmp_path)
    assert checkpoint.stat().st_mtime_ns == written  # read, not trained and written again
    assert models.fingerprint(first) == models.fingerprint(second) and second.num_classes == 5
