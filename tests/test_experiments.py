"""ftcourse.experiments: one run of each kind (its one return shape), the remedies for negative transfer (each runs
and does what its name says), the copied-stages and shift runs. The tuning rule itself is tests/test_protocol.py's."""

import pytest
import torch

from ftcourse import experiments, lab, models, protocol, transfer

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
    real_fit = protocol.fit

    def spy(model, *args, **kwargs):  # the weights the run starts from (a run that pauses calls fit twice)
        pretrained = models.pretrained("lab")
        if not seen:
            seen.update({name: all(torch.equal(p, q) for p, q in zip(model.stage(name).parameters(),
                                                                     pretrained.stage(name).parameters()))
                         for name in pretrained.stage_names[:-1]})
        return real_fit(model, *args, **kwargs)

    monkeypatch.setattr(protocol, "fit", spy)
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


# --- one run, one return shape ----------------------------------------------------------------------------------

def test_run_reports_validation_and_test_accuracy_and_the_rate_it_used(conflict):
    result = experiments.run(conflict, "probe", steps=3, batch_size=16)
    assert result["lr"] == experiments.DEFAULT_LR["probe"]
    assert 0 <= result["val_accuracy"] <= 1 and 0 <= result["accuracy"] <= 1
    with pytest.raises(ValueError, match="'tuned'"):
        experiments.run(conflict, "probe", lr="best", steps=3)


def test_a_run_has_one_return_shape_at_a_fixed_rate_and_tuned(conflict):
    fixed = experiments.run(conflict, "probe", steps=2, batch_size=16, lr=0.05)
    tuned = experiments.run(conflict, "probe", steps=2, batch_size=16, lr="tuned", lr_grid=[0.01, 0.05], ladder=())
    assert fixed.keys() == tuned.keys()
    assert fixed["tuning_runs"] == 1 and tuned["tuning_runs"] == 2 and fixed["model"] is not None
    assert fixed["trainable"] == models.count_parameters(fixed["model"], trainable_only=True)


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
    monkeypatch.setattr(transfer, "fit", lambda *a, **k: budgets.append(k["steps"]) or real_fit(*a, **k))
    monkeypatch.setattr(protocol, "fit", lambda *a, **k: budgets.append(k["steps"]) or real_fit(*a, **k))
    experiments.remedy_run(conflict, "LP-FT", steps=6, batch_size=16)
    # probe + fine-tuning = the 6 steps every remedy gets (the fine-tuning pauses to be validated: two calls, one run)
    assert budgets == [3, 3, 3]


def test_a_prepared_start_is_prepared_once_per_tuning_and_every_rate_trains_a_copy_of_it(conflict, monkeypatch):
    """LP-FT's probe trains the head once for the whole tuning, not once per rate; and a later rate, which starts
    from a copy of the prepared model, trains exactly as a run built afresh at that rate alone does (L2-SP: the
    copied penalty pulls the copy, not the first rate's model)."""
    probes = []
    real_fit = transfer.fit
    monkeypatch.setattr(transfer, "fit", lambda *a, **k: probes.append(k["steps"]) or real_fit(*a, **k))
    tuned = experiments.remedy_run(conflict, "LP-FT", lr="tuned", lr_grid=[0.01, 0.1], steps=6, batch_size=16)
    assert probes == [3] and len(tuned["tuning"]) >= 2
    common = dict(lr_grid=[0.01, 0.1], steps=4, batch_size=16)
    rates = experiments.remedy_run(conflict, "L2-SP", lr="tuned", **common)["tuning"].set_index("lr")
    alone = experiments.remedy_run(conflict, "L2-SP", lr=0.1, steps=4, batch_size=16)
    assert rates.loc[0.1, "val_accuracy"] == alone["val_accuracy"]


def test_a_shift_run_reports_in_distribution_and_shifted_accuracy(tmp_path):
    result = experiments.shift_run("related", "LP-FT", shots=2, steps=2, lr_grid=[0.05], val_per_class=4,
                                   test_per_class=4, cache=tmp_path)
    assert result["lr"] == 0.05 and 0 <= result["shifted_accuracy"] <= 1 and 0 <= result["accuracy"] <= 1


def test_the_cost_of_a_sweep_is_said_in_runs_steps_and_minutes_measured_here_and_leaves_the_random_state():
    import random

    import numpy as np

    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    expected = (torch.rand(1).item(), np.random.rand(), random.random())
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    text = experiments.cost(60, 100, "cpu", most=140)
    assert (torch.rand(1).item(), np.random.rand(), random.random()) == expected  # measuring drew nothing
    per_step = experiments.measured_seconds_per_step("cpu")
    assert 0 < per_step < 5
    low, high = 60 * 100 * per_step / 60, 140 * 100 * per_step / 60
    assert text.startswith("60 to 140 runs of 100 steps") and f"about {max(low, 0.1):.1f} to {high:.1f} min" in text
    assert f"{per_step * 1000:.0f} ms per step, measured here" in text
    from ftcourse import progress

    progress.finish()


def test_the_progress_bar_counts_cached_runs_as_done_grows_with_the_ladder_and_times_the_rest_as_measured():
    from ftcourse import progress

    meter = progress.start(6, 100, seconds_per_step=0.5, show=False)
    assert meter.seconds_left() == 6 * 100 * 0.5  # before any run: the guess measured before the experiment
    progress.run_done(2)  # two read from the cache: free
    progress.trained(100, 2.0)  # then one trained: 20 ms a step here
    progress.run_done(1)
    assert meter.seconds_per_step == 0.02 and meter.seconds_left() == 3 * 100 * 0.02
    progress.more(1)  # the ladder tries a rate beyond the grid
    assert (meter.done, meter.total) == (3, 7)
    progress.finish()
    progress.run_done(1)  # no meter open: nothing to count, nothing raised
    assert progress.showing("cpu", interactive=True) and not progress.showing("cpu", interactive=False)
    assert not progress.showing("quick", interactive=True)  # a log file, or runs of seconds: no bar
    assert progress.format_seconds(75) == "1 min 15 s" and progress.format_seconds(3725) == "1 h 02 min"


def test_a_tuning_moves_the_bar_once_per_run_and_its_ladder_makes_the_bar_longer(tmp_path):
    from ftcourse import progress

    task = lab.target("related", 2, val_per_class=2, test_per_class=2, seed=0)
    meter = progress.start(3, 4, seconds_per_step=0.1, show=False)
    result = experiments.run(task, "finetune", steps=4, lr="tuned", lr_grid=(0.01, 0.03, 0.1), cache=tmp_path)
    runs = len(result["tuning"])
    assert (meter.done, meter.total) == (runs, runs) and meter.trained_steps > 0
    meter = progress.start(3, 4, seconds_per_step=0.1, show=False)  # again: every run from the cache
    experiments.run(task, "finetune", steps=4, lr="tuned", lr_grid=(0.01, 0.03, 0.1), cache=tmp_path)
    assert meter.done == runs and meter.trained_steps == 0
    progress.finish()
