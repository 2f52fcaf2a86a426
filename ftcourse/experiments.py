"""The course's ways to learn a target task, each as one run of the fair-comparison protocol.

Given a target task with few labels, you can

- **scratch**: train a freshly initialised network on the target alone: min L_fin(theta) from random theta;
- **probe** (linear probe, "feature extraction"): keep the pretrained network frozen and train only a new head on
  its features;
- **finetune**: start from the pretrained weights theta_pre, give the network a new head, and train everything:
  min L_fin(theta) starting at theta = theta_pre.

:func:`run` builds, trains and tests one model with a budget of optimiser steps and returns its validation and test
accuracy, so the three can be compared on the same budget; :func:`compare` runs several methods and seeds and
returns the table. The copied-stages experiment (lesson 02), the remedies for negative transfer (lesson 04) and the
efficient methods (lesson 07) are the same sequence with a different preparation of the model; the dense tasks
(lesson 08) are the same protocol with another network and score.

**A fair comparison tunes every method.** ``run(..., lr="tuned")`` gives each method its own rate, chosen on the
*validation* split by the course's one rule (:mod:`ftcourse.protocol`), and reports the *test* accuracy of that one
run; each seed tunes for itself. Tuning costs a few runs instead of one (clearly worse rates stop early); with a
``cache`` folder every run is saved and never trained twice.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import torch

from . import dense, efficient, lab, models, protocol, transfer
from .data import Task, digits
from .pretrain import RECIPE
from .train import History, evaluate, fit, predict

METHODS = ("scratch", "probe", "finetune")
# The conventional, untuned rates per method (SGD, Nesterov momentum, cosine schedule): what a recipe would use
# without tuning. A pretrained network is conventionally given a smaller rate than a random one, so that large
# steps do not wreck the features it came with; lesson 04 measures how much that convention costs.
DEFAULT_LR = {"scratch": 0.05, "probe": 0.05, "finetune": 0.01}
# The grid that lr="tuned" starts from, and the ladder it extends along: when the rate with the best validation
# accuracy lies at an edge of what was tried, the next rate of the ladder beyond that edge is tried too, until the
# best rate has a worse neighbour on both sides or the ladder ends. Three rates a factor ~3 apart usually hold the
# best rate of scratch and of fine-tuning on the lab's targets at 100 steps of 32; on the conflicting target
# fine-tuning wants more, and the ladder finds it.
LR_GRID = (0.01, 0.03, 0.1)
LR_LADDER = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
_MEASURED: dict[str, float] = {}  # device -> seconds per step, measured once per process


def measured_seconds_per_step(device=None) -> float:
    """Seconds one optimiser step of the lab ResNet at batch 32 takes on ``device`` now, measured on the spot (12
    steps on random images, once per process) -- not a constant from another machine. The random state of torch,
    numpy and Python is left as it was, so that measuring changes no later result."""
    import random

    import numpy as np

    device = torch.device(device or "cpu")
    if str(device) not in _MEASURED:
        states = (random.getstate(), np.random.get_state())
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            g = torch.Generator().manual_seed(0)
            images = torch.randint(0, 256, (256, 3, 32, 32), generator=g, dtype=torch.uint8)
            labels = torch.randint(0, 5, (256,), generator=g)
            model = models.replace_head(models.copy_model(source_model()), 5).to(device)
            history = fit(model, (images, labels), steps=12, lr=0.01, batch_size=32, progress=False)
        random.setstate(states[0])
        np.random.set_state(states[1])
        _MEASURED[str(device)] = history.seconds_per_step
    return _MEASURED[str(device)]


def cost(runs: int, steps: int, device=None, *, most: int | None = None, seconds_per_step: float | None = None) -> str:
    """What an experiment costs, said before it starts (``"54 runs of 100 steps: about 3 min on this cpu ..."``),
    from the seconds a step takes here (:func:`measured_seconds_per_step`, on the spot; or ``seconds_per_step`` as
    the caller timed it, for runs of another network: a segmentation head, a BERT). ``most``: the runs there can be
    at most, when the ladder may add rates (the estimate is then a range).

    It also opens the experiment's progress bar (:mod:`ftcourse.progress`): one bar over the runs, with the time
    left as measured on the runs trained so far. Cached runs cost nothing and count as done, so a second run of the
    same cell takes seconds.
    """
    import sys

    from . import progress
    from .env import active_profile, in_notebook

    kind = torch.device(device or "cpu").type
    measured_here = seconds_per_step is None
    per_step = measured_seconds_per_step(device) if measured_here else float(seconds_per_step)
    minutes = runs * steps * per_step / 60
    estimate = f"about {max(minutes, 0.1):.1f} min"
    counted = f"{runs} runs"
    if most is not None and most > runs:
        counted = f"{runs} to {most} runs"
        estimate = f"about {max(minutes, 0.1):.1f} to {max(most * steps * per_step / 60, 0.1):.1f} min"
    progress.start(runs, steps, per_step, show=progress.showing(active_profile(), in_notebook() or sys.stderr.isatty()))
    how = "measured here just now" if measured_here else "as timed above"
    return (f"{counted} of {steps} steps: {estimate} on this {kind} the first time ({per_step * 1000:.0f} ms per "
            f"step, {how}; cached runs are read back instead)")


def source_model(pretrained: models.StagedNet | None = None) -> models.StagedNet:
    """``pretrained``, or the course's default source: the shipped ``lab`` checkpoint."""
    return pretrained if pretrained is not None else models.pretrained("lab")


