"""Specification of ftcourse.protocol: one tuning rule (grid, ladder, early stop, choice on validation, test once),
one divergence rule, each seed a whole replicate, and one cache keyed by the computation.

Most tests drive :func:`tune` with a recipe whose runs are arithmetic (validation as a function of the rate and the
step), so that each rule is seen alone; the last ones run it on real runs of images, dense tasks and text.
"""

import math

import pytest
import torch

from ftcourse import experiments, lab, models, protocol, text, textlab
from ftcourse.dense import dense_target

pytestmark = pytest.mark.usefixtures("one_thread")


class ArithmeticRun:
    """A run whose validation is ``curve(lr, step)``; it logs every call, so tests see what was trained."""

    def __init__(self, recipe, lr):
        self.recipe, self.lr, self.step, self.seconds = recipe, lr, 0, 0.0
        self.model = torch.nn.Linear(1, 1)

    def train(self, until):
        end = self.recipe.steps if until is None else until
        self.recipe.log.append((self.lr, self.step, end))
        self.step = end

    def validate(self):
        val, loss = self.recipe.curve(self.lr, self.step)
        return {"val": val, "val_loss": loss}

    def finish(self):
        return {"trainable": 1, "history": None}

    def test(self):
        self.recipe.tested.append(self.lr)
        return {"accuracy": 1 - self.lr}  # the test would prefer the smallest rate: it must never be asked to choose


class ArithmeticRecipe:
    chance = 0.2
    test_names = ("accuracy",)

    def __init__(self, curve, steps=100, can_pause=True, name="arithmetic"):
        self.curve, self.steps, self.can_pause = curve, steps, can_pause
        self.key = {"kind": name}
        self.log, self.tested = [], []

    def start(self, lr):
        return ArithmeticRun(self, lr)


def flat(value, loss=1.0):
    return lambda lr, step: (value(lr) if callable(value) else value, loss(lr) if callable(loss) else loss)


# --- the choice ----------------------------------------------------------------------------------------------------

def test_the_choice_is_the_best_validation_then_the_lower_loss_then_the_smaller_rate():
    runs = [{"lr": 0.03, "val": 0.9, "val_loss": 0.4}, {"lr": 0.1, "val": 0.9, "val_loss": 0.3},
            {"lr": 0.01, "val": 0.7, "val_loss": 0.1}]
    assert protocol.choose(runs)["lr"] == 0.1  # tie on val: the lower loss
    runs[1]["val_loss"] = 0.4
    assert protocol.choose(runs)["lr"] == 0.03  # tie on val and loss: the smaller rate, whatever the order
    assert protocol.choose(list(reversed(runs)))["lr"] == 0.03


def test_a_diverged_run_is_chosen_only_when_every_run_diverged():
    runs = [{"lr": 0.01, "val": 0.3, "val_loss": 1.5, "diverged": False},
            {"lr": 0.3, "val": 0.9, "val_loss": 0.2, "diverged": True}]
    assert protocol.choose(runs)["lr"] == 0.01
    runs[0]["diverged"] = True
    assert protocol.choose(runs)["lr"] == 0.3


def test_a_run_stopped_early_is_not_chosen_even_with_a_better_number():
    runs = [{"lr": 0.01, "val": 0.5, "val_loss": 1.0, "stopped_at": None},
            {"lr": 0.1, "val": 0.99, "val_loss": 0.1, "stopped_at": 30}]
    assert protocol.choose(runs)["lr"] == 0.01


def test_a_run_stopped_early_is_finished_and_kept_when_every_run_that_went_on_diverged(tmp_path):
    """0.1 leads at the pause and blows up after it; 0.03 was stopped as clearly worse but is healthy: it is the best
    left, so the tuning finishes it, keeps it and tests it (seen on lesson 07's LoRA, conflicting target, seed 3)."""
    def curve(lr, step):
        if lr == 0.3 or (lr == 0.1 and step > 30):
            return 0.2, math.nan
        return (0.9, 0.3) if lr == 0.1 else (0.25 if step <= 30 else 0.6, 1.0)

    recipe = ArithmeticRecipe(curve)
    tuned = protocol.tune(recipe, grid=[0.03, 0.1, 0.3], steps=100, decide_at=0.3, keep_model=True,
                          cache=tmp_path)
    assert tuned.lr == 0.03 and not tuned.diverged and tuned.val == 0.6
    assert tuned.model is not None and tuned.test == {"accuracy": 0.97} and recipe.tested == [0.03]
    assert (0.03, 30, 100) in recipe.log  # finished from where it paused
    again = protocol.tune(ArithmeticRecipe(curve), grid=[0.03, 0.1, 0.3], steps=100, decide_at=0.3, cache=tmp_path)
    assert again.lr == 0.03 and again.ran_now == 0  # the finished run is in the cache


