"""The course's three ways to learn a target task, as one function each, and the fair way to compare them.

Given a target task with few labels, you can

- **scratch**: train a freshly initialised network on the target alone: min L_fin(theta) from random theta;
- **probe** (linear probe, "feature extraction"): keep the pretrained network frozen and train only a new head on
  its features;
- **finetune**: start from the pretrained weights theta_pre, give the network a new head, and train everything:
  min L_fin(theta) starting at theta = theta_pre.

:func:`run` builds, trains and tests one model with a budget of optimiser steps and returns its validation and test
accuracy, so the three can be compared on the same budget; :func:`compare` runs several methods and seeds and
returns the table. The copied-stages experiment (lesson 02) and the remedies for negative transfer (lesson 04) are
the same sequence with a different preparation of the model.

**A fair comparison tunes every method.** Each method has its own best learning rate: a pretrained network usually
wants a smaller one than a random network, but how much smaller depends on how related the tasks are (H. Li,
Chaudhari et al., "Rethinking the hyperparameters for fine-tuning", ICLR 2020). Comparing fine-tuning at one
conventional rate with scratch at its best rate measures the rate, not the pretraining. So ``run(..., lr="tuned")``
(:func:`tune_lr`) trains one model per rate of a small grid, chooses the rate with the best *validation* accuracy
(:func:`choose_on_val`) and reports the *test* accuracy of that one run. The test set is never looked at to choose.
Tuning costs ``len(grid)`` runs instead of one; with a ``cache`` folder they are saved and never run twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import time

import pandas as pd
import torch

from . import dense, efficient, lab, models, transfer
from .data import Task
from .sweep import sweep
from .train import evaluate, fit, predict

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
# Seconds per optimiser step of the lab ResNet at batch 32, measured (benchmarks/README.md): a guide, not a promise.
SECONDS_PER_STEP = {"cpu": 0.033, "mps": 0.015, "cuda": 0.006}


def cost(runs: int, steps: int, device=None) -> str:
    """What a sweep costs, to say before it starts: ``"54 runs of 100 steps: about 3 min on this cpu"``.

    The estimate assumes the lab ResNet at batch 32 and :data:`SECONDS_PER_STEP` for the device's kind; cached runs
    cost nothing, so a second run of the same cell takes seconds.
    """
    kind = torch.device(device or "cpu").type
    minutes = runs * steps * SECONDS_PER_STEP.get(kind, SECONDS_PER_STEP["cpu"]) / 60
    return (f"{runs} runs of {steps} steps: about {max(minutes, 0.1):.1f} min on this {kind} the first time "
            f"(cached runs are read back instead)")


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
        lr_grid=LR_GRID, cache=None, variant: str | None = None, also_test: dict | None = None,
        **fit_kwargs) -> dict:
    """Build a model for ``method``, train it for ``steps`` steps on ``task.train``, then measure it on ``task.val``
    and ``task.test``.

    The one sequence behind every comparison of the course, so that each method gets the same data, budget and
    evaluation. ``lr`` is a rate, ``None`` for the method's conventional rate (:data:`DEFAULT_LR`), or ``"tuned"``:
    the best of ``lr_grid`` on validation accuracy (see :func:`tune_lr`, which ``cache`` and ``variant`` are for).
    ``prepare(model)``, when given, changes the freshly built model before training (re-initialise stages, freeze
    some, run a probe first) and may return extra arguments for :func:`~ftcourse.train.fit` (such as an L2-SP
    ``penalty``). ``also_test`` names more test sets (``{"shifted": ImageData}``), each reported as
    ``<name>_accuracy``. Returns the rate, the validation and test accuracy, the test error, the training time
    (``seconds``, and ``seconds_per_step``), whether the run diverged, the number of trainable parameters, the
    history and the model.
    """
    if isinstance(lr, str):
        if lr != "tuned":
            raise ValueError(f"lr must be a number, None (the method's conventional rate) or 'tuned', got {lr!r}.")
        return tune_lr(task, method, grid=lr_grid, cache=cache, variant=variant, pretrained=pretrained, seed=seed,
                       steps=steps, batch_size=batch_size, augment=augment, prepare=prepare, device=device,
                       also_test=also_test, **fit_kwargs)
    device = torch.device(device or task.train.device)
    model = make_model(method, task.num_classes, pretrained=pretrained, seed=seed, device=device)
    extra = (prepare(model) if prepare is not None else None) or {}
    fit_kwargs.setdefault("progress", False)
    start = time.perf_counter()
    lr = DEFAULT_LR[method] if lr is None else lr
    history = fit(model, task.train, steps=steps, lr=lr, batch_size=batch_size, augment=augment, seed=seed,
                  **{**fit_kwargs, **extra})
    seconds = time.perf_counter() - start
    val, test = evaluate(model, task.val), evaluate(model, task.test)
    more = {f"{name}_accuracy": evaluate(model, data)["accuracy"] for name, data in (also_test or {}).items()}
    return {"method": method, "lr": lr, "val_accuracy": val["accuracy"], "val_loss": val["loss"],
            "accuracy": test["accuracy"], "error": 1 - test["accuracy"], **more, "seconds": seconds,
            "seconds_per_step": history.seconds_per_step, "diverged": history.diverged is not None,
            "trainable": models.count_parameters(model, trainable_only=True), "history": history, "model": model}


def choose_on_val(runs: pd.DataFrame, knob: str = "lr", within=()) -> pd.DataFrame:
    """The chosen runs: in each group of ``within`` and each ``seed``, the run whose ``knob`` had the best validation.

    ``runs`` has one row per run, with the columns ``knob``, ``seed``, ``val_accuracy`` and (optionally) ``val_loss``.
    The best run has the highest validation accuracy; a tie goes to the lower validation loss, then to the value that
    comes first in ``runs``. A diverged run (NaN) is never chosen unless every run of its group diverged. Each seed
    chooses for itself, so each seed is a whole replicate of the protocol, choice included. Returns those rows, in
    their original order; their test ``accuracy`` is the number to report.

    >>> runs = pd.DataFrame({"lr": [0.01, 0.1, 0.01, 0.1], "seed": [0, 0, 1, 1],
    ...                      "val_accuracy": [0.8, 0.9, 0.7, 0.6], "accuracy": [0.81, 0.88, 0.72, 0.64]})
    >>> choose_on_val(runs)[["seed", "lr", "accuracy"]]
       seed    lr  accuracy
    1     0  0.10      0.88
    2     1  0.01      0.72
    """
    missing = {knob, "seed", "val_accuracy", *within} - set(runs.columns)
    if missing:
        raise ValueError(f"choose_on_val needs the columns {sorted(missing)}; the runs have {list(runs.columns)}.")
    ranked = runs.assign(_accuracy=runs["val_accuracy"].astype(float).fillna(-math.inf),
                         _loss=runs["val_loss"].astype(float).fillna(math.inf) if "val_loss" in runs else 0.0)
    ranked = ranked.sort_values(["_accuracy", "_loss"], ascending=[False, True], kind="stable")
    chosen = ranked.drop_duplicates(subset=[*within, "seed"], keep="first")
    return chosen.drop(columns=["_accuracy", "_loss"]).sort_index()


def tune_lr(task: Task, method: str, *, grid=LR_GRID, ladder=LR_LADDER, cache=None, variant: str | None = None,
            pretrained: models.StagedNet | None = None, seed: int = 0, **run_kwargs) -> dict:
    """``method`` at its best learning rate, chosen on ``task.val``; the test accuracy of that run.

    One :func:`run` per rate of ``grid``; then, while the best rate so far is the largest (or smallest) rate tried,
    the next larger (or smaller) rate of ``ladder`` is tried as well: a best rate at the edge of a grid says that the
    grid was too narrow, not that the edge is best. Pass ``ladder=()`` for the grid alone. That is the price of a
    fair comparison: ``tuning_runs`` says how many runs it took. A grid of one rate is that rate alone. The runs go through :func:`~ftcourse.sweep.sweep`, so with a ``cache`` folder each is saved the moment it
    ends and read back next time. Cached runs are named by everything that decides them: the task's data
    (:meth:`Task.fingerprint`), the pretrained weights (:func:`ftcourse.models.fingerprint`), the method, the seed,
    the other arguments, and ``variant``, a name for what ``prepare`` does (a function cannot be named by its
    code; without ``variant``, a ``prepare`` is not cached).

    Returns the chosen ``lr``, its ``val_accuracy`` and ``val_loss``, its test ``accuracy`` and ``error`` (and the
    accuracy on each of ``also_test``), whether it ``diverged``,
    ``tuning_runs`` and ``tuning`` (every rate's validation and test accuracy, a table to look at, not to choose
    from by test).
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}; use one of {list(METHODS)}.")
    grid = [float(lr) for lr in grid]
    if not grid or any(not lr > 0 for lr in grid):
        raise ValueError(f"grid must be a non-empty list of positive learning rates, got {grid!r}.")
    pretrained = source_model(pretrained)
    if run_kwargs.get("prepare") is not None and variant is None:
        cache = None  # an unnamed preparation: run, but do not cache under a name that may mean something else
    also_test = run_kwargs.get("also_test") or {}
    named = {k: v for k, v in run_kwargs.items() if k not in ("prepare", "device", "also_test")}
    key = json.dumps({"task": task.fingerprint(), "pretrained": models.fingerprint(pretrained), "method": method,
                      "variant": variant, "also_test": {name: data.fingerprint() for name, data in also_test.items()},
                      **named}, sort_keys=True, default=repr)
    metrics = ["val_accuracy", "val_loss", "accuracy", *(f"{name}_accuracy" for name in also_test), "seconds",
               "diverged"]

    def one_rate(lr, seed):
        result = run(task, method, pretrained=pretrained, seed=seed, lr=lr, **run_kwargs)
        return {name: result[name] for name in metrics}

    version = "tune-" + hashlib.sha256(key.encode()).hexdigest()[:16]
    runs = sweep(one_rate, {"lr": grid}, seeds=[seed], cache=cache, code_version=version).runs
    while (beyond := _beyond_the_edge(float(choose_on_val(runs).iloc[0]["lr"]), runs["lr"].tolist(), ladder)):
        more = sweep(one_rate, {"lr": [beyond]}, seeds=[seed], cache=cache, code_version=version).runs
        runs = pd.concat([runs, more], ignore_index=True)
    runs = runs.sort_values("lr", kind="stable").reset_index(drop=True)
    best = choose_on_val(runs).iloc[0]
    return {"method": method, "lr": float(best["lr"]), **{name: float(best[name]) for name in metrics[:-2]},
            "error": 1 - float(best["accuracy"]), "diverged": bool(best["diverged"]), "tuning_runs": len(runs),
            "ran_now": int((~runs["cached"]).sum()), "tuning": runs[["lr", *metrics]]}