def make_model(method: str, num_classes: int, *, pretrained: models.StagedNet | None = None, seed: int = 0,
               device=None) -> models.StagedNet:
    """A network ready for ``method``: random (scratch) or a copy of ``pretrained`` with a new head.

    For scratch the network has ``pretrained``'s architecture (the lab ResNet by default) with random weights.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; use one of {list(METHODS)}.")
    reference = source_model(pretrained)
    torch.manual_seed(seed)
    if method == "scratch":
        if reference.config:  # the course's ResNet records how it was built
            model = models.resnet(**{**reference.config, "num_classes": num_classes})
        else:  # e.g. a torchvision ResNet: the same architecture, every stage with fresh random weights
            model = transfer.reinit(models.copy_model(reference), list(reference.stage_names), seed=seed)
            models.replace_head(model, num_classes)
    else:
        model = models.copy_model(reference)
        models.replace_head(model, num_classes)
        if method == "probe":
            transfer.freeze(model)  # every stage but the new head
    return model.to(device or "cpu")


def run(task: Task, method: str, *, pretrained: models.StagedNet | None = None, seed: int = 0, steps: int = 100,
        batch_size: int = 32, lr: float | str | None = None, augment: bool = True, prepare=None, device=None,
        lr_grid=LR_GRID, ladder=LR_LADDER, cache=None, also_test: dict | None = None, keep_model: bool = False,
        decide_at: float | None = protocol.DECIDE_AT, report=(), **fit_kwargs) -> dict:
    """Build a model for ``method``, train it for ``steps`` steps on ``task.train``, and report it on ``task.val``
    and ``task.test``: the one sequence behind every comparison of the course, so that each method gets the same
    data, budget and evaluation.

    ``lr`` is a rate, ``None`` for the method's conventional rate (:data:`DEFAULT_LR`), or ``"tuned"``: the best of
    ``lr_grid`` (extended along ``ladder``) on validation, by the course's one rule (:func:`ftcourse.protocol.tune`:
    clearly worse rates stop at ``decide_at`` of the budget). ``prepare(model)``, when given, changes the freshly
    built model before training (re-initialise stages, freeze some, run a probe first) and may return extra
    arguments for :func:`~ftcourse.train.fit` (such as an L2-SP ``penalty``). ``also_test`` names more test sets
    (``{"shifted": ImageData}``), each reported as ``<name>_accuracy``. With a ``cache`` folder every run is saved
    and named by what it computes (the task's data, the prepared starting weights and which of them train, every
    argument of ``fit``, the seed, the rate), so the same run is trained once, whichever lesson asks first.
    ``report`` names rates of the grid whose test metrics the caller shows on purpose next to the tuned one (a
    conventional rate): they are trained to the end and tested, and take no part in the choice (``reported``).

    Returns, for every ``lr``: the rate used, ``val_accuracy``, ``val_loss``, the test ``accuracy`` and ``error``
    (and each ``<name>_accuracy``), ``diverged``, ``trainable`` (parameters), ``seconds`` and ``seconds_per_step``
    (of the chosen run's training when it ran), ``history`` (a :class:`~ftcourse.train.History`), ``model`` (the
    trained network; ``None`` for a run read from the cache unless ``keep_model=True``, which keeps its weights in
    the cache), ``tuning`` (every rate tried with its validation, a table to look at, not to choose from by test),
    ``tuning_runs``, ``ran_now``, ``steps_spent`` and ``reported`` (the test metrics of each rate of ``report``).
    """
    if isinstance(lr, str) and lr != "tuned":
        raise ValueError(f"lr must be a number, None (the method's conventional rate) or 'tuned', got {lr!r}.")
    recipe = ImageRecipe(task, method, pretrained=pretrained, seed=seed, steps=steps, batch_size=batch_size,
                         augment=augment, prepare=prepare, device=device, also_test=also_test, fit_kwargs=fit_kwargs)
    if lr == "tuned":
        tuned = protocol.tune(recipe, grid=lr_grid, ladder=ladder, steps=steps, decide_at=decide_at, cache=cache,
                              keep_model=keep_model, report=report)
    else:
        tuned = protocol.tune(recipe, grid=[DEFAULT_LR[method] if lr is None else lr], steps=steps, cache=cache,
                              keep_model=keep_model)
    return image_result(method, tuned, also_test)


def image_result(method: str, tuned: protocol.Tuned, also_test: dict | None = None) -> dict:
    """:func:`run`'s one return shape, from a :class:`~ftcourse.protocol.Tuned` of image runs."""
    test = {"accuracy": math.nan, **{f"{name}_accuracy": math.nan for name in also_test or {}}, **tuned.test}
    history = History.from_dict(tuned.history) if tuned.history is not None else None
    return {"method": method, "lr": tuned.lr, "val_accuracy": tuned.val, "val_loss": tuned.val_loss, **test,
            "error": 1 - test["accuracy"], "diverged": tuned.diverged, "trainable": tuned.trainable,
            "seconds": history.training_seconds if history else math.nan,
            "seconds_per_step": history.seconds_per_step if history else math.nan, "history": history,
            "model": tuned.model, "tuning": tuned.trials.rename(columns={"val": "val_accuracy"}),
            "tuning_runs": tuned.runs, "ran_now": tuned.ran_now, "steps_spent": tuned.steps,
            "reported": tuned.reported}