def test_when_every_run_diverges_the_choice_says_so():
    tuned = protocol.tune(ArithmeticRecipe(flat(0.2, math.nan)), grid=[0.03, 0.1], steps=100, decide_at=0.3)
    assert tuned.diverged and tuned.test == {} and tuned.model is None


# --- divergence: one rule for every kind of run ----------------------------------------------------------------------

@pytest.mark.parametrize("val, loss, flagged, chance, expected", [
    (0.9, 0.3, True, 0.2, True),  # the training loop saw a non-finite loss
    (0.9, math.nan, False, 0.2, True),  # a non-finite validation loss (images, text)
    (math.nan, 1.0, False, None, True),  # a non-finite score (dense: no chance level)
    (0.2, 10.0, False, 0.2, True),  # accuracy at chance with a loss far above a uniform guess's ln 5 = 1.61
    (0.2, 1.7, False, 0.2, False),  # at chance with a guess's loss: a run that learnt nothing, not one that blew up
    (0.5, 3.0, False, 0.5, True),  # a binary text target: chance 0.5, loss above 3 ln 2
    (0.6, 10.0, False, 0.5, False),  # above chance: overconfident, but it learnt something
    (0.05, 40.0, False, None, False),  # dense: a score and a loss with no chance level are judged by finiteness
])
def test_the_divergence_rule(val, loss, flagged, chance, expected):
    assert protocol.diverged(val, loss, flagged=flagged, chance=chance) is expected


# --- tuning: the grid, the early stop, the ladder ------------------------------------------------------------------

def test_clearly_worse_rates_stop_at_the_decision_step_and_the_others_finish():
    val = {0.01: 0.5, 0.03: 0.86, 0.1: 0.9}
    recipe = ArithmeticRecipe(flat(val.get))
    tuned = protocol.tune(recipe, grid=[0.01, 0.03, 0.1], steps=100)
    # each rate to step 30; 0.01 is more than 0.05 below the best there and stops; the others go on to 100
    assert recipe.log == [(0.01, 0, 30), (0.03, 0, 30), (0.1, 0, 30), (0.03, 30, 100), (0.1, 30, 100)]
    assert tuned.lr == 0.1 and tuned.trials["stopped_at"].tolist()[0] == 30
    assert tuned.steps == 30 + 100 + 100 and tuned.runs == 3 and tuned.ran_now == 3
    assert recipe.tested == [0.1] and tuned.test == {"accuracy": pytest.approx(0.9)}  # the test looked at once


def test_a_rate_reported_on_purpose_finishes_from_where_it_stopped_and_does_not_take_part_in_the_choice():
    recipe = ArithmeticRecipe(flat({0.01: 0.5, 0.1: 0.9}.get))
    tuned = protocol.tune(recipe, grid=[0.01, 0.1], steps=100, report=[0.01])
    assert tuned.lr == 0.1 and tuned.trials.set_index("lr").loc[0.01, "stopped_at"] == 30
    assert (0.01, 30, 100) in recipe.log  # continued, not started again
    assert tuned.reported == {0.01: {"accuracy": pytest.approx(0.99)}} and sorted(recipe.tested) == [0.01, 0.1]
    with pytest.raises(ValueError, match="outside the grid"):
        protocol.tune(recipe, grid=[0.01, 0.1], steps=100, report=[0.3])


def test_without_early_stopping_every_rate_runs_to_the_end():
    recipe = ArithmeticRecipe(flat({0.01: 0.5, 0.1: 0.9}.get))
    protocol.tune(recipe, grid=[0.01, 0.1], steps=100, decide_at=None)
    assert recipe.log == [(0.01, 0, 100), (0.1, 0, 100)]


