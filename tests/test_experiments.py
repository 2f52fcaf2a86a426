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


# --- choosing on validation ----------------------------------------------------------------------------------------

def test_choose_on_val_picks_per_seed_by_validation_never_by_test():
    import pandas as pd

    runs = pd.DataFrame({"lr": [0.01, 0.1, 0.01, 0.1], "seed": [0, 0, 1, 1], "val_accuracy": [0.9, 0.8, 0.5, 0.6],
                         "accuracy": [0.1, 0.99, 0.99, 0.1]})  # test accuracy points the other way every time
    chosen = experiments.choose_on_val(runs)
    assert chosen["lr"].tolist() == [0.01, 0.1] and chosen["accuracy"].tolist() == [0.1, 0.1]


def test_choose_on_val_breaks_ties_by_validation_loss_then_by_order_and_skips_diverged_runs():
    import pandas as pd

    runs = pd.DataFrame({"lr": [0.01, 0.03, 0.1, 0.3], "seed": [0] * 4,
                         "val_accuracy": [0.7, 0.9, 0.9, float("nan")], "val_loss": [0.5, 0.4, 0.3, float("nan")]})
    assert experiments.choose_on_val(runs)["lr"].tolist() == [0.1]
    assert experiments.choose_on_val(runs.drop(columns="val_loss"))["lr"].tolist() == [0.03]
    with pytest.raises(ValueError, match="needs the columns"):
        experiments.choose_on_val(runs.drop(columns="seed"))


def test_run_reports_validation_and_test_accuracy_and_the_rate_it_used(conflict):
    result = experiments.run(conflict, "probe", steps=3, batch_size=16)
    assert result["lr"] == experiments.DEFAULT_LR["probe"]
    assert 0 <= result["val_accuracy"] <= 1 and 0 <= result["accuracy"] <= 1
    with pytest.raises(ValueError, match="'tuned'"):
        experiments.run(conflict, "probe", lr="best", steps=3)


def test_a_tuned_run_chooses_the_grid_rate_with_the_best_validation_and_is_cached(conflict, tmp_path, monkeypatch):
    val_accuracy = {0.01: 0.3, 0.1: 0.6, 1.0: 0.5}
    calls = []
    real_run = experiments.run

    def fake_evaluate(model, data):
        return {"accuracy": val_accuracy[calls[-1]] if data is conflict.val else 1.0 - val_accuracy[calls[-1]],
                "loss": 1.0}

    def spy_run(task, method, **kwargs):
        if isinstance(kwargs.get("lr"), float):
            calls.append(kwargs["lr"])
        return real_run(task, method, **kwargs)

    monkeypatch.setattr(experiments, "evaluate", fake_evaluate)
    monkeypatch.setattr(experiments, "run", spy_run)
    tuned = experiments.run(conflict, "finetune", lr="tuned", lr_grid=[0.01, 0.1, 1.0], steps=2, batch_size=16,
                            cache=tmp_path)
    assert tuned["lr"] == 0.1 and tuned["val_accuracy"] == 0.6 and tuned["accuracy"] == pytest.approx(0.4)
    assert tuned["tuning_runs"] == 3 and tuned["ran_now"] == 3 and calls == [0.01, 0.1, 1.0]
    again = experiments.run(conflict, "finetune", lr="tuned", lr_grid=[0.01, 0.1, 1.0], steps=2, batch_size=16,
                            cache=tmp_path)
    assert again["ran_now"] == 0 and again["lr"] == 0.1 and calls == [0.01, 0.1, 1.0]  # read back, not run
    other_seed = experiments.run(conflict, "finetune", lr="tuned", lr_grid=[0.01, 0.1, 1.0], steps=2,
                                 batch_size=16, cache=tmp_path, seed=1)
    assert other_seed["ran_now"] == 3