class ImageRecipe:
    """How :func:`ftcourse.protocol.tune` starts one image run of :func:`run`, and the run's name in the cache.

    The model is built (:func:`make_model`) and prepared once, to name the runs by what they start from; each rate
    then trains a copy of it (``copy.deepcopy`` of the model and of what ``prepare`` returned, so that a penalty or a
    schedule built on the model points at the copy): a ``prepare`` that trains (a head first, LP-FT's probe) trains
    once per tuning, not once per rate. A run is named by the task's training and test sets, not its
    validation: each check measures every validation set the task carries (``task.also_val``) and the records keep
    them by set, so a task choosing on another of its sets (``task.choosing_on``) reads the same runs.
    """

    can_pause = True

    def __init__(self, task: Task, method: str, *, pretrained, seed, steps, batch_size, augment, prepare, device,
                 also_test, fit_kwargs):
        self.task, self.method, self.seed, self.steps = task, method, seed, steps
        self.pretrained = source_model(pretrained)
        self.device = torch.device(device or task.train.device)
        self.prepare, self.also_test = prepare, dict(also_test or {})
        self.settings = {"batch_size": batch_size, "augment": augment, "seed": seed, "progress": False,
                         **fit_kwargs}
        self.chance = 1 / task.num_classes
        self.test_names = ("accuracy", *(f"{name}_accuracy" for name in self.also_test))
        self._first = self._build()
        self._prepared = copy.deepcopy(self._first)  # what every later rate starts from, untouched by training
        model, extra = self._first
        presentation = ("progress", "live_plot", "sync_every", "checkpoint_every")
        self.validated_on = task.val.fingerprint()[:24]
        self.also_val = {data.fingerprint()[:24]: data for data in task.also_val.values()}
        self.also_validated = tuple(self.also_val)  # protocol.tune tunes on each of them too
        self.key = {"kind": "image", "task": task.training_fingerprint(), "start": protocol.starting_point(model),
                    "steps": steps, "extra": protocol.settings_key(extra),
                    "fit": protocol.settings_key({k: v for k, v in self.settings.items() if k not in presentation})}

    def _build(self):
        model = make_model(self.method, self.task.num_classes, pretrained=self.pretrained, seed=self.seed,
                           device=self.device)
        extra = (self.prepare(model) if self.prepare is not None else None) or {}
        return model, extra

    def start(self, lr: float) -> protocol.FitTrial:
        model, extra = self._first if self._first is not None else copy.deepcopy(self._prepared)
        self._first = None  # the model built to name the runs trains the first rate; later rates train copies
        return protocol.FitTrial(model, self.task.train, steps=self.steps, lr=lr, validate=self._validate,
                                 test=self._test, **{**self.settings, **extra})

    def _validate(self, model) -> dict:
        val = evaluate(model, self.task.val)
        also = {name: evaluate(model, data) for name, data in self.also_val.items()}
        return {"val": val["accuracy"], "val_loss": val["loss"],
                "also": {name: {"val": m["accuracy"], "val_loss": m["loss"]} for name, m in also.items()}}

    def _test(self, model) -> dict:
        return {"accuracy": evaluate(model, self.task.test)["accuracy"],
                **{f"{name}_accuracy": evaluate(model, data)["accuracy"] for name, data in self.also_test.items()}}