def test_runs_that_cannot_pause_run_to_the_end_and_are_chosen_by_the_same_rule():
    recipe = ArithmeticRecipe(flat({0.01: 0.9, 0.1: 0.9}.get, {0.01: 0.3, 0.1: 0.2}.get), can_pause=False)
    assert protocol.tune(recipe, grid=[0.01, 0.1], steps=100).lr == 0.1
    assert recipe.log == [(0.01, 0, 100), (0.1, 0, 100)]


def test_the_ladder_extends_the_grid_past_an_edge_until_the_best_has_a_worse_neighbour():
    recipe = ArithmeticRecipe(flat(lambda lr: 0.5 + (lr if lr <= 0.3 else -lr)))
    tuned = protocol.tune(recipe, grid=[0.01, 0.03, 0.1], ladder=(0.001, 0.01, 0.03, 0.1, 0.3, 1.0), steps=100,
                          decide_at=None)
    assert tuned.lr == 0.3 and tuned.trials["lr"].tolist() == [0.01, 0.03, 0.1, 0.3, 1.0]
    assert protocol.tune(ArithmeticRecipe(recipe.curve), grid=[0.01, 0.03, 0.1], steps=100).lr == 0.1  # no ladder


def test_a_larger_rate_that_lags_at_the_pause_goes_on_and_can_overtake():
    # a far target: the large rate first undoes the source (behind at step 30), then wins
    def curve(lr, step):
        return ({0.01: 0.8, 0.1: 0.6 if step <= 30 else 0.95}[lr], 1.0)

    recipe = ArithmeticRecipe(curve)
    tuned = protocol.tune(recipe, grid=[0.01, 0.1], steps=100)
    assert (0.1, 30, 100) in recipe.log and tuned.lr == 0.1
    assert tuned.trials["stopped_at"].isna().all()
    nan_at_pause = ArithmeticRecipe(lambda lr, step: (0.8, 1.0) if lr == 0.01 else (math.nan, math.nan))
    assert protocol.tune(nan_at_pause, grid=[0.01, 0.1], steps=100).trials.set_index("lr").loc[0.1, "stopped_at"] == 30


def test_a_ladder_rate_is_stopped_early_against_the_best_at_the_same_step():
    recipe = ArithmeticRecipe(flat({0.001: 0.2, 0.01: 0.9, 0.03: 0.6, 0.1: 0.5}.get))
    tuned = protocol.tune(recipe, grid=[0.01, 0.03, 0.1], ladder=(0.001,), steps=100)
    assert (0.001, 0, 30) in recipe.log and (0.001, 30, 100) not in recipe.log
    assert tuned.lr == 0.01 and tuned.trials.set_index("lr").loc[0.001, "stopped_at"] == 30


def test_when_every_rate_diverges_the_tuning_says_so_and_tests_nothing():
    recipe = ArithmeticRecipe(lambda lr, step: (math.nan, math.nan))
    tuned = protocol.tune(recipe, grid=[0.01, 0.1], steps=100)
    assert tuned.diverged and tuned.test == {} and recipe.tested == []


def test_bad_grids_and_decision_points_are_refused_with_the_fix():
    recipe = ArithmeticRecipe(flat(0.5))
    with pytest.raises(ValueError, match="positive learning rates"):
        protocol.tune(recipe, grid=[0.1, -1], steps=10)
    with pytest.raises(ValueError, match="share of the budget"):
        protocol.tune(recipe, grid=[0.1, 1], steps=10, decide_at=30)


# --- replicates ----------------------------------------------------------------------------------------------------

def test_each_seed_is_a_whole_replicate_with_its_own_choice_of_rate():
    def one_seed(seed):  # seed 1's validation prefers another rate: it must choose it, not borrow seed 0's
        best = {0: 0.1, 1: 0.01}[seed]
        recipe = ArithmeticRecipe(flat(lambda lr: 0.9 if lr == best else 0.7), name=f"seed {seed}")
        return protocol.tune(recipe, grid=[0.01, 0.1], steps=100).lr

    assert protocol.replicates(one_seed, [0, 1]) == [0.1, 0.01]
    with pytest.raises(ValueError, match="without repeats"):
        protocol.replicates(one_seed, [0, 0])


