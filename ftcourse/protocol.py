"""The fair-comparison protocol, written once: each method's rate is chosen on validation, and each seed is a whole
replicate.

Comparing fine-tuning at one conventional rate with scratch at its best rate measures the rate, not the
pretraining: each way of learning a target wants its own learning rate, and how it differs depends on how related
the tasks are (H. Li, Chaudhari, Yang et al., "Rethinking the hyperparameters for fine-tuning", ICLR 2020). So every
comparison of the course gives every method the same grid of rates and the same budget of optimiser steps, and
:func:`tune` chooses each method's rate on the **validation** split. Images, dense tasks and text all go through it;
only what one run is differs (a :class:`Recipe` says how to start one).

The rule, step by step:

1. Every rate of the grid is trained for ``decide_at`` of the budget (30% by default) and validated.
2. A rate smaller than the best rate's whose validation metric is then more than ``margin`` below the best's (or
   any rate that diverged) is **stopped** there (:func:`clearly_worse`): it is not chosen while a run that went on
   stays healthy. This is successive halving with one rung (Jamieson & Talwalkar,
   "Non-stochastic best arm identification and hyperparameter optimization", AISTATS 2016): clearly worse rates
   spend a third of a run, not a whole one. The others go on to the end of the budget, exactly as if they had never
   paused (``fit(stop_at=...)`` and ``resume=True``).
3. **The choice** (:func:`choose`): the highest validation metric among the runs that finished; a tie goes to the
   lower validation loss, then to the smaller rate. A diverged run (:func:`diverged`) is never chosen unless every
   run diverged. If every run that went on diverged after the pause, the best healthy stopped run is finished and
   chosen: the leader at 30% can still blow up, and the protocol never keeps a blown-up run over a healthy one.
4. **The ladder.** When the chosen rate is the largest (or smallest) rate tried, the next rate of ``ladder`` beyond
   it is tried too (steps 1-3 for it alone, against the best seen at the same step), until the chosen rate has a
   tried neighbour on both sides or the ladder ends: a best rate at the edge of a grid says that the grid was too
   narrow, not that the edge is best.
5. **The test split is looked at once**, for the chosen run, never to choose.

A single rate (``grid=[lr]``) is validated at the same pause and trained on, never stopped: its record then holds
the check a later tuning of that recipe reads, so the run is not trained again.

**Each seed is a whole replicate.** A seed draws its own training set and tunes its own rate: no seed borrows
another's choice (:func:`replicates`). Otherwise the other seeds repeat one seed's choice, and a claim can rest on
that one choice.

**One cache, keyed by the computation.** With a ``cache`` folder, each run is saved the moment it pauses or ends,
named by a hash of everything that decides it (the recipe's key: the task's data, the starting weights and which of
them train, every argument of the training loop, the seed; and the rate). The same run asked for by two lessons is
trained once, an interrupted tuning resumes with what it learned, and a run's test metrics are kept once measured.
The chosen run's weights are kept too when asked (``keep_model=True``), so a lesson never trains a run again to get
its model back. Training never looks at validation, so a record keeps its validation **per validation set**
(``Recipe.validated_on``): a recipe whose task carries more sets (``Recipe.also_validated``) measures each of them
at every check, and :func:`tune` then also tunes on each, with the runs still in memory, so that a later tuning
choosing on one of those sets (another lesson's) finds every run it needs already made.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd
import torch

import ftcourse

from . import progress
from .files import save_json, save_state
from .models import count_parameters, fingerprint, read_torch_file
from .train import History, describe, fit

DECIDE_AT = 0.3  # the share of the budget after which clearly worse rates stop (benchmarks/README.md validates it)
MARGIN = 0.05  # "clearly worse": a validation metric more than this below the best rate's at that step
EXPLODED = 3.0  # a loss above this many times a uniform guess's, ln(1/chance), with accuracy at chance: diverged
RECORD_FORMAT = 2  # 2: validation kept per validation set


class Trial(Protocol):
    """One training run at one rate, as :func:`tune` drives it."""

    model: torch.nn.Module

    seconds: float  # training time so far

    def train(self, until: int | None) -> None:
        """Train up to step ``until`` of the budget (``None``: to the end), continuing where the last call stopped."""

    def validate(self) -> dict:
        """``{"val": metric, "val_loss": loss, "diverged": bool}`` of the model now, on the set the recipe chooses
        on; and, where the task carries more validation sets, ``"also": {name: {"val": ..., "val_loss": ...}}``."""

    def finish(self) -> dict:
        """What the record of a finished run keeps besides validation: at least ``trainable`` and ``history``."""

    def test(self) -> dict:
        """The test metrics of the trained model, e.g. ``{"accuracy": 0.91}``."""


class Recipe(Protocol):
    """How to start one run of a kind at a given rate, and what names it in the cache. ``can_pause`` says whether
    a run's ``train`` can stop at a step and go on later (runs through :func:`~ftcourse.train.fit` can, with its
    checkpoints; runs through ``Trainer`` can, with ``Trainer``'s; where a kind cannot, :func:`tune` trains each rate
    to the end)."""

    key: dict  # everything that decides a run except its rate (JSON values)
    validated_on: str  # the name of the validation set it chooses on, as the records name it (optional: "val")
    also_validated: tuple  # the names of the other sets its trials measure (optional: none)
    chance: float | None  # the validation metric of a guess (accuracy), or None where that means nothing
    can_pause: bool
    test_names: tuple  # the names its runs' test() returns

    def start(self, lr: float) -> Trial:
        """A fresh run at rate ``lr``, not yet trained."""


def diverged(val: float, val_loss: float, *, flagged: bool = False, chance: float | None = None) -> bool:
    """The course's one rule for "this run diverged", the same for images, dense tasks and text.

    A run diverged when the training loop saw a non-finite loss (``flagged``; :func:`~ftcourse.train.fit` stops
    there), when its validation metric or loss is not finite, or when its accuracy is at ``chance`` with a loss
    that exploded: more than :data:`EXPLODED` times ``ln(1/chance)``, the loss of a uniform guess. (An optimiser
    that blew up and came back predicts one class with great confidence: it scores chance with a huge loss. A run
    that merely learnt nothing scores chance with about ``ln(1/chance)``, and is a run like any other.)

    >>> diverged(0.2, 25.0, chance=0.2), diverged(0.2, 1.7, chance=0.2), diverged(0.9, float("nan"))
    (True, False, True)
    """
    if flagged or not (math.isfinite(val) and math.isfinite(val_loss)):
        return True
    if chance is not None and 0 < chance < 1:
        return val <= chance + 0.01 and val_loss > EXPLODED * math.log(1 / chance)
    return False


def clearly_worse(lr: float, check: dict, leader: dict | None, margin: float = MARGIN) -> bool:
    """Whether a run at rate ``lr``, validated at the pause (``check``), stops there: it diverged, or it is a
    **smaller** rate than the leader's (the run :func:`choose` would pick at the pause, ``leader``) and its
    validation metric is more than ``margin`` below the leader's.

    Why only smaller rates: a rate smaller than the leader's that lags at the pause moves the weights less per step
    and, as the schedule decays, rarely catches up. A *larger* rate can lag for a while on a target far from the
    source -- it first undoes what the source taught -- and then overtake: stopping it would bias the choice
    against exactly the rates such targets need (measured on 22 tunings, ``benchmarks/early_stopping.py``). So a
    larger rate goes on to the end unless it diverged.

    >>> leader = {"lr": 0.1, "val": 0.90}
    >>> [clearly_worse(lr, {"val": 0.80, "diverged": False}, leader) for lr in (0.01, 0.3)]
    [True, False]
    """
    if check["diverged"]:
        return True
    if leader is None:
        return False
    return lr < leader["lr"] and check["val"] < leader["val"] - margin


def choose(trials: list[dict]) -> dict:
    """The run the protocol keeps, from ``trials`` (dicts with ``lr``, ``val``, ``val_loss``, ``diverged`` and
    ``stopped_at``, ``None`` for a run that finished).

    Among the runs that finished without diverging: the one with the highest validation metric; a tie goes to the
    lower validation loss, then to the smaller rate. When every finished run diverged, the best run stopped early that
    had not diverged (its number is from the pause: :func:`tune` finishes it before keeping it, because a run stopped
    as "clearly worse" than one that later blew up is the best left). A diverged run is chosen only when every run
    diverged.

    >>> runs = [{"lr": 0.01, "val": 0.9, "val_loss": 0.3}, {"lr": 0.1, "val": 0.9, "val_loss": 0.2},
    ...         {"lr": 0.3, "val": 0.95, "val_loss": 0.1, "stopped_at": 30}]
    >>> choose(runs)["lr"]
    0.1
    """
    if not trials:
        raise ValueError("choose needs at least one run to choose from.")
    healthy = [t for t in trials if not t.get("diverged", False)]
    finished = ([t for t in healthy if t.get("stopped_at") is None] or healthy or list(trials))

    def rank(t):
        val, loss = float(t["val"]), float(t.get("val_loss", math.nan))
        return (not t.get("diverged", False), val if math.isfinite(val) else -math.inf,
                -loss if math.isfinite(loss) else -math.inf, -float(t["lr"]))

    return max(finished, key=rank)


def next_rate(best: float, tried, ladder) -> float | None:
    """The ladder's next rate past ``best`` when ``best`` is the largest or smallest rate ``tried``, else None.

    >>> next_rate(0.1, [0.01, 0.03, 0.1], (0.001, 0.01, 0.1, 0.3)), next_rate(0.03, [0.01, 0.03, 0.1], (0.3,))
    (0.3, None)
    """
    tried = list(tried)
    if len(tried) < 2:  # a single rate has no edge to look past: it was asked for alone
        return None
    if best >= max(tried):
        return next((rate for rate in sorted(ladder) if rate > best), None)
    if best <= min(tried):
        return next((rate for rate in sorted(ladder, reverse=True) if rate < best), None)
    return None


@dataclass
class Tuned:
    """A tuning's outcome: the chosen run whole, and every rate it tried.

    ``lr``, ``val``, ``val_loss`` and ``diverged`` describe the chosen run; ``test`` holds its test metrics (the
    number to report); ``model`` is the trained network (``None`` unless asked for, or trained in this call);
    ``trainable`` its count of trainable parameters; ``history`` its :class:`~ftcourse.train.History` as a dict (or
    ``None`` for runs without one); ``trials`` every rate tried (validation only: a table to look at, not to choose
    from by test); ``runs`` how many runs the tuning took, ``ran_now`` how many trained in this call, ``steps`` the
    optimiser steps all of them spent (stopped runs count what they ran) and ``seconds`` the training time they took
    when they ran (read back from the cache: not spent again); ``measures`` whatever else the chosen
    run's record keeps (a :class:`FitTrial`'s ``measure``, its ``seconds``); ``reported`` the test metrics of the
    rates asked for with ``report``, by rate.
    """

    lr: float
    val: float
    val_loss: float
    diverged: bool
    test: dict
    trainable: int | None
    history: dict | None
    trials: pd.DataFrame
    runs: int
    ran_now: int
    steps: int
    seconds: float = math.nan
    measures: dict = field(default_factory=dict)
    reported: dict = field(default_factory=dict)
    model: torch.nn.Module | None = field(default=None, repr=False)


def run_key(recipe_key: dict, lr: float) -> str:
    """The cache's name for one run: a sha256 of the recipe's key, the rate and the version of ftcourse."""
    text = json.dumps({**recipe_key, "lr": float(lr), "ftcourse": ftcourse.__version__, "record": RECORD_FORMAT},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def tune(recipe: Recipe, *, grid, ladder=(), steps: int, decide_at: float | None = DECIDE_AT,
         margin: float = MARGIN, cache=None, keep_model: bool = False, report=()) -> Tuned:
    """The best rate of ``grid`` (extended along ``ladder``) for ``recipe``, chosen on validation, and the test
    metrics of that one run; see the module's docstring for the rule.

    ``steps`` is the recipe's budget (the step ``decide_at`` refers to); ``decide_at=None`` (or a recipe whose runs
    cannot pause) trains every rate to the end without a pause; a grid of one rate pauses there only to validate.
    ``cache`` is a folder where each run's record is saved as it pauses and ends, and read back next time. ``keep_model=True`` returns the chosen run's model and,
    with a cache, keeps its weights there, so that the next call returns it without training. ``report`` names
    rates of the grid whose test metrics a lesson shows on purpose (a conventional rate, say): they are trained to the
    end even when stopped early, and tested, without taking part in the choice (``Tuned.reported``).
    """
    grid = [float(lr) for lr in grid]
    report = [float(lr) for lr in report]
    if set(report) - set(grid):
        raise ValueError(f"report names rates outside the grid {grid}: {sorted(set(report) - set(grid))}. A rate "
                         f"reported next to the tuned one must be one the tuning tries.")
    if not grid or any(not (lr > 0 and math.isfinite(lr)) for lr in grid):
        raise ValueError(f"grid must be a non-empty list of positive learning rates, got {grid!r}.")
    if decide_at is not None and not 0 < decide_at < 1:
        raise ValueError(f"decide_at must be a share of the budget between 0 and 1 (or None), got {decide_at!r}.")
    tuning = _Tuning(recipe, _Store(cache), steps)
    pause = None
    if decide_at is not None and recipe.can_pause:  # one rate too: its record then has the check a tuning reads
        pause = max(1, min(steps - 1, round(decide_at * steps)))
    tuning.choose_rate(grid, ladder, pause, margin)
    outcome = tuning.outcome(keep_model, report)
    for name in getattr(recipe, "also_validated", ()):  # the task's other validation sets: see _Tuning.tune_on
        outcome.ran_now += tuning.tune_on(name, grid, ladder, pause, margin)
    return outcome


def replicates(tune_one_seed, seeds) -> list:
    """``tune_one_seed(seed)`` for every seed, in order: each seed a whole replicate of the protocol, with its own
    training set and its own choice of rate. Returns the results in the order of ``seeds``.

    The one place where seeds meet the protocol, so that no comparison keeps one seed's rate for the others.
    """
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be a non-empty list without repeats, got {seeds!r}.")
    return [tune_one_seed(seed) for seed in seeds]


def keeps_model(method: str, seed, keep_models, seeds) -> bool:
    """Whether a comparison keeps the chosen run's weights in the cache: for the methods in ``keep_models`` (those a
    lesson looks at as models afterwards), on the first of ``seeds`` only, so that the cache holds one model per
    method, not one per replicate. ``keep_models`` may also map a method to ``"first seed"`` or ``"every seed"``,
    for a lesson that measures every replicate's network.

    >>> keeps_model("lora", 3, ["lora"], [3, 4]), keeps_model("lora", 4, ["lora"], [3, 4])
    (True, False)
    >>> keeps_model("lora", 4, {"lora": "every seed"}, [3, 4])
    True
    """
    if isinstance(keep_models, dict):
        wrong = {m: which for m, which in keep_models.items() if which not in ("first seed", "every seed")}
        if wrong:
            raise ValueError(f"keep_models maps a method to 'first seed' or 'every seed', got {wrong}.")
        which = keep_models.get(method)
        return which == "every seed" or (which == "first seed" and seed == list(seeds)[0])
    return method in keep_models and seed == list(seeds)[0]


# ----------------------------------------------------------------------------------------------------------------
# Runs through fit, which can pause; and what names them.

class FitTrial:
    """One run of :func:`~ftcourse.train.fit` that :func:`tune` can pause at a step and finish later.

    ``validate(model)`` and ``test(model)`` measure the model (dicts); ``measure(model)``, when given, adds what the
    finished run's record keeps besides validation (for example how far each stage moved). A pause writes fit's
    checkpoint to a temporary folder; the run then goes on from it exactly as if it had never stopped.
    """

    def __init__(self, model, data, *, steps: int, validate, test, measure=None, **fit_kwargs):
        self.model, self.data, self.steps, self.fit_kwargs = model, data, steps, fit_kwargs
        self._validate, self._test, self._measure = validate, test, measure
        self.history: History | None = None
        self.seconds = 0.0
        self._folder = None  # a TemporaryDirectory while the run is paused

    def train(self, until: int | None) -> None:
        pausing = {}
        if until is not None or self._folder is not None:
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="ftcourse-run-")
            pausing = {"checkpoint": Path(self._folder.name) / "run.pt", "resume": True, "stop_at": until}
        start = time.perf_counter()
        self.history = fit(self.model, self.data, steps=self.steps, **self.fit_kwargs, **pausing)
        self.seconds += time.perf_counter() - start
        if until is None and self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def validate(self) -> dict:
        return {**self._validate(self.model), "diverged": self.history.diverged is not None}

    def finish(self) -> dict:
        return {"trainable": count_parameters(self.model, trainable_only=True), "seconds": round(self.seconds, 3),
                "seconds_per_step": self.history.seconds_per_step, "history": self.history.to_dict(),
                **(self._measure(self.model) if self._measure is not None else {})}

    def test(self) -> dict:
        return self._test(self.model)


def starting_point(model: torch.nn.Module) -> dict:
    """What a run starts from, for its cache key: the sha256 of the weights and buffers, and which parameters train
    (so that the same weights frozen differently, or with adapters injected, are other runs)."""
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    return {"weights": fingerprint(model), "trainable": hashlib.sha256(" ".join(trainable).encode()).hexdigest()}


def settings_key(settings: dict) -> dict:
    """``settings`` (arguments of a training loop) as JSON values for a cache key: data by its fingerprint,
    schedules, penalties and hooks by :func:`~ftcourse.train.describe`, numbers and strings as they are."""
    def plain(value):
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if hasattr(value, "fingerprint"):
            return {"data": value.fingerprint()}
        return describe(value)

    return {name: plain(value) for name, value in sorted(settings.items())}


# ----------------------------------------------------------------------------------------------------------------
# The steps of one tuning, and the cache of runs.

class _Tuning:
    """The runs of one tuning: their records (read from the cache or made now) and the trials still in memory."""

    def __init__(self, recipe: Recipe, store: _Store, steps: int, on: str | None = None):
        self.recipe, self.store, self.steps = recipe, store, steps
        self.on = on or getattr(recipe, "validated_on", "val")  # the validation set this tuning chooses on
        self.sibling = False  # a tuning on another validation set of the task (tune_on): not on the progress bar
        self.records: dict[float, dict] = {}  # lr -> record
        self.live: dict[float, Trial] = {}  # lr -> a run started in this call, its model in memory
        self.done: set[float] = set()  # the rates whose live run has trained to the end (or was loaded so)
        self.stopped: dict[float, int] = {}  # lr -> the step it was stopped at
        self.tried: list[float] = []
        self.ran_now = 0
        self.at: dict[float, int] = {}  # lr -> the steps its live run has trained (for the progress bar's clock)

    def record(self, lr: float) -> dict:
        if lr not in self.records:
            key = run_key(self.recipe.key, lr)
            self.records[lr] = self.store.read(key) or {"key": key, "lr": lr, "checks": {}}
        return self.records[lr]

    def choose_rate(self, grid, ladder, pause: int | None, margin: float) -> None:
        """The protocol's steps 1-4 (the module's docstring): try the grid, stop the clearly worse, climb the ladder."""
        self.try_rates(grid, pause, margin)
        while True:
            best = choose(self.trials())
            if best["stopped_at"] is not None and not best["diverged"]:  # the runs kept all diverged after the pause
                self.resume(best["lr"])
                continue
            beyond = next_rate(best["lr"], self.tried, ladder)
            if beyond is None:
                return
            if not self.sibling:
                progress.more(1)  # a run the experiment did not announce
            self.try_rates([beyond], pause, margin)

    def tune_on(self, name: str, grid, ladder, pause: int | None, margin: float) -> int:
        """The same tuning, choosing on the task's other validation set ``name``, with the runs in memory: a rate
        this tuning stopped at the pause that the other set keeps goes on from its pause, a rate further along the
        ladder is tried, and the run it chooses is tested. All of it lands in the records, so that a tuning that
        chooses on ``name`` (another lesson's, on the same training runs) trains nothing again. Returns how many
        runs it started."""
        other = _Tuning(self.recipe, self.store, self.steps, on=name)
        other.records, other.live, other.done, other.at = self.records, self.live, self.done, self.at
        other.sibling = True
        other.choose_rate(grid, ladder, pause, margin)
        other.outcome(keep_model=False)
        return other.ran_now

    def trial(self, lr: float) -> Trial:
        if lr not in self.live:
            self.live[lr] = self.recipe.start(lr)
            self.ran_now += 1
        return self.live[lr]

    def mine(self, entry: dict) -> dict:
        """A check or result of a record as this tuning sees it: the validation of the set it chooses on, with the
        other things the entry keeps."""
        return {**{k: v for k, v in entry.items() if k != "sets"}, **entry["sets"][self.on]}

    def checked(self, lr: float, pause: int) -> dict:
        """The validation at step ``pause``: from the record, or trained to there now (and saved)."""
        record = self.record(lr)
        check = record["checks"].get(str(pause))
        if check is None or self.on not in check["sets"]:  # not made, or not measured on this tuning's set
            trial = self.trial(lr)
            self._train(lr, trial, pause)
            sets = {**(check or {}).get("sets", {}), **self._validated(trial)}
            record["checks"][str(pause)] = {"sets": sets, "seconds": round(trial.seconds, 3)}
            self.store.write(record)
        return self.mine(record["checks"][str(pause)])

    def finished(self, lr: float) -> dict:
        """The finished run's validation and what it keeps: from the record, or trained to the end now (and saved)."""
        record = self.record(lr)
        result = record.get("result")
        if result is None or self.on not in result["sets"]:
            trial = self.trial(lr)
            self._train(lr, trial, None)
            self.done.add(lr)
            record["result"] = {**trial.finish(), "sets": {**(result or {}).get("sets", {}), **self._validated(trial)}}
            self.store.write(record)
        return self.mine(record["result"])

    def resume(self, lr: float) -> None:
        """Finish a run that was stopped early (from where it paused, or again from the start if it paused in an
        earlier call: training is deterministic)."""
        del self.stopped[lr]
        self.finished(lr)

    def _train(self, lr: float, trial: Trial, until: int | None) -> None:
        """Train ``trial`` to step ``until`` (None: the end), and tell the progress bar how long its steps took."""
        start = time.perf_counter()
        trial.train(until=until)
        until = self.steps if until is None else until
        progress.trained(until - self.at.get(lr, 0), time.perf_counter() - start)
        self.at[lr] = until

    def _validated(self, trial: Trial) -> dict:
        """The trial's validation now, on every set it measures, by set: ``{name: {val, val_loss, diverged}}``."""
        measured = trial.validate()
        flagged = measured.get("diverged", False)
        sets = {self.on: measured, **measured.get("also", {})}
        return {name: {"val": float(m["val"]), "val_loss": float(m["val_loss"]),
                       "diverged": diverged(m["val"], m["val_loss"], flagged=flagged, chance=self.recipe.chance)}
                for name, m in sets.items()}

    def try_rates(self, rates, pause: int | None, margin: float) -> None:
        self.tried += rates
        if pause is not None:
            for lr in rates:
                self.checked(lr, pause)
            at_pause = {lr: self.checked(lr, pause) for lr in self.tried if lr not in self.stopped}
            healthy = {lr: c for lr, c in at_pause.items() if not c["diverged"]}
            leader = choose([{"lr": lr, **c} for lr, c in healthy.items()]) if healthy else None
            for lr in rates:
                if len(self.tried) > 1 and clearly_worse(lr, at_pause[lr], leader, margin):  # one rate never stops
                    self.stopped[lr] = pause
        for lr in rates:
            if lr not in self.stopped:
                self.finished(lr)
            if not self.sibling:
                progress.run_done(1)  # trained, stopped early, or read from the cache

    def trials(self) -> list[dict]:
        rows = []
        for lr in self.tried:
            record = self.records[lr]
            stopped_at = self.stopped.get(lr)
            measured = self.mine(record["checks"][str(stopped_at)] if stopped_at is not None else record["result"])
            rows.append({"lr": lr, "val": measured["val"], "val_loss": measured["val_loss"],
                         "diverged": measured["diverged"], "stopped_at": stopped_at,
                         "seconds": measured.get("seconds", math.nan)})
        return rows

    def outcome(self, keep_model: bool, report=()) -> Tuned:
        trials = self.trials()
        best = choose(trials)
        lr = best["lr"]
        record = self.records[lr]
        model, test = None, record.get("test")
        if best["stopped_at"] is not None:  # every run diverged before the decision: nothing was trained to test
            result, test = {**best, "trainable": None, "history": None}, {}
        else:
            result = self.mine(record["result"])
            if best["diverged"]:
                test = {}
            elif test is None or keep_model or lr in self.done or set(self.recipe_tests) - set(test):
                model = self._model_of(lr, record)
                if test is None or set(self.recipe_tests) - set(test):
                    record["test"] = test = {**(test or {}), **self.live[lr].test()}
                    self.store.write(record)
                if keep_model:
                    self.store.write_weights(record, model.state_dict())
        reported = {rate: self._reported(rate) for rate in report}
        steps = sum(self.steps if "result" in self.records[rate] else self.stopped.get(rate, self.steps)
                    for rate in self.tried)
        standard = ("lr", "val", "val_loss", "diverged", "stopped_at", "trainable", "history")
        return Tuned(lr=lr, val=result["val"], val_loss=result["val_loss"], diverged=bool(best["diverged"]),
                     test=dict(test or {}), trainable=result.get("trainable"), history=result.get("history"),
                     trials=pd.DataFrame(trials), runs=len(self.tried), ran_now=self.ran_now, steps=steps,
                     seconds=float(pd.DataFrame(trials)["seconds"].sum()),
                     measures={k: v for k, v in result.items() if k not in standard}, reported=reported,
                     model=model)

    def _reported(self, lr: float) -> dict:
        """The test metrics of the run at ``lr``, finished (from where it paused) if it was stopped early."""
        record = self.records[lr]
        test = record.get("test")
        if test is not None and not set(self.recipe_tests) - set(test):
            return dict(test)
        if self.finished(lr)["diverged"]:
            return {}
        self._model_of(lr, record)
        record["test"] = {**(test or {}), **self.live[lr].test()}
        self.store.write(record)
        return dict(record["test"])

    def _model_of(self, lr: float, record: dict) -> torch.nn.Module:
        """The chosen run's trained model: in memory, from its kept weights, or trained again (deterministic)."""
        if lr in self.done:
            return self.live[lr].model
        weights = self.store.read_weights(record)
        trial = self.recipe.start(lr)
        if weights is not None:
            trial.model.load_state_dict(weights)
        else:
            self.ran_now += 1
            trial.train(until=None)
        self.live[lr] = trial
        self.done.add(lr)
        return trial.model

    @property
    def recipe_tests(self) -> tuple:
        """The names the recipe's test measures (a record measured with fewer is measured again)."""
        return tuple(self.recipe.test_names)


class _Store:
    """The cache of runs: one JSON record per run (``<key>.json``) and, for kept models, its weights (``<key>.pt``)."""

    def __init__(self, folder):
        self.folder = None if folder is None else Path(folder)
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def read(self, key: str) -> dict | None:
        if self.folder is None:
            return None
        path = self.folder / f"{key}.json"
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # a damaged record is a run not yet made: it is made again and rewritten
            return None
        ok = isinstance(record, dict) and record.get("key") == key and isinstance(record.get("checks"), dict)
        return record if ok else None

    def write(self, record: dict) -> None:
        if self.folder is not None:
            save_json(self.folder / f"{record['key']}.json", record)

    def write_weights(self, record: dict, state: dict) -> None:
        if self.folder is not None:
            save_state(self.folder / f"{record['key']}.pt", {k: v.detach().cpu() for k, v in state.items()})

    def read_weights(self, record: dict) -> dict | None:
        if self.folder is None or not (self.folder / f"{record['key']}.pt").exists():
            return None
        try:
            return read_torch_file(self.folder / f"{record['key']}.pt", "cached weights")
        except (OSError, ValueError):  # damaged: the run is trained again
            return None