def compare(task_name: str, shots, *, methods=METHODS, seeds=(0,), steps: int = 100, batch_size: int = 32,
            test_per_class: int = 100, pretrained: models.StagedNet | None = None, device=None,
            relatedness: float = 1.0, lr: float | str | None = None, lr_grid=LR_GRID, cache=None) -> list[dict]:
    """Each method x labels-per-class x seed on one lab target; a list of result rows.

    Each row has the rate used (``lr="tuned"`` chooses it per method and seed on validation: each seed a whole
    replicate, see :mod:`ftcourse.protocol`), the validation and test accuracy, and ``runs``: how many training runs
    the row cost.
    """
    pretrained = source_model(pretrained)
    rows = []
    for n in shots:
        for seed in seeds:
            task = lab.target(task_name, n, test_per_class=test_per_class, seed=seed, relatedness=relatedness,
                              device=device)
            for method in methods:
                result = run(task, method, pretrained=pretrained, seed=seed, steps=steps, batch_size=batch_size,
                             device=device, lr=lr, lr_grid=lr_grid, cache=cache)
                rows.append({"task": task_name, "shots": n, "seed": seed, "method": method, "lr": result["lr"],
                             "val_accuracy": result["val_accuracy"], "accuracy": result["accuracy"],
                             "runs": result["tuning_runs"]})
    return rows


def pretrained_on_digits(steps: int = 200, *, device=None, folder=None, progress: bool | None = None
                         ) -> models.StagedNet:
    """The course's ResNet (the lab checkpoint's configuration) pretrained on the handwritten digits 0-4: the
    source for transfer to the digits 5-9 (Yosinski et al. 2014's A/B split on a small scale).

    Trained with :func:`~ftcourse.train.fit` for ``steps`` steps of 64 at rate 0.1, without augmentation (a
    mirrored digit is another digit, or none), from the random weights of ``torch.manual_seed(0)``. With a
    ``folder`` the run is kept there as a checkpoint, so a second call (from any lesson) reads it back.
    ``progress`` is fit's (a progress bar and a live loss plot in a notebook by default).
    """
    source = digits("source", device=device)
    torch.manual_seed(0)
    net = models.resnet(**{**RECIPE["model"], "num_classes": source.num_classes}).to(device or "cpu")
    checkpoint = None if folder is None else Path(folder) / f"06_digits_source_{steps}steps.pt"
    fit(net, source, steps=steps, lr=0.1, batch_size=64, augment=False, seed=0, checkpoint=checkpoint,
        resume=checkpoint is not None, progress=progress)
    return net


def start_from(state: dict):
    """A ``prepare`` for :func:`run`: the freshly built model takes the weights ``state`` (a ``state_dict``), for
    example a starting point made by a function of your own. The run's cache name follows those weights."""
    def prepare(model):
        model.load_state_dict(state)
    return prepare


def copied_stages_run(task: Task, n_copied: int, *, fine_tune: bool, pretrained: models.StagedNet | None = None,
                      seed: int = 0, steps: int = 100, batch_size: int = 32, lr: float | str | None = None,
                      lr_grid=LR_GRID, cache=None, device=None) -> dict:
    """Yosinski et al. 2014's transfer experiment: copy the first ``n_copied`` stages, re-initialise the rest.

    The first ``n_copied`` stages come from the pretrained network and the others (and the head) start from random
    weights. Then either the copied stages stay **frozen** ("AnB" in the paper) or everything is **fine-tuned**
    ("AnB+"). ``n_copied = 0`` is training from scratch; copying every stage and freezing it is a linear probe.
    ``lr=None`` uses one rate for every ``n`` and both modes (scratch's conventional 0.05), as the paper did, so the
    only difference is what was copied; ``lr="tuned"`` gives each point its own rate, chosen on validation.
    Returns the rate, the validation and test accuracy, the number of trainable parameters and the time per step.
    """
    feature_stages = source_model(pretrained).stage_names[:-1]
    if not 0 <= n_copied <= len(feature_stages):
        raise ValueError(f"n_copied must be between 0 and {len(feature_stages)} (the stages before the head), "
                         f"got {n_copied}.")

    def copy_first_stages(model):
        if n_copied < len(feature_stages):
            transfer.reinit(model, list(feature_stages[n_copied:]), seed=seed)
        if not fine_tune and n_copied > 0:
            transfer.freeze(model, first=n_copied)

    result = run(task, "finetune", pretrained=pretrained, seed=seed, steps=steps, batch_size=batch_size,
                 lr=DEFAULT_LR["scratch"] if lr is None else lr, lr_grid=lr_grid, cache=cache,
                 prepare=copy_first_stages, device=device)
    return {key: result[key] for key in ("lr", "val_accuracy", "accuracy", "trainable", "seconds_per_step")}