def test_every_seed_of_a_comparison_tunes_its_rate_on_the_whole_grid(monkeypatch):
    grids = []
    real = protocol.tune

    def spy(recipe, **kwargs):
        grids.append(list(kwargs["grid"]))
        return real(recipe, **kwargs)

    monkeypatch.setattr(protocol, "tune", spy)
    experiments.efficient_comparison(["related"], ["bitfit"], shots=[2], seeds=[0, 1], steps=2, batch_size=8,
                                     test_per_class=4, lr_grid=[0.01, 0.1])
    experiments.dense_comparison("segmentation", ["related"], shots=[4], seeds=[0, 1], methods=["finetune"],
                                 steps=2, batch_size=4, n_val=4, n_test=4, lr_grid=[0.01, 0.1])
    assert grids == [[0.01, 0.1]] * 4  # no seed trains at a rate another seed chose


# --- the cache -----------------------------------------------------------------------------------------------------

def test_a_cached_tuning_trains_nothing_and_keeps_its_choice_and_test(tmp_path):
    curve = flat({0.01: 0.5, 0.03: 0.86, 0.1: 0.9}.get)
    first = protocol.tune(ArithmeticRecipe(curve), grid=[0.01, 0.03, 0.1], steps=100, cache=tmp_path)
    again_recipe = ArithmeticRecipe(curve)
    again = protocol.tune(again_recipe, grid=[0.01, 0.03, 0.1], steps=100, cache=tmp_path)
    assert again_recipe.log == [] and again.ran_now == 0 and again.lr == first.lr and again.test == first.test
    assert again.trials.equals(first.trials)


def test_a_run_stopped_early_is_finished_when_a_later_call_asks_for_it_alone(tmp_path):
    curve = flat({0.01: 0.5, 0.1: 0.9}.get)
    protocol.tune(ArithmeticRecipe(curve), grid=[0.01, 0.1], steps=100, cache=tmp_path)
    alone = ArithmeticRecipe(curve)
    result = protocol.tune(alone, grid=[0.01], steps=100, cache=tmp_path)
    assert alone.log == [(0.01, 0, 100)] and result.lr == 0.01 and result.test == {"accuracy": pytest.approx(0.99)}


def test_a_single_rate_records_its_check_at_the_pause_so_a_later_tuning_does_not_train_it_again(tmp_path):
    """Lesson 03 trains fine-tuning at 0.3 alone; lesson 07 tunes a grid holding 0.3 on the same run."""
    curve = flat({0.1: 0.8, 0.3: 0.9}.get)
    alone = ArithmeticRecipe(curve)
    protocol.tune(alone, grid=[0.3], steps=100, cache=tmp_path)
    assert alone.log == [(0.3, 0, 30), (0.3, 30, 100)]  # validated at the pause, never stopped there
    tuning = ArithmeticRecipe(curve)
    tuned = protocol.tune(tuning, grid=[0.1, 0.3], steps=100, cache=tmp_path)
    assert tuned.lr == 0.3 and all(lr != 0.3 for lr, _, _ in tuning.log) and tuning.tested == []
    worse = ArithmeticRecipe(flat(0.2))
    assert protocol.tune(worse, grid=[0.3], steps=100).lr == 0.3 and worse.log[-1] == (0.3, 30, 100)


def test_a_model_asked_for_is_always_the_finished_run_never_one_paused_for_the_decision(tmp_path):
    curve = flat({0.01: 0.5, 0.1: 0.9}.get)
    protocol.tune(ArithmeticRecipe(curve), grid=[0.01, 0.1], steps=100, decide_at=None, cache=tmp_path)
    recipe = ArithmeticRecipe(curve)  # its records have no check at step 30: the runs train to there again
    tuned = protocol.tune(recipe, grid=[0.01, 0.1], steps=100, cache=tmp_path, keep_model=True)
    assert tuned.lr == 0.1 and tuned.model is not None
    assert recipe.log[-1] == (0.1, 0, 100)  # no weights were kept: the chosen run is trained again, to the end