def _beyond_the_edge(best: float, tried: list[float], ladder) -> float | None:
    """The ladder's next rate past ``best`` when ``best`` is the largest or smallest rate tried, else None."""
    if len(tried) < 2:  # a single rate has no edge to look past: it was asked for alone
        return None
    if best >= max(tried):
        return next((rate for rate in sorted(ladder) if rate > best), None)
    if best <= min(tried):
        return next((rate for rate in sorted(ladder, reverse=True) if rate < best), None)
    return None


beyond_the_edge = _beyond_the_edge  # public: ftcourse.text tunes its rates by the same rule


def compare(task_name: str, shots, *, methods=METHODS, seeds=(0,), steps: int = 100, batch_size: int = 32,
            test_per_class: int = 100, pretrained: models.StagedNet | None = None, device=None,
            relatedness: float = 1.0, lr: float | str | None = None, lr_grid=LR_GRID, cache=None) -> list[dict]:
    """Each method x labels-per-class x seed on one lab target; a list of result rows.

    Each row has the rate used (``lr="tuned"`` chooses it per method and seed on validation; see :func:`tune_lr`),
    the validation and test accuracy, and ``runs``: how many training runs the row cost.
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
                             "runs": result.get("tuning_runs", 1)})
    return rows


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
                 variant=f"copied_stages n={n_copied} fine_tune={fine_tune}", prepare=copy_first_stages, device=device)
    if "trainable" not in result:  # a tuned result: count what the chosen run trained
        model = make_model("finetune", task.num_classes, pretrained=pretrained, seed=seed)
        copy_first_stages(model)
        result = {**result, "trainable": models.count_parameters(model, trainable_only=True),
                  "seconds_per_step": float("nan")}
    return {key: result[key] for key in ("lr", "val_accuracy", "accuracy", "trainable", "seconds_per_step")}


# Each remedy: (the rate it fine-tunes with, what it is). "conventional" is DEFAULT_LR["finetune"], or the rate
# remedy_run is given; the others are part of the remedy itself.
REMEDIES = {
    "fine-tune": ("conventional", "plain fine-tuning from the lab checkpoint: what the remedies are measured against"),
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
               device=None) -> dict:
    """Fine-tune ``task`` with one of the :data:`REMEDIES` for negative transfer; returns rate, accuracy and error.

    Every remedy gets the same budget of ``steps`` optimiser steps (LP-FT spends half of them on its probe).
    Remedies that are not a rate fine-tune at ``lr``: ``None`` for the conventional rate (``DEFAULT_LR``), a
    number, or ``"tuned"`` (chosen on validation, so that a remedy is compared with tuned fine-tuning, tuned with
    tuned). ``other_source`` names the checkpoint that ``"another source"`` starts from (see models.PRETRAINED).
    A tuned remedy also returns ``tuning``: every rate it tried, with its validation and test accuracy.
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
            transfer.unfreeze(transfer.freeze(model), "head")
            fit(model, task.train, steps=probe_steps, lr=DEFAULT_LR["probe"], batch_size=batch_size, augment=True,
                seed=seed, progress=False)
            transfer.unfreeze(model)
        return None

    if remedy == "another source":
        pretrained = models.pretrained(other_source)
    result = run(task, "finetune", pretrained=pretrained, seed=seed, steps=steps - probe_steps,
                 batch_size=batch_size, lr=rate, lr_grid=lr_grid, cache=cache, prepare=prepare, device=device,
                 also_test=also_test,
                 variant=f"remedy {remedy}" + (f" from {other_source}" if remedy == "another source" else ""))
    keep = ["lr", "val_accuracy", "accuracy", "error", *(f"{name}_accuracy" for name in also_test or {}), "tuning"]
    return {"remedy": remedy, **{name: result[name] for name in keep if name in result}}


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
                  cache=None, device=None) -> dict:
    """Fine-tune ``pretrained`` on ``task`` with one method of :mod:`ftcourse.efficient` (``"bitfit"``, ``"lora"``,
    ``"surgical:layer1"``...), with the same budget and evaluation as every other run.

    Each method gets its own rate (``lr="tuned"``: chosen on validation from ``lr_grid``, along the ladder); a
    method that trains a few parameters usually wants a larger rate than full fine-tuning. Returns the rate, the
    validation and test accuracy, and the method's costs from :func:`ftcourse.efficient.footprint`.
    """
    pretrained = source_model(pretrained)
    result = run(task, "finetune", pretrained=pretrained, seed=seed, steps=steps, batch_size=batch_size, lr=lr,
                 lr_grid=lr_grid, cache=cache, device=device, prepare=efficient.prepare(method),
                 variant=f"efficient {method}")
    return {**efficient.footprint(pretrained, task.num_classes, method), "lr": result["lr"],
            "val_accuracy": result["val_accuracy"], "accuracy": result["accuracy"], "diverged": result["diverged"],
            "tuning_runs": result.get("tuning_runs", 1)}