# Each remedy: (the rate it fine-tunes with, what it is). "conventional" is DEFAULT_LR["finetune"], or the rate
# remedy_run is given; the others are part of the remedy itself.
REMEDIES = {
    "finetune": ("conventional", "plain fine-tuning from the lab checkpoint: what the remedies are measured against"),
    "lower rate": (0.001, "fine-tuning with a 10x smaller rate (lr 0.001): stay closer to θ_pre"),
    "higher rate": (0.1, "fine-tuning with a 10x larger rate (lr 0.1): move further from θ_pre"),
    "tuned rate": ("tuned", "fine-tuning at the rate of the grid with the best validation accuracy"),
    "L2-SP": ("conventional", "a penalty α/2·‖w − w⁰‖² that pulls the weights towards θ_pre (X. Li et al. 2018)"),
    "LP-FT": ("conventional", "a linear probe for half the steps, then fine-tuning from the probed head "
                              "(Kumar et al. 2022); probe steps count in the budget"),
    "re-init top": ("conventional", "keep the lower stages of θ_pre, give layer3 and layer4 fresh random weights"),
    "another source": ("conventional", "fine-tune a checkpoint pretrained on a source that needed the target's factor"),
}


def remedy_run(task: Task, remedy: str, *, pretrained: models.StagedNet | None = None,
               other_source: str = "lab-colours", seed: int = 0, steps: int = 100, batch_size: int = 32,
               lr: float | str | None = None, lr_grid=LR_GRID, cache=None, also_test: dict | None = None,
               device=None, report=()) -> dict:
    """Fine-tune ``task`` with one of the :data:`REMEDIES` for negative transfer; returns rate, accuracy and error.

    Every remedy gets the same budget of ``steps`` optimiser steps (LP-FT spends half of them on its probe).
    Remedies that are not a rate fine-tune at ``lr``: ``None`` for the conventional rate (``DEFAULT_LR``), a
    number, or ``"tuned"`` (chosen on validation, so that a remedy is compared with tuned fine-tuning, tuned with
    tuned). ``other_source`` names the checkpoint that ``"another source"`` starts from (see models.PRETRAINED).
    A tuned remedy also returns ``tuning``: every rate it tried, with its validation accuracy; and ``reported``: the
    test metrics of the rates of ``report`` (tuned remedies only).
    """
    if remedy not in REMEDIES:
        raise ValueError(f"Unknown remedy {remedy!r}; choose from {list(REMEDIES)}.")
    rate = REMEDIES[remedy][0]
    if rate == "conventional":
        rate = DEFAULT_LR["finetune"] if lr is None else lr
    elif lr is not None:
        raise ValueError(f"The remedy {remedy!r} is a learning rate ({rate}); do not pass lr={lr!r} with it.")
    probe_steps = steps // 2 if remedy == "LP-FT" else 0

    def prepare(model):
        if remedy == "L2-SP":
            return {"penalty": transfer.L2SP(model, alpha=0.1, beta=0.01), "weight_decay": 0.0}
        if remedy == "re-init top":
            transfer.reinit(model, ["layer3", "layer4"], seed=seed)
        if remedy == "LP-FT":  # the probe phase; the fine-tuning that follows is the common run
            transfer.fit_head_first(model, task.train, steps=probe_steps, lr=DEFAULT_LR["probe"],
                                    batch_size=batch_size, augment=True, seed=seed, progress=False, cache=cache)
        return None

    if remedy == "another source":
        pretrained = models.pretrained(other_source)
    result = run(task, "finetune", pretrained=pretrained, seed=seed, steps=steps - probe_steps,
                 batch_size=batch_size, lr=rate, lr_grid=lr_grid, cache=cache, prepare=prepare, device=device,
                 also_test=also_test, report=report)
    keep = ["lr", "val_accuracy", "accuracy", "error", *(f"{name}_accuracy" for name in also_test or {}), "tuning",
            "reported"]
    return {"remedy": remedy, **{name: result[name] for name in keep}}