def test_a_test_set_the_record_lacks_is_measured_on_the_chosen_run(tmp_path):
    recipe = ArithmeticRecipe(flat(0.5))
    protocol.tune(recipe, grid=[0.1], steps=100, cache=tmp_path)
    recipe.test_names = ("accuracy", "shifted_accuracy")
    recipe.tested.clear()
    protocol.tune(recipe, grid=[0.1], steps=100, cache=tmp_path)
    assert recipe.tested == [0.1]


def test_a_damaged_record_is_a_run_not_yet_made(tmp_path):
    curve = flat(0.5)
    protocol.tune(ArithmeticRecipe(curve), grid=[0.1], steps=100, cache=tmp_path)
    for record in tmp_path.glob("*.json"):
        record.write_text("{ not json")
    again = ArithmeticRecipe(curve)
    assert protocol.tune(again, grid=[0.1], steps=100, cache=tmp_path).ran_now == 1


class TwoSetRun(ArithmeticRun):
    """A run measured on two validation sets, "a" and "b", whose curves differ."""

    def validate(self):
        measured = {name: self.recipe.curves[name](self.lr, self.step) for name in self.recipe.sets}
        mine = measured[self.recipe.validated_on]
        return {"val": mine[0], "val_loss": mine[1],
                "also": {name: {"val": v, "val_loss": loss} for name, (v, loss) in measured.items()
                         if name != self.recipe.validated_on}}


class TwoSetRecipe(ArithmeticRecipe):
    def __init__(self, validated_on, sets=("a", "b")):
        super().__init__(None)
        self.curves = {"a": flat({0.01: 0.5, 0.03: 0.86, 0.1: 0.9}.get),
                       "b": flat({0.01: 0.7, 0.03: 0.88, 0.1: 0.8}.get)}
        self.validated_on, self.sets = validated_on, sets
        self.also_validated = tuple(name for name in sets if name != validated_on)

    def start(self, lr):
        return TwoSetRun(self, lr)


def test_choosing_on_another_validation_set_reuses_the_runs_and_chooses_by_that_set(tmp_path):
    """Lesson 04b chooses on a scarce set: the runs lesson 04 trained, measured on both sets, are not trained again."""
    on_a = protocol.tune(TwoSetRecipe("a"), grid=[0.01, 0.03, 0.1], steps=100, cache=tmp_path)
    recipe_b = TwoSetRecipe("b")
    on_b = protocol.tune(recipe_b, grid=[0.01, 0.03, 0.1], steps=100, cache=tmp_path)
    assert on_a.lr == 0.1 and on_b.lr == 0.03 and on_b.val == pytest.approx(0.88)
    # 0.01 was stopped at the pause on set "a" and is clearly worse on "b" too, and the tuning on "a" tested the run
    # that "b" chooses while it was in memory: nothing is trained for "b"
    assert recipe_b.log == [] and on_b.ran_now == 0 and on_b.test == {"accuracy": pytest.approx(0.97)}
    assert set(on_b.trials["lr"]) == {0.01, 0.03, 0.1} and on_b.trials.set_index("lr")["val"][0.1] == 0.8


def test_a_rate_stopped_on_one_set_that_the_other_set_keeps_goes_on_from_its_pause_in_the_same_call(tmp_path):
    recipe_a = TwoSetRecipe("a")
    recipe_a.curves["b"] = flat({0.01: 0.9, 0.03: 0.88, 0.1: 0.8}.get)  # on "b" the smallest rate leads
    protocol.tune(recipe_a, grid=[0.01, 0.03, 0.1], steps=100, cache=tmp_path)
    assert (0.01, 30, 100) in recipe_a.log  # stopped on "a" at step 30; "b" keeps it: it went on from there
    recipe_b = TwoSetRecipe("b")
    recipe_b.curves = recipe_a.curves
    on_b = protocol.tune(recipe_b, grid=[0.01, 0.03, 0.1], steps=100, cache=tmp_path, ladder=())
    assert on_b.lr == 0.01 and recipe_b.log == [] and on_b.test == {"accuracy": pytest.approx(0.99)}