def efficient_comparison(targets, methods, *, shots, seeds=(0,), pretrained: models.StagedNet | None = None,
                         steps: int = 100, batch_size: int = 32, test_per_class: int = 100, lr_grid=LR_GRID,
                         cache=None, device=None) -> pd.DataFrame:
    """Every method of ``methods`` (:mod:`ftcourse.efficient`) on every lab target: one row per target, labels per
    class, seed and method, with the rate, validation and test accuracy and the method's costs.

    Every method gets the same data, budget and grid. Its rate is chosen on the validation split of the first seed
    (``lr_grid``, extended along the ladder while the best rate is at an edge) and kept for the other seeds, which
    then cost one run each: the choice is still made on validation only, at about half the runs of choosing anew
    for every seed. A later seed whose run diverges at that rate chooses its own rate from the grid, as the first
    seed did: a rate that fails on a seed's training data would not be kept by anyone who saw it fail.
    ``tuning_runs`` says how many runs each row cost.
    """
    pretrained = source_model(pretrained)
    rows = []
    for target in targets:
        for n in shots:
            chosen: dict[str, float] = {}
            for seed in seeds:
                task = lab.target(target, n, test_per_class=test_per_class, seed=seed, device=device)
                same = dict(pretrained=pretrained, seed=seed, steps=steps, batch_size=batch_size, cache=cache,
                            device=device)
                for method in methods:
                    result = efficient_run(task, method, lr_grid=[chosen[method]] if method in chosen else lr_grid,
                                           **same)
                    if method in chosen and result["diverged"]:
                        result = efficient_run(task, method, lr_grid=lr_grid, **same)
                    chosen.setdefault(method, result["lr"])
                    rows.append({"target": target, "shots": n, "seed": seed, **result})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------------------------