def shift_run(target: str, method: str, *, shots: int, pretrained: models.StagedNet | None = None, seed: int = 0,
              steps: int = 100, batch_size: int = 32, lr: float | str | None = "tuned", lr_grid=LR_GRID, cache=None,
              val_per_class: int = 50, test_per_class: int = 100, device=None) -> dict:
    """Train on a lab target in its usual conditions, test in them and in the lab's shifted conditions.

    Kumar et al. (ICLR 2022) claim that LP-FT beats fine-tuning *out of distribution*: fine-tuning with a random
    head distorts the pretrained features where the target's training images are, and leaves them unchanged
    elsewhere, so images unlike the training set fall between the two. ``method`` is ``"scratch"``, ``"probe"``,
    ``"finetune"`` or ``"LP-FT"`` (half the ``steps`` probe, half fine-tune: the budget is the same). The rate is
    chosen on the in-distribution validation set, as a practitioner without shifted data would. Returns the rate, the
    validation accuracy, ``accuracy`` (in distribution) and ``shifted_accuracy`` (the same classes on light textured
    backgrounds, dark shapes, more noise: :func:`ftcourse.lab.make_images` with ``conditions="shifted"``).
    """
    task = lab.target(target, shots, val_per_class=val_per_class, test_per_class=test_per_class, seed=seed,
                      device=device)
    shifted = lab.make_images(target, test_per_class, seed=10_000, split="test", conditions="shifted", device=device)
    common = {"lr": lr, "lr_grid": lr_grid, "cache": cache, "seed": seed, "steps": steps, "batch_size": batch_size,
              "pretrained": pretrained, "device": device, "also_test": {"shifted": shifted}}
    result = remedy_run(task, "LP-FT", **common) if method == "LP-FT" else run(task, method, **common)
    return {name: result[name] for name in ("lr", "val_accuracy", "accuracy", "shifted_accuracy")}


def efficient_run(task: Task, method: str, *, pretrained: models.StagedNet | None = None, seed: int = 0,
                  steps: int = 100, batch_size: int = 32, lr: float | str | None = "tuned", lr_grid=LR_GRID,
                  cache=None, device=None, keep_model: bool = False) -> dict:
    """Fine-tune ``pretrained`` on ``task`` with one method of :mod:`ftcourse.efficient` (``"bitfit"``, ``"lora"``,
    ``"surgical:layer1"``...), with the same budget and evaluation as every other run.

    Each method gets its own rate (``lr="tuned"``: chosen on validation from ``lr_grid``, along the ladder); a
    method that trains a few parameters usually wants a larger rate than full fine-tuning. Returns the rate, the
    validation and test accuracy, and the method's costs from :func:`ftcourse.efficient.footprint`. With
    ``keep_model``, the cache keeps the chosen run's weights (see :func:`run`).
    """
    pretrained = source_model(pretrained)
    result = run(task, "finetune", pretrained=pretrained, seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                 lr_grid=lr_grid, cache=cache, device=device, prepare=efficient.prepare(method),
                 keep_model=keep_model)
    return {**efficient.footprint(pretrained, task.num_classes, method), "lr": result["lr"],
            "val_accuracy": result["val_accuracy"], "accuracy": result["accuracy"], "diverged": result["diverged"],
            "tuning_runs": result["tuning_runs"]}


def efficient_comparison(targets, methods, *, shots, seeds=(0,), pretrained: models.StagedNet | None = None,
                         steps: int = 100, batch_size: int = 32, test_per_class: int = 100, lr_grid=LR_GRID,
                         cache=None, device=None, keep_models=()) -> pd.DataFrame:
    """Every method of ``methods`` (:mod:`ftcourse.efficient`) on every lab target: one row per target, labels per
    class, seed and method, with the rate, validation and test accuracy and the method's costs.

    Every method gets the same data, budget and grid, and every seed is a whole replicate: it draws its own
    training set and chooses its own rate on its own validation split (``lr_grid``, extended along the ladder while
    the best rate is at an edge). ``tuning_runs`` says how many runs each row cost. The cache keeps the weights of
    the first seed's chosen runs of the methods named in ``keep_models``, for a lesson that uses those networks
    afterwards.
    """
    pretrained = source_model(pretrained)
    rows = []
    for target in targets:
        for n in shots:
            def one_seed(seed):
                task = lab.target(target, n, test_per_class=test_per_class, seed=seed, device=device)
                return [{"target": target, "shots": n, "seed": seed,
                         **efficient_run(task, method, pretrained=pretrained, seed=seed, steps=steps,
                                         batch_size=batch_size, lr_grid=lr_grid, cache=cache, device=device,
                                         keep_model=protocol.keeps_model(method, seed, keep_models, seeds))}
                        for method in methods]

            rows += [row for seed_rows in protocol.replicates(one_seed, seeds) for row in seed_rows]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------
# Beyond classification: the same protocol on the lab's dense tasks (lesson 08).

DENSE_METHODS = ("scratch", "probe", "finetune", "early stages frozen")
EARLY_STAGES = ("stem", "layer1")  # what "early stages frozen" keeps fixed
DENSE_METRIC = {"segmentation": "mIoU", "detection": "AP50"}