def test_the_tuning_cache_tells_tasks_and_source_models_apart(tmp_path):
    kwargs = {"lr": "tuned", "lr_grid": [0.05], "steps": 2, "batch_size": 16, "cache": tmp_path}
    a = lab.target("conflict", 4, val_per_class=4, test_per_class=4)
    b = lab.target("related", 4, val_per_class=4, test_per_class=4)
    assert experiments.run(a, "probe", **kwargs)["ran_now"] == 1
    assert experiments.run(b, "probe", **kwargs)["ran_now"] == 1
    other_source = models.pretrained("lab-colours")
    assert experiments.run(a, "probe", pretrained=other_source, **kwargs)["ran_now"] == 1
    assert experiments.run(a, "probe", **kwargs)["ran_now"] == 0


def test_remedies_that_are_rates_refuse_another_rate_and_the_others_take_tuned(conflict, tmp_path):
    with pytest.raises(ValueError, match="is a learning rate"):
        experiments.remedy_run(conflict, "lower rate", lr=0.1, steps=2)
    result = experiments.remedy_run(conflict, "L2-SP", lr="tuned", lr_grid=[0.01, 0.1], steps=2, batch_size=16,
                                    cache=tmp_path)
    assert result["lr"] in experiments.LR_LADDER and len(list(tmp_path.glob("*.json"))) >= 2


def test_lp_ft_spends_half_the_budget_on_its_probe(conflict, monkeypatch):
    budgets = []
    real_fit = experiments.fit
    monkeypatch.setattr(experiments, "fit", lambda *a, **k: budgets.append(k["steps"]) or real_fit(*a, **k))
    experiments.remedy_run(conflict, "LP-FT", steps=6, batch_size=16)
    assert budgets == [3, 3]  # probe + fine-tuning = the 6 steps every remedy gets


def test_a_shift_run_reports_in_distribution_and_shifted_accuracy(tmp_path):
    result = experiments.shift_run("related", "LP-FT", shots=2, steps=2, lr_grid=[0.05], val_per_class=4,
                                   test_per_class=4, cache=tmp_path)
    assert result["lr"] == 0.05 and 0 <= result["shifted_accuracy"] <= 1 and 0 <= result["accuracy"] <= 1


def test_tuning_looks_past_the_edge_of_the_grid_along_the_ladder(conflict, monkeypatch):
    ran = []
    real_run = experiments.run

    def spy_run(task, method, **kwargs):
        if isinstance(kwargs.get("lr"), float):
            ran.append(kwargs["lr"])
        return real_run(task, method, **kwargs)

    def val_rises_with_the_rate_up_to_0_3(model, data):
        lr = ran[-1]
        return {"accuracy": 0.5 + (lr if lr <= 0.3 else -lr), "loss": 1.0}

    monkeypatch.setattr(experiments, "run", spy_run)
    monkeypatch.setattr(experiments, "evaluate", val_rises_with_the_rate_up_to_0_3)
    tuned = experiments.tune_lr(conflict, "finetune", grid=[0.01, 0.03, 0.1], steps=1, batch_size=16)
    assert ran == [0.01, 0.03, 0.1, 0.3, 1.0]  # 0.1 was the edge: 0.3 is better, and 1.0 is worse than 0.3
    assert tuned["lr"] == 0.3 and tuned["tuning_runs"] == 5
    assert tuned["tuning"]["lr"].tolist() == [0.01, 0.03, 0.1, 0.3, 1.0]
    ran.clear()
    assert experiments.tune_lr(conflict, "finetune", grid=[0.01, 0.03, 0.1], ladder=(), steps=1,
                               batch_size=16)["lr"] == 0.1 and ran == [0.01, 0.03, 0.1]


def test_the_cost_of_a_sweep_is_said_in_runs_steps_and_minutes():
    text = experiments.cost(60, 100, "cpu")
    minutes = 60 * 100 * experiments.SECONDS_PER_STEP["cpu"] / 60
    assert text.startswith("60 runs of 100 steps") and f"{minutes:.1f} min" in text and "cpu" in text