def test_a_ladder_rate_only_the_other_set_needs_is_trained_in_the_first_call(tmp_path):
    recipe_a = TwoSetRecipe("a")  # "a" chooses 0.1 below the top of the ladder; "b" climbs down it to 0.003
    curves = {"a": flat(lambda lr: {0.01: 0.5, 0.03: 0.86, 0.1: 0.9, 0.3: 0.7}.get(lr, 0.3)),
              "b": flat(lambda lr: {0.001: 0.9, 0.003: 0.95, 0.01: 0.9, 0.03: 0.88}.get(lr, 0.3))}
    recipe_a.curves = curves
    first = protocol.tune(recipe_a, grid=[0.01, 0.03, 0.1], ladder=experiments.LR_LADDER, steps=100, cache=tmp_path)
    assert first.lr == 0.1 and any(lr == 0.003 for lr, _, _ in recipe_a.log)
    recipe_b = TwoSetRecipe("b")
    recipe_b.curves = curves
    on_b = protocol.tune(recipe_b, grid=[0.01, 0.03, 0.1], ladder=experiments.LR_LADDER, steps=100, cache=tmp_path)
    assert recipe_b.log == [] and (on_b.lr, on_b.runs) == (0.003, 5)  # 0.001 was tried too: 0.003 needs a neighbour


def test_a_validation_set_a_record_lacks_is_measured_by_training_the_run_again(tmp_path):
    protocol.tune(TwoSetRecipe("a", sets=("a",)), grid=[0.01, 0.1], steps=100, cache=tmp_path)
    recipe = TwoSetRecipe("b", sets=("a", "b"))
    tuned = protocol.tune(recipe, grid=[0.01, 0.1], steps=100, cache=tmp_path)
    assert tuned.lr == 0.1 and sorted(recipe.log) == [(0.01, 0, 30), (0.1, 0, 30), (0.1, 30, 100)]
    again = TwoSetRecipe("a", sets=("a",))  # the records kept set "a" while measuring "b": nothing to train
    assert protocol.tune(again, grid=[0.01, 0.1], steps=100, cache=tmp_path).ran_now == 0 and again.log == []


def test_a_lab_task_choosing_on_its_scarce_set_trains_no_run_again(tmp_path):
    generous = lab.target("conflict", 4, test_per_class=8, scarce_val=True)
    kwargs = dict(steps=4, batch_size=8, lr="tuned", lr_grid=[0.01, 0.1], cache=tmp_path)
    first = experiments.run(generous, "finetune", **kwargs)
    scarce = experiments.run(generous.choosing_on("scarce"), "finetune", **kwargs)
    alone = experiments.run(lab.target("conflict", 4, test_per_class=8, val_per_class=4, val_seed=0), "finetune",
                            **{**kwargs, "cache": tmp_path / "alone"})
    assert first["ran_now"] >= 2 and scarce["ran_now"] == 0
    assert (scarce["lr"], scarce["val_accuracy"], scarce["accuracy"]) == (alone["lr"], alone["val_accuracy"],
                                                                         alone["accuracy"])
    plain = experiments.run(lab.target("conflict", 4, test_per_class=8), "finetune", **kwargs)
    assert plain["ran_now"] == 0 and plain["lr"] == first["lr"]  # the set a lesson without scarce_val chooses on


# --- real runs: images, dense tasks, text ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def conflict():
    return lab.target("conflict", 4, val_per_class=8, test_per_class=8)


def test_a_paused_run_finishes_exactly_where_an_unpaused_one_does(conflict):
    def trial():
        model = experiments.make_model("finetune", conflict.num_classes, seed=3)
        return protocol.FitTrial(model, conflict.train, steps=6, lr=0.05, batch_size=8, augment=True, seed=3,
                                 progress=False, validate=lambda m: {}, test=lambda m: {})

    whole, paused = trial(), trial()
    whole.train(until=None)
    paused.train(until=2)
    paused.train(until=None)
    assert paused.history.steps_done == 6 and paused.history.step_loss == whole.history.step_loss
    for a, b in zip(whole.model.state_dict().values(), paused.model.state_dict().values()):
        assert torch.equal(a, b)