def dense_model(kind: str, method: str, num_classes: int, *, pretrained: models.StagedNet | None = None,
                seed: int = 0, device=None) -> torch.nn.Module:
    """A :class:`~ftcourse.dense.SegmentationNet` or :class:`~ftcourse.dense.DetectionNet` ready for ``method``:

    - ``"scratch"``: the backbone's architecture with random weights;
    - ``"probe"``: the pretrained stages, frozen; only the new head trains (a dense task's probe: its head is a
      small decoder, not one linear layer);
    - ``"finetune"``: the pretrained stages and the new head, all trained;
    - ``"early stages frozen"``: as ``"finetune"``, with the stem and layer1 frozen (as torchvision's detection
      models do by default with ``trainable_backbone_layers=3``: the first stages of a ResNet stay fixed).

    The new head is initialised from ``seed`` alike for every method.
    """
    dense.check_kind(kind)
    if method not in DENSE_METHODS:
        raise ValueError(f"Unknown method {method!r}; use one of {list(DENSE_METHODS)}.")
    reference = source_model(pretrained)
    torch.manual_seed(seed)
    backbone = (models.resnet(**reference.config) if method == "scratch" else models.copy_model(reference))
    torch.manual_seed(seed)
    net = (dense.SegmentationNet if kind == "segmentation" else dense.DetectionNet)(backbone, num_classes)
    if method == "probe":
        transfer.freeze(net.backbone)
    elif method == "early stages frozen":
        transfer.freeze(net.backbone, list(EARLY_STAGES))
    return net.to(device or "cpu")


def dense_score(model: torch.nn.Module, kind: str, data) -> float:
    """mIoU (segmentation, background included) or AP at IoU 0.5 (detection) of ``model`` on ``data``."""
    return score_outputs(predict(model, data.images), kind, data)


def score_outputs(outputs: torch.Tensor, kind: str, data) -> float:
    """:func:`dense_score` of outputs already predicted for ``data.images`` (validation needs them for its loss
    too: one forward pass, not two)."""
    if kind == "segmentation":
        return dense.mean_iou(outputs.argmax(1), data.masks, data.num_classes + 1)
    return dense.average_precision(dense.decode(outputs), data.boxes, data.num_classes)


def stage_distances(model: torch.nn.Module, start: dict[str, torch.Tensor]) -> dict[str, float]:
    """How far each backbone stage moved: ||theta - theta_0|| / ||theta_0|| over its parameters (``start`` is the
    state_dict it began from: theta_pre for the pretrained methods, the random init for scratch)."""
    now = dict(model.named_parameters())
    distances = {}
    for stage in model.stages:
        names = [n for n in now if n.startswith(f"backbone.{stage}.")]
        moved = torch.sqrt(sum(((now[n].detach().float() - start[n].float()) ** 2).sum() for n in names))
        size = torch.sqrt(sum((start[n].float() ** 2).sum() for n in names))
        distances[stage] = float(moved / size)
    return distances


def dense_run(task: dense.DenseTask, kind: str, method: str, *, lr: float | str, pretrained=None, seed: int = 0,
              steps: int = 100, batch_size: int = 32, device=None, lr_grid=LR_GRID, ladder=LR_LADDER, cache=None,
              keep_model: bool = False, decide_at: float | None = protocol.DECIDE_AT) -> dict:
    """Build a dense network for ``method``, train it ``steps`` steps on ``task.train`` (no augmentation: a flip
    would have to move the masks and boxes too), and score it on ``task.val`` and ``task.test`` (:func:`dense_score`).

    ``lr`` is a rate or ``"tuned"``: the best of ``lr_grid`` (extended along ``ladder``) on the validation score, by
    the course's one rule (:func:`ftcourse.protocol.tune`), the same as for images and text. Returns the rate, the
    validation score and loss, the test ``score``, the training time, whether it diverged, how far each stage moved
    (``distance <stage>``), ``tuning_runs`` and the ``model`` (trained in this call, or kept in the cache with
    ``keep_model=True``; else ``None``). With ``cache``, every run is saved as it pauses and ends.
    """
    if isinstance(lr, str) and lr != "tuned":
        raise ValueError(f"lr must be a number or 'tuned', got {lr!r}.")
    recipe = DenseRecipe(task, kind, method, pretrained=pretrained, seed=seed, steps=steps, batch_size=batch_size,
                         device=device)
    grid, ladder = (lr_grid, ladder) if lr == "tuned" else ([lr], ())
    tuned = protocol.tune(recipe, grid=grid, ladder=ladder, steps=steps, decide_at=decide_at, cache=cache,
                          keep_model=keep_model)
    distances = {k: v for k, v in tuned.measures.items() if k.startswith("distance ")}
    if not distances:  # every rate diverged before the decision: no run finished to measure
        distances = {f"distance {stage}": math.nan for stage in recipe.stages}
    return {"method": method, "lr": tuned.lr, "val_score": tuned.val, "val_loss": tuned.val_loss,
            "score": tuned.test.get("score", math.nan), "seconds": tuned.measures.get("seconds", math.nan),
            "diverged": tuned.diverged, **distances, "tuning_runs": tuned.runs, "model": tuned.model}