# Beyond classification: the same protocol on the lab's dense tasks (lesson 08).

DENSE_METHODS = ("scratch", "frozen backbone", "finetune", "early stages frozen")
EARLY_STAGES = ("stem", "layer1")  # what "early stages frozen" keeps fixed
DENSE_METRIC = {"segmentation": "mIoU", "detection": "AP50"}


def dense_model(kind: str, method: str, num_classes: int, *, pretrained: models.StagedNet | None = None,
                seed: int = 0, device=None) -> torch.nn.Module:
    """A :class:`~ftcourse.dense.SegmentationNet` or :class:`~ftcourse.dense.DetectionNet` ready for ``method``:

    - ``"scratch"``: the backbone's architecture with random weights;
    - ``"frozen backbone"``: the pretrained stages, frozen; only the new head trains (the dense linear probe);
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
    if method == "frozen backbone":
        transfer.freeze(net.backbone)
    elif method == "early stages frozen":
        transfer.freeze(net.backbone, list(EARLY_STAGES))
    return net.to(device or "cpu")


def dense_score(model: torch.nn.Module, kind: str, data) -> float:
    """mIoU (segmentation, background included) or AP at IoU 0.5 (detection) of ``model`` on ``data``."""
    outputs = predict(model, data.images)
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


def dense_run(task: dense.DenseTask, kind: str, method: str, *, lr: float, pretrained: models.StagedNet | None = None,
              seed: int = 0, steps: int = 100, batch_size: int = 32, device=None, keep_model: bool = False) -> dict:
    """Build a dense network for ``method``, train it ``steps`` steps at rate ``lr`` on ``task.train`` (no
    augmentation: a flip would have to move the masks and boxes too), and score it on ``task.val`` and
    ``task.test`` (:func:`dense_score`). Returns the scores, the time, whether it diverged, how far each stage
    moved (``distance <stage>``) and, with ``keep_model``, the model."""
    net = dense_model(kind, method, task.train.num_classes, pretrained=pretrained, seed=seed,
                      device=device or task.train.images.device)
    start = {name: p.detach().clone() for name, p in net.named_parameters()}
    loss = dense.segmentation_loss if kind == "segmentation" else dense.detection_loss
    began = time.perf_counter()
    history = fit(net, task.train.for_training(kind), steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                  loss=loss, progress=False)
    seconds = time.perf_counter() - began
    diverged = history.diverged is not None
    result = {"method": method, "lr": lr, "val_score": math.nan if diverged else dense_score(net, kind, task.val),
              "score": math.nan if diverged else dense_score(net, kind, task.test), "seconds": seconds,
              "diverged": diverged,
              **{f"distance {stage}": d for stage, d in stage_distances(net, start).items()}}
    return {**result, "model": net} if keep_model else result


def dense_comparison(kind: str, targets, *, labels, seeds=(0,), methods=DENSE_METHODS,
                     pretrained: models.StagedNet | None = None, steps: int = 100, batch_size: int = 32,
                     n_val: int = 64, n_test: int = 256, lr_grid=LR_GRID, cache=None, device=None) -> pd.DataFrame:
    """Every method on every dense target and training size (``labels``: labelled images): one row per target,
    size, seed and method, with the rate, the validation and test score (mIoU or AP50) and how far each stage moved.

    The protocol of :func:`efficient_comparison`: each method's rate is chosen on the validation split of the first
    seed from ``lr_grid`` (the best validation score; a tie goes to the smaller rate), extended along
    :data:`LR_LADDER` while the best rate lies at an edge of what was tried, and kept for the other seeds;
    a later seed that diverges at that rate chooses anew. Every method has the same budget of ``steps`` optimiser
    steps. With ``cache``, each run is saved as it ends and read back next time (:func:`~ftcourse.sweep.sweep`).
    """
    dense.check_kind(kind)
    pretrained = source_model(pretrained)
    weights = models.fingerprint(pretrained)
    rows = []
    for target in targets:
        for n in labels:
            chosen: dict[str, float] = {}
            for seed in seeds:
                task = dense.dense_target(target, n, n_val=n_val, n_test=n_test, seed=seed, device=device)
                for method in methods:
                    key = json.dumps({"task": task.fingerprint(), "pretrained": weights, "kind": kind,
                                      "method": method, "steps": steps, "batch_size": batch_size}, sort_keys=True)

                    def one_rate(lr, seed):
                        result = dense_run(task, kind, method, lr=lr, pretrained=pretrained, seed=seed, steps=steps,
                                           batch_size=batch_size, device=device)
                        return {k: v for k, v in result.items() if k not in ("method", "lr")}

                    def tuned(grid):
                        version = "dense-" + hashlib.sha256(key.encode()).hexdigest()[:16]
                        runs = sweep(one_rate, {"lr": [float(r) for r in grid]}, seeds=[seed], cache=cache,
                                     code_version=version).runs
                        while True:
                            ranked = runs.assign(_score=runs["val_score"].astype(float).fillna(-math.inf))
                            best = ranked.sort_values(["_score", "lr"], ascending=[False, True], kind="stable")
                            beyond = _beyond_the_edge(float(best.iloc[0]["lr"]), runs["lr"].tolist(), LR_LADDER)
                            if beyond is None:
                                return best.iloc[0].drop(["_score", "cached"]).to_dict(), len(runs)
                            more = sweep(one_rate, {"lr": [beyond]}, seeds=[seed], cache=cache, code_version=version)
                            runs = pd.concat([runs, more.runs], ignore_index=True)

                    best, n_runs = tuned([chosen[method]] if method in chosen else lr_grid)
                    if method in chosen and best["diverged"]:
                        best, n_runs = tuned(lr_grid)
                    chosen.setdefault(method, float(best["lr"]))
                    rows.append({"target": target, "labels": n, "seed": seed, "method": method, **best,
                                 "tuning_runs": n_runs})
    return pd.DataFrame(rows)