def test_a_tuned_image_run_returns_the_chosen_run_whole_and_its_model_from_the_cache(conflict, tmp_path):
    kwargs = dict(steps=4, batch_size=8, lr_grid=[0.01, 0.1], cache=tmp_path, keep_model=True)
    first = experiments.run(conflict, "probe", lr="tuned", **kwargs)
    again = experiments.run(conflict, "probe", lr="tuned", **kwargs)
    assert again["ran_now"] == 0 and again["lr"] == first["lr"] and again["accuracy"] == first["accuracy"]
    assert again["trainable"] == first["trainable"] == models.count_parameters(first["model"], trainable_only=True)
    assert again["history"].steps_done == 4 and again["model"] is not None
    for a, b in zip(first["model"].state_dict().values(), again["model"].state_dict().values()):
        assert torch.equal(a, b)


def test_the_same_computation_asked_two_ways_is_trained_once(conflict, tmp_path):
    """Lesson 02's "0 stages copied, frozen" and "0 stages copied, fine-tuned" are both scratch in another name."""
    kwargs = dict(steps=3, batch_size=8, lr=0.05, cache=tmp_path)
    frozen = experiments.copied_stages_run(conflict, 0, fine_tune=False, **kwargs)
    fine_tuned = experiments.copied_stages_run(conflict, 0, fine_tune=True, **kwargs)
    assert frozen == fine_tuned and len(list(tmp_path.glob("*.json"))) == 1


def test_a_diverged_image_run_is_never_chosen(conflict):
    result = experiments.run(conflict, "scratch", lr="tuned", lr_grid=[0.01, 1e6], steps=4, batch_size=8)
    assert result["lr"] == 0.01 and not result["diverged"]
    tried = result["tuning"].set_index("lr")
    assert tried.loc[1e6, "diverged"]


def test_a_diverged_dense_run_is_never_chosen():
    task = dense_target("related", 8, n_val=4, n_test=4)
    result = experiments.dense_run(task, "segmentation", "finetune", lr="tuned", lr_grid=[0.01, 1e6], steps=4,
                                   batch_size=4)
    assert result["lr"] == 0.01 and not result["diverged"] and math.isfinite(result["score"])


def test_text_runs_go_through_the_same_protocol(monkeypatch):
    """Text runs (Trainer) are tuned by the same function, with the same early stop and rule of choice."""
    seen = []
    real = protocol.tune

    def spy(recipe, **kwargs):
        seen.append((type(recipe).__name__, recipe.can_pause, recipe.chance))
        return real(recipe, **kwargs)

    monkeypatch.setattr(protocol, "tune", spy)
    task = textlab.target("topic", 2, test_per_class=4)
    assert task.num_classes == 4
    result = text.tuned("topic", 2, "probe", steps=2, batch_size=8, test_per_class=4, grid=(1e-3,), ladder=())
    assert seen == [("TextRecipe", True, 0.25)] and result["lr"] == 1e-3 and 0 <= result["accuracy"] <= 1


@pytest.mark.parametrize("method", ["finetune", "lora"])
def test_a_paused_text_run_ends_exactly_where_an_unpaused_one_does(method):
    """Trainer's own checkpoint (weights, AdamW, schedule, random states) carries a text run over its pause."""
    recipe = text.TextRecipe("negation", 4, method, seed=0, steps=8, batch_size=4, test_per_class=4)
    whole = recipe.start(1e-3)
    whole.train(until=None)
    paused = recipe.start(1e-3)
    paused.train(until=3)
    at_pause = paused.validate()
    paused.train(until=None)
    assert paused.validate() == whole.validate() != at_pause
    assert paused.test() == whole.test()


def test_keep_models_as_a_mapping_keeps_every_seed_or_the_first_and_refuses_anything_else():
    keep = {"finetune": "every seed", "scratch": "first seed"}
    assert [protocol.keeps_model("finetune", s, keep, [0, 1]) for s in (0, 1)] == [True, True]
    assert [protocol.keeps_model("scratch", s, keep, [0, 1]) for s in (0, 1)] == [True, False]
    assert not protocol.keeps_model("probe", 0, keep, [0, 1])
    with pytest.raises(ValueError, match="'first seed' or 'every seed'"):
        protocol.keeps_model("finetune", 0, {"finetune": "all"}, [0, 1])