class DenseRecipe:
    """How :func:`ftcourse.protocol.tune` starts one dense run of :func:`dense_run`, and the run's name in the cache."""

    can_pause = True
    chance = None  # mIoU and AP have no "guess" to compare with; a dense run diverges by a non-finite loss or score
    test_names = ("score",)

    def __init__(self, task: dense.DenseTask, kind: str, method: str, *, pretrained, seed, steps, batch_size,
                 device):
        dense.check_kind(kind)
        self.task, self.kind, self.method, self.seed, self.steps = task, kind, method, seed, steps
        self.pretrained = source_model(pretrained)
        self.device = device or task.train.images.device
        self.batch_size = batch_size
        self.loss = dense.segmentation_loss if kind == "segmentation" else dense.detection_loss
        self._first = self._build()
        self.stages = list(self._first.stages)
        self.key = {"kind": kind, "task": task.fingerprint(), "start": protocol.starting_point(self._first),
                    "steps": steps, "fit": protocol.settings_key({"batch_size": batch_size, "seed": seed,
                                                                  "loss": self.loss})}

    def _build(self):
        return dense_model(self.kind, self.method, self.task.train.num_classes, pretrained=self.pretrained,
                           seed=self.seed, device=self.device)

    def start(self, lr: float) -> protocol.FitTrial:
        net = self._first if self._first is not None else self._build()
        self._first = None  # the network built to name the runs trains the first rate; later rates build their own
        start = {name: p.detach().clone() for name, p in net.named_parameters()}
        return protocol.FitTrial(net, self.task.train.for_training(self.kind), steps=self.steps, lr=lr,
                                 batch_size=self.batch_size, seed=self.seed, loss=self.loss, progress=False,
                                 validate=self._validate, test=self._test,
                                 measure=lambda model: {f"distance {stage}": d for stage, d
                                                        in stage_distances(model, start).items()})

    def _validate(self, model) -> dict:
        outputs = predict(model, self.task.val.images)
        loss = float(self.loss(outputs, self.task.val.for_training(self.kind)[1]))
        return {"val": score_outputs(outputs, self.kind, self.task.val), "val_loss": loss}

    def _test(self, model) -> dict:
        return {"score": dense_score(model, self.kind, self.task.test)}


def dense_comparison(kind: str, targets, *, shots, seeds=(0,), methods=DENSE_METHODS,
                     pretrained: models.StagedNet | None = None, steps: int = 100, batch_size: int = 32,
                     n_val: int = 64, n_test: int = 256, lr_grid=LR_GRID, cache=None, device=None,
                     keep_models=()) -> pd.DataFrame:
    """Every method on every dense target and training size (``shots``: labelled training scenes): one row per target,
    size, seed and method, with the rate, the validation and test score (mIoU or AP50) and how far each stage moved.

    The protocol of every comparison of the course (:mod:`ftcourse.protocol`): each method's rate is chosen on the
    validation score from ``lr_grid``, extended along :data:`LR_LADDER` while the best rate lies at an edge, and
    every seed is a whole replicate (its own training images, its own choice). Every method has the same budget of
    ``steps`` optimiser steps. With ``cache``, each run is saved as it ends and read back next time, and the weights
    of the first seed's chosen runs of the methods in ``keep_models`` are kept (for a lesson that shows those
    networks).
    """
    dense.check_kind(kind)
    pretrained = source_model(pretrained)
    rows = []
    for target in targets:
        for n in shots:
            def one_seed(seed):
                task = dense.dense_target(target, n, n_val=n_val, n_test=n_test, seed=seed, device=device)
                results = [dense_run(task, kind, method, lr="tuned", pretrained=pretrained, seed=seed, steps=steps,
                                     batch_size=batch_size, device=device, lr_grid=lr_grid, cache=cache,
                                     keep_model=protocol.keeps_model(method, seed, keep_models, seeds))
                           for method in methods]
                return [{"target": target, "shots": n, "seed": seed,
                         **{k: v for k, v in result.items() if k != "model"}} for result in results]

            rows += [row for seed_rows in protocol.replicates(one_seed, seeds) for row in seed_rows]
    return pd.DataFrame(rows)
