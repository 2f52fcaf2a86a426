"""The course's three ways to learn a target task, as one function each.

Given a target task with few labels, you can

- **scratch**: train a freshly initialised network on the target alone: min L_fin(theta) from random theta;
- **probe** (linear probe, "feature extraction"): keep the pretrained network frozen and train only a new head on
  its features;
- **finetune**: start from the pretrained weights theta_pre, give the network a new head, and train everything:
  min L_fin(theta) starting at theta = theta_pre.

:func:`run` builds, trains and tests one model with a budget of optimiser steps and returns its test accuracy, so
the three can be compared on the same budget; :func:`compare` runs several methods and seeds and returns the
table. The copied-stages experiment (lesson 02) and the remedies for negative transfer (lesson 04) are the same
sequence with a different preparation of the model.
"""

from __future__ import annotations

import time

import torch

from . import lab, models, transfer
from .data import Task
from .train import evaluate, fit

METHODS = ("scratch", "probe", "finetune")
# Learning rates per method (SGD, Nesterov momentum, cosine schedule). A pretrained network needs a smaller rate
# than a random one: large steps would wreck the features it came with (lesson 03 measures this).
DEFAULT_LR = {"scratch": 0.05, "probe": 0.05, "finetune": 0.01}


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
        batch_size: int = 32, lr: float | None = None, augment: bool = True, prepare=None, device=None,
        **fit_kwargs) -> dict:
    """Build a model for ``method``, train it for ``steps`` steps on ``task.train``, and test it on ``task.test``.

    The one sequence behind every comparison of the course, so that each method gets the same data, budget and
    evaluation. ``prepare(model)``, when given, changes the freshly built model before training (re-initialise
    stages, freeze some, run a probe first) and may return extra arguments for :func:`~ftcourse.train.fit` (such
    as an L2-SP ``penalty``). Returns the test accuracy and error, the training time (``seconds``, and
    ``seconds_per_step``), whether the run diverged, the number of trainable parameters, the history and the model.
    """
    device = torch.device(device or task.train.device)
    model = make_model(method, task.num_classes, pretrained=pretrained, seed=seed, device=device)
    extra = (prepare(model) if prepare is not None else None) or {}
    fit_kwargs.setdefault("progress", False)
    start = time.perf_counter()
    history = fit(model, task.train, steps=steps, lr=lr or DEFAULT_LR[method], batch_size=batch_size,
                  augment=augment, seed=seed, **{**fit_kwargs, **extra})
    seconds = time.perf_counter() - start
    accuracy = evaluate(model, task.test)["accuracy"]
    return {"method": method, "accuracy": accuracy, "error": 1 - accuracy, "seconds": seconds,
            "seconds_per_step": history.seconds_per_step, "diverged": history.diverged is not None,
            "trainable": models.count_parameters(model, trainable_only=True), "history": history, "model": model}


def compare(task_name: str, shots, *, methods=METHODS, seeds=(0,), steps: int = 100, batch_size: int = 32,
            test_per_class: int = 100, pretrained: models.StagedNet | None = None, device=None,
            relatedness: float = 1.0) -> list[dict]:
    """Each method x labels-per-class x seed on one lab target; a list of result rows (accuracy, seconds)."""
    pretrained = source_model(pretrained)
    rows = []
    for n in shots:
        for seed in seeds:
            task = lab.target(task_name, n, test_per_class=test_per_class, seed=seed, relatedness=relatedness,
                              device=device)
            for method in methods:
                result = run(task, method, pretrained=pretrained, seed=seed, steps=steps, batch_size=batch_size,
                             device=device)
                rows.append({"task": task_name, "shots": n, "seed": seed, "method": method,
                             "accuracy": result["accuracy"], "seconds": result["seconds"]})
    return rows


def copied_stages_run(task: Task, n_copied: int, *, fine_tune: bool, pretrained: models.StagedNet | None = None,
                      seed: int = 0, steps: int = 100, batch_size: int = 32, lr: float | None = None,
                      device=None) -> dict:
    """Yosinski et al. 2014's transfer experiment: copy the first ``n_copied`` stages, re-initialise the rest.

    The first ``n_copied`` stages come from the pretrained network and the others (and the head) start from random
    weights. Then either the copied stages stay **frozen** ("AnB" in the paper) or everything is **fine-tuned**
    ("AnB+"). ``n_copied = 0`` is training from scratch; copying every stage and freezing it is a linear probe.
    Returns the test accuracy, the number of trainable parameters and the training time per step.
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

    # One learning rate for every n and both modes, as in the paper: the only difference is what was copied.
    result = run(task, "finetune", pretrained=pretrained, seed=seed, steps=steps, batch_size=batch_size,
                            lr=lr or DEFAULT_LR["scratch"], prepare=copy_first_stages, device=device)
    return {key: result[key] for key in ("accuracy", "trainable", "seconds_per_step")}


REMEDIES = {
    "fine-tune": "plain fine-tuning from the lab checkpoint (lr 0.01): what the remedies are measured against",
    "lower rate": "fine-tuning with a 10x smaller rate (lr 0.001): stay closer to θ_pre",
    "L2-SP": "fine-tuning with a penalty α/2·‖w − w⁰‖² that pulls the weights towards θ_pre (Li et al. 2018)",
    "LP-FT": "a linear probe first, then fine-tuning from the probed head (Kumar et al. 2022)",
    "re-init top": "keep the lower stages of θ_pre, give layer3 and layer4 fresh random weights, fine-tune all",
    "another source": "fine-tune a checkpoint pretrained on a source that needed the target's factor",
}


def remedy_run(task: Task, remedy: str, *, pretrained: models.StagedNet | None = None,
               other_source: str = "lab-colours", seed: int = 0, steps: int = 100, batch_size: int = 32,
               device=None) -> dict:
    """Fine-tune ``task`` with one of the :data:`REMEDIES` for negative transfer; returns accuracy and error.

    Every remedy gets the same budget of fine-tuning steps as plain fine-tuning (LP-FT adds a probe of half as many
    steps before it). ``other_source`` names the checkpoint that ``"another source"`` starts from (see
    models.PRETRAINED).
    """
    if remedy not in REMEDIES:
        raise ValueError(f"Unknown remedy {remedy!r}; choose from {list(REMEDIES)}.")
    common = {"batch_size": batch_size, "augment": True, "seed": seed, "progress": False}
    lr = DEFAULT_LR["finetune"]

    def prepare(model):
        if remedy == "L2-SP":
            return {"penalty": transfer.L2SP(model, alpha=0.1, beta=0.01), "weight_decay": 0.0}
        if remedy == "re-init top":
            transfer.reinit(model, ["layer3", "layer4"], seed=seed)
        if remedy == "LP-FT":  # the probe phase; the fine-tuning that follows is the common run
            transfer.unfreeze(transfer.freeze(model), "head")
            fit(model, task.train, steps=max(1, steps // 2), lr=DEFAULT_LR["probe"], **common)
            transfer.unfreeze(model)
        return None

    if remedy == "another source":
        pretrained = models.pretrained(other_source)
    result = run(task, "finetune", pretrained=pretrained, seed=seed, steps=steps, batch_size=batch_size,
                            lr=lr / 10 if remedy == "lower rate" else lr, prepare=prepare, device=device)
    return {"remedy": remedy, "accuracy": result["accuracy"], "error": result["error"]}
