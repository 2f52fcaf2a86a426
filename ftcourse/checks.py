"""Checks for the exercises: each says what is wrong, gives a hint, and says clearly when you have passed.

In an exercise notebook you write a function, then call its check::

    check_freeze_first(freeze_first)

A check calls your function on inputs it chooses and compares the result with what it should be. It prints
``PASSED`` with what was checked, or raises :class:`ExerciseFailed` with what went wrong and a hint. Until you write
the function, its stub raises ``NotImplementedError``; the check says the exercise is not done yet
(:class:`ExerciseNotDone`, a ``NotImplementedError``).

Every exercise is an :class:`Exercise` in three parts, so that grading can split them between two processes:

- ``ask(rng)`` chooses the inputs (plain data: numbers, lists, dicts, tensors) from a random generator;
- ``answer(fn, inputs)`` calls the learner's function and turns what it returns into plain data;
- ``judge(answer, inputs)`` compares that answer with what it should be, and says what passed or raises.

An exercise whose answers come from a small set (a rate of seven, a table of three verdicts) asks ``rounds``
independent questions, all of which must pass, so that a guess passes with probability below 1%
(``tests/test_checks.py`` measures each exercise's).

In a notebook all three run here, with the inputs of a fixed generator. ``ftcourse grade`` (:mod:`ftcourse.grading.grade`)
runs only ``answer`` in the student's sandboxed process, on inputs drawn from a secret of its own, and ``judge`` in
its own process: nothing the student's code does to this module changes a grade.
"""

from __future__ import annotations

import copy
import functools
import math
import random
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from . import capstone, dense, models


class ExerciseFailed(AssertionError):
    """Your answer is not right yet; the message says why and how to fix it. ``hint`` is the how, alone: what the
    grader shows, because the why may hold the expected answer to its own questions."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint

    def _render_traceback_(self):  # IPython shows these lines instead of a traceback through the check's code
        return [f"\x1b[31m{line}\x1b[0m" if i == 0 else line for i, line in enumerate(str(self).splitlines())]


class ExerciseNotDone(NotImplementedError):
    """The function is still the stub: write it, then run its check again."""

    def _render_traceback_(self):
        return str(self).splitlines()


@dataclass(frozen=True)
class Exercise:
    """One exercise: the learner writes ``function``; ``ask``, ``answer`` and ``judge`` check it (see the module).
    ``rounds``: how many independent questions it asks; the answer passes when it passes all of them."""
    id: str
    function: str
    title: str
    ask: Callable
    answer: Callable
    judge: Callable
    rounds: int = 1


def questions(exercise: Exercise, rng: random.Random) -> list:
    """The exercise's ``rounds`` independent questions (its inputs), drawn from ``rng`` one after the other."""
    return [exercise.ask(rng) for _ in range(exercise.rounds)]


GRADED: dict[str, Exercise] = {}  # by id; sorted into the order of the course once all are registered


def _exercise(id: str, function: str, title: str, ask: Callable, answer: Callable, rounds: int = 1):
    """Register an exercise; used as a decorator on its judge."""
    def register(judge):
        GRADED[id] = Exercise(id, function, title, ask, answer, judge, rounds)
        return judge
    return register


def _fail(exercise: str, problem: str, hint: str):
    raise ExerciseFailed(f"Exercise {exercise} is not right yet: {problem}\nHint: {hint}", hint=hint)


def plain(value, depth: int = 0):
    """``value`` as plain data -- bools, numbers, strings, None, tensors, and lists, tuples and dicts of them -- so
    that it can cross from a student's process to the grader as data, never as code. Numbers of numpy or torch
    become Python numbers; anything else becomes ``{"unreadable": its type's name}``."""
    if depth > 20:
        return {"unreadable": "nested too deep"}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 and value.dim() == 0 else value.detach().cpu().clone()
    if isinstance(value, dict):
        return {plain(k, depth + 1): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v, depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    if hasattr(value, "item") and getattr(value, "size", 0) == 1:  # numpy scalars
        return value.item()
    return {"unreadable": type(value).__name__}


def _run(exercise: Exercise, fn, inputs):
    """The answer of the learner's function on ``inputs``: a stub's NotImplementedError becomes ExerciseNotDone, any
    other error a failed check that names it."""
    try:
        return plain(exercise.answer(fn, copy.deepcopy(inputs)))
    except NotImplementedError as error:
        raise ExerciseNotDone(f"Exercise {exercise.id} is not done yet: {error}\n"
                              f"Write {exercise.function}() in place of the stub, run its cell, then this one.") from None
    except ExerciseFailed:
        raise
    except Exception as error:  # the learner's code crashed: a failed check that says how
        _fail(exercise.id, f"your function raised {type(error).__name__}: {error}",
              "run it on its own in a new cell and read the traceback.")


def check(exercise_id: str, fn) -> None:
    """Check ``fn`` as the answer to ``exercise_id`` on this notebook's inputs: print PASSED, or raise.

    It returns nothing, so that a notebook cell ending in a check shows the PASSED line and no stray ``True``.
    """
    exercise = GRADED[exercise_id]
    for inputs in questions(exercise, random.Random(f"notebook/{exercise_id}")):
        what = exercise.judge(_run(exercise, fn, inputs), inputs)
    rounds = f" ({exercise.rounds} questions)" if exercise.rounds > 1 else ""
    print(f"PASSED exercise {exercise_id}{rounds}: {what}")


# ------------------------------------------------------------------------------------------------------------------
# Helpers the exercises share.

def _tiny_model(num_classes: int = 8, seed: int = 0, blocks=(1, 1, 1)) -> models.StagedNet:
    torch.manual_seed(seed)
    return models.resnet(num_classes, width=4, blocks=tuple(blocks))


def _ask_blocks(rng: random.Random) -> list[int]:
    """A small architecture: 2 to 4 stages of 1 or 2 blocks (28 of them), so that which parameters a stage holds
    differs from question to question and no answer fits every question."""
    return [rng.randint(1, 2) for _ in range(rng.randint(2, 4))]


def _describe(model) -> dict:
    """What the grader needs to know of a returned model: its type, weights, and which parameters train."""
    if not isinstance(model, models.StagedNet):
        return {"type": type(model).__name__}
    return {"type": "StagedNet", "num_classes": model.num_classes, "config": dict(model.config or {}),
            "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "trainable": {n: p.requires_grad for n, p in model.named_parameters()}}


def _stage_parameters(model: models.StagedNet) -> dict[str, list[str]]:
    """The names (as in ``named_parameters``) of each stage's parameters."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {stage: [name_of[id(p)] for p in model.stage(stage).parameters()] for stage in model.stage_names}


def _same(a: torch.Tensor, b) -> bool:
    """Whether ``b`` (from an answer) equals the tensor ``a``; a 0-dim tensor arrives as a number (see plain)."""
    if isinstance(b, (int, float)) and not isinstance(b, bool) and a.dim() == 0:
        b = torch.tensor(b, dtype=a.dtype)
    return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def _number(exercise: str, answer, what: str) -> float:
    if isinstance(answer, bool) or not isinstance(answer, (int, float)) or math.isnan(answer):
        _fail(exercise, f"expected a number, got {answer!r:.80}.", what)
    return float(answer)


def _compare_dict(exercise: str, answer, expected: dict, *, shape_hint: str, value_hint: str, tol: float) -> None:
    """Fail unless ``answer`` is a dict with ``expected``'s keys and values (within ``tol``)."""
    if not isinstance(answer, dict) or set(answer) != set(expected):
        shown = sorted(answer, key=str) if isinstance(answer, dict) else answer
        _fail(exercise, f"expected a dict with keys {sorted(expected, key=str)}, got {shown!r:.200}.", shape_hint)
    wrong = {k: answer[k] for k in expected if not isinstance(answer[k], (int, float)) or isinstance(answer[k], bool)
             or not abs(answer[k] - expected[k]) <= tol}
    if wrong:
        shown = {k: round(v, 4) for k, v in expected.items()}
        _fail(exercise, f"wrong values {wrong!r:.200}; they should be {shown}.", value_hint)


def _model_input(rng: random.Random) -> dict:
    return {"seed": rng.randrange(1_000_000), "num_classes": rng.randint(3, 9)}


# ------------------------------------------------------------------------------------------------------------------
# Lesson 01

def _answer_from_pretrained(fn, inputs, *extra):
    """Call ``fn(pretrained, num_classes, *extra)`` on a tiny pretrained model; report the model it returned and the
    pretrained model as it is afterwards (a learner who changed it in place shows here)."""
    pretrained = _tiny_model(8, inputs["seed"])
    model = fn(pretrained, inputs["num_classes"], *extra)
    return {"model": _describe(model), "same_object": model is pretrained,
            "same_head": getattr(model, "head", None) is pretrained.head,
            "pretrained_after": {k: v.clone() for k, v in pretrained.state_dict().items()}}


@_exercise("01.1", "finetune_start", "a copy of the pretrained model with a new head", _model_input,
           _answer_from_pretrained)
def judge_finetune_start(answer, inputs) -> str:
    before = _tiny_model(8, inputs["seed"]).state_dict()
    n, model = inputs["num_classes"], answer["model"]
    if answer["same_object"] or answer["same_head"]:
        _fail("01.1", "you changed the pretrained model itself instead of a copy.",
              "start from models.copy_model(pretrained), then replace the copy's head.")
    if any(not _same(v, answer["pretrained_after"].get(k)) for k, v in before.items()):
        _fail("01.1", "the pretrained model's weights changed.", "work on models.copy_model(pretrained).")
    if model["type"] != "StagedNet":
        _fail("01.1", f"expected a StagedNet, got {model['type']}.", "return the copy with its new head.")
    if model["num_classes"] != n:
        _fail("01.1", f"the head has {model['num_classes']} outputs instead of {n}.",
              "use models.replace_head(copy, num_classes).")
    body = [k for k in before if not k.startswith("head.")]
    if any(not _same(before[k], model["state"].get(k)) for k in body):
        _fail("01.1", "the feature extractor's weights differ from the pretrained ones.",
              "fine-tuning starts from theta_pre: copy the model, do not build a new one.")
    frozen = [name for name, trains in model["trainable"].items() if not trains]
    if frozen:
        _fail("01.1", f"{len(frozen)} parameters are frozen, e.g. {frozen[0]}.",
              "full fine-tuning trains every parameter; leave requires_grad=True.")
    return f"a copy of theta_pre with a new {n}-class head, all parameters trainable."


def _ask_paired(rng):
    n = rng.randint(3, 6)
    b = [round(rng.uniform(0.4, 0.8), 3) for _ in range(n)]
    shift = rng.uniform(-0.05, 0.2)
    a = [round(min(1.0, x + shift + rng.gauss(0, 0.04)), 3) for x in b]
    return {"a": a, "b": b, "margin": rng.choice([0.0, 0.02, 0.05, 0.1])}


def _interval_mistakes(a, b) -> dict:
    """The 90% intervals that common slips give for ``a`` minus ``b``, by the slip's hint."""
    from scipy import stats as scipy_stats

    n = len(a)
    d = [x - y for x, y in zip(a, b)]
    mean = sum(d) / n

    def std(values, ddof=1):
        centre = sum(values) / len(values)
        return math.sqrt(sum((v - centre) ** 2 for v in values) / (len(values) - ddof))

    t90, t95 = scipy_stats.t.ppf(0.95, n - 1), scipy_stats.t.ppf(0.975, n - 1)
    unpaired = t90 * math.sqrt(std(a) ** 2 / n + std(b) ** 2 / n)
    return {
        "pair the seeds: take the differences a[s] - b[s] seed by seed, then their mean and spread; comparing the two "
        "lists' own spreads ignores what each seed's training images did to both methods": unpaired,
        "use Student's t with n - 1 degrees of freedom, scipy.stats.t.ppf(0.95, n - 1), not the normal's 1.645: "
        "with 3 seeds it is 2.92": 1.6448536269514722 * std(d) / math.sqrt(n),
        "the spread of the differences is the sample standard deviation (divide by n - 1, ddof=1)":
            t90 * std(d, ddof=0) / math.sqrt(n),
        "a 90% interval: t.ppf(0.95, n - 1) (5% in each tail), not t.ppf(0.975, n - 1)": t95 * std(d) / math.sqrt(n),
    }, mean


@_exercise("01.2", "paired_verdict", "the paired 90% interval of A minus B, and whether A beats B by a margin",
           _ask_paired, lambda fn, inputs: fn(inputs["a"], inputs["b"], inputs["margin"]))
def judge_paired(answer, inputs) -> str:
    from .stats import paired_difference

    a, b, margin = inputs["a"], inputs["b"], inputs["margin"]
    expected = paired_difference(a, b)
    keys = {"mean", "low", "high", "beats"}
    if not isinstance(answer, dict) or set(answer) != keys:
        _fail("01.2", f"expected a dict with keys {sorted(keys)}, got {answer!r:.200}.",
              'return {"mean": ..., "low": ..., "high": ..., "beats": ...}.')
    numbers = [answer[k] for k in ("mean", "low", "high")]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        _fail("01.2", "mean, low and high must be numbers.", "return floats (float(x) of a numpy value).")
    if abs(answer["mean"] - expected["mean"]) > 1e-9:
        _fail("01.2", "the mean difference is not right.",
              "the mean of the per-seed differences a[s] - b[s] (A minus B, not B minus A).")
    half = (answer["high"] - answer["low"]) / 2
    right_half = (expected["high"] - expected["low"]) / 2
    if abs(half - right_half) > 1e-6 or abs((answer["high"] + answer["low"]) / 2 - expected["mean"]) > 1e-6:
        mistakes, _ = _interval_mistakes(a, b)
        hint = next((h for h, wrong in mistakes.items() if abs(half - wrong) <= 1e-6),
                    "mean ± t.ppf(0.95, n - 1) · s / sqrt(n), with s the sample standard deviation of the per-seed "
                    "differences")
        _fail("01.2", "the interval is not right.", hint)
    if answer["beats"] is not bool(expected["low"] > margin):
        _fail("01.2", f"the verdict is not right for a margin of {margin}.",
              "A beats B by more than the margin when the whole interval lies above it: low > margin (the mean "
              "alone is not enough).")
    return (f"mean {expected['mean']:+.3f}, 90% interval {expected['low']:+.3f} to {expected['high']:+.3f}: "
            f"{'beats' if expected['low'] > margin else 'does not show that A beats'} B by more than {margin}.")


# ------------------------------------------------------------------------------------------------------------------
# Lesson 02

def _answer_freeze_first(fn, inputs):
    out = []
    for k in range(len(_tiny_model(blocks=inputs["blocks"]).stage_names) + 1):
        model = fn(_tiny_model(8, inputs["seed"], inputs["blocks"]), k)
        out.append(None if model is None else _describe(model).get("trainable"))
    return out


@_exercise("02.1", "freeze_first", "freeze the first k stages",
           lambda rng: {"seed": rng.randrange(1_000_000), "blocks": _ask_blocks(rng)}, _answer_freeze_first, rounds=3)
def judge_freeze_first(answer, inputs) -> str:
    reference = _tiny_model(8, inputs["seed"], inputs["blocks"])
    stages = _stage_parameters(reference)
    if not isinstance(answer, list) or len(answer) != len(reference.stage_names) + 1:
        _fail("02.1", "the answers do not cover every k.", "return the model for every k.")
    for k, trainable in enumerate(answer):
        if trainable is None:
            _fail("02.1", "your function returned None.", "return the model at the end.")
        if not isinstance(trainable, dict):
            _fail("02.1", "your function did not return a course model (StagedNet).", "return the model you froze.")
        if set(trainable) != {name for name, _ in reference.named_parameters()}:
            _fail("02.1", "the model returned is not the one it was given: its parameters differ.",
                  "freeze the model you were given, in place, and return it.")
        got = [s for s, names in stages.items() if any(trainable.get(n, False) for n in names)]
        expected = list(reference.stage_names[k:])
        if got != expected:
            _fail("02.1", f"with k={k} the trainable stages are {got}, expected {expected}.",
                  "loop over model.stage_names[:k] and call model.stage(name).requires_grad_(False).")
    return "for every k, exactly the first k stages are frozen."


# Exercise 02.2 freezes a plain torchvision ResNet, as a learner meets one outside the course: its children are
# conv1, bn1, relu, maxpool, layer1..layer4, avgpool and fc, and nothing keeps a frozen BatchNorm layer still.
TORCHVISION_CHILDREN = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")  # the ones with weights, before fc


def torchvision_resnet(layers, num_classes: int, seed: int = 0, device=None) -> torch.nn.Module:
    """A torchvision ResNet of BasicBlocks (``layers=[2, 2, 2, 2]`` is ResNet-18), random weights (no download)."""
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        return ResNet(BasicBlock, list(layers), num_classes=num_classes)


def _ask_train_mode(rng):
    return {"seed": rng.randrange(1_000_000), "layers": [rng.randint(1, 2) for _ in range(4)],
            "num_classes": rng.randint(3, 9), "frozen": list(TORCHVISION_CHILDREN[:rng.randint(2, 6)])}


def _batchnorms(model) -> dict:
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


def _answer_train_mode(fn, inputs):
    """Hand over a ResNet in evaluation mode (as after an evaluation), call ``fn``, then run one training forward
    on images whose statistics are not the network's: report which parameters train, which BatchNorm layers are in
    training mode, and whose running statistics moved."""
    model = torchvision_resnet(inputs["layers"], inputs["num_classes"], inputs["seed"]).eval()
    returned = fn(model, list(inputs["frozen"]))
    batchnorms = _batchnorms(model)
    modes = {n: m.training for n, m in batchnorms.items()}
    before = {n: m.running_mean.clone() for n, m in batchnorms.items()}
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(inputs["seed"])) * 2 + 1
    with torch.no_grad():
        model(images)
    return {"returned": "the model" if returned is model else type(returned).__name__, "training": model.training,
            "trainable": {n: p.requires_grad for n, p in model.named_parameters()}, "batchnorm_training": modes,
            "statistics_moved": {n: not torch.equal(before[n], m.running_mean) for n, m in batchnorms.items()}}


@functools.lru_cache(maxsize=128)
def _resnet_names(layers: tuple, num_classes: int) -> tuple[tuple, tuple]:
    """The parameter names and BatchNorm names of :func:`torchvision_resnet` with these ``layers``: built on the
    meta device (names only, no weights), once per architecture."""
    with torch.device("meta"):
        reference = torchvision_resnet(layers, num_classes)
    return tuple(n for n, _ in reference.named_parameters()), tuple(_batchnorms(reference))


@_exercise("02.2", "train_mode", "training mode for a torchvision ResNet with frozen children, BatchNorm included",
           _ask_train_mode, _answer_train_mode, rounds=2)
def judge_train_mode(answer, inputs) -> str:
    frozen = set(inputs["frozen"])
    names, batchnorms = _resnet_names(tuple(inputs["layers"]), inputs["num_classes"])

    def is_frozen(name):
        return name.split(".")[0] in frozen
    if not isinstance(answer, dict) or answer.get("returned") != "the model":
        got = answer.get("returned") if isinstance(answer, dict) else answer
        _fail("02.2", f"your function returned {str(got)[:40]}, not the model it was given.",
              "change the model in place and return it (return model).")
    if set(answer["trainable"]) != set(names):
        _fail("02.2", "the model's parameters are not the ones it was given.", "freeze the model you were given.")
    still = sorted({n.split(".")[0] for n in names if is_frozen(n) and answer["trainable"][n]})
    if still:
        _fail("02.2", f"parameters of {still} still train.",
              "call getattr(model, name).requires_grad_(False) for each name in frozen: bn1 is a child of its own, "
              "beside conv1.")
    over = sorted({n.split(".")[0] for n in names if not is_frozen(n) and not answer["trainable"][n]})
    if over:
        _fail("02.2", f"you froze {over}, which are not in frozen.",
              "freeze only the children named in frozen; the later layers and fc go on training.")
    if not answer["training"]:
        _fail("02.2", "the model is in evaluation mode: the layers that train would not learn the target's "
                      "BatchNorm statistics.", "start with model.train(), then switch the frozen BatchNorm layers "
                                               "back to evaluation mode.")
    modes, moved = answer["batchnorm_training"], answer["statistics_moved"]
    if set(modes) != set(batchnorms) or set(moved) != set(batchnorms):
        _fail("02.2", "the model's BatchNorm layers are not the ones it was given.", "freeze the model you were given.")
    drifting = [n for n in batchnorms if is_frozen(n) and moved[n]]
    if drifting:
        _fail("02.2", f"the running statistics of frozen BatchNorm layers moved on one training batch (e.g. "
                      f"{drifting[0]}).",
              "requires_grad_(False) freezes parameters, not BatchNorm's running_mean and running_var (buffers, "
              "updated by every forward in training mode). After model.train() -- which puts every module back "
              "in training mode -- call .eval() on each BatchNorm layer inside the frozen children.")
    batch_statistics = [n for n in batchnorms if is_frozen(n) and modes[n]]
    if batch_statistics:
        _fail("02.2", f"frozen BatchNorm layers (e.g. {batch_statistics[0]}) are still in training mode, though "
                      f"their statistics did not move.",
              "a frozen layer must compute what it computed on the source: in training mode BatchNorm normalises "
              "with each batch's own statistics (momentum 0 only stops the running ones moving). Put it in "
              "evaluation mode with .eval().")
    idle = [n for n in batchnorms if not is_frozen(n) and (not modes[n] or not moved[n])]
    if idle:
        _fail("02.2", f"BatchNorm layers that train are in evaluation mode (e.g. {idle[0]}).",
              "only the frozen children's BatchNorm layers go to evaluation mode; the others adapt to the target.")
    return (f"{', '.join(inputs['frozen'])} frozen, their BatchNorm statistics fixed; the rest trains in "
            f"training mode.")


# ------------------------------------------------------------------------------------------------------------------
# Lesson 03

def _ask_rates(rng):
    names = ("stem", *[f"layer{i}" for i in range(1, rng.randint(2, 4) + 1)], "head")
    return {"names": names, "lr": rng.choice([0.1, 0.03, 0.01]), "decay": rng.choice([2.0, 2.6, 3.0])}


@_exercise("03.1", "discriminative_rates", "ULMFiT's layer-wise learning rates", _ask_rates,
           lambda fn, inputs: fn(inputs["names"], inputs["lr"], inputs["decay"]), rounds=3)
def judge_rates(answer, inputs) -> str:
    names, lr, decay = inputs["names"], inputs["lr"], inputs["decay"]
    expected = {name: lr / decay**i for i, name in enumerate(reversed(names))}
    if isinstance(answer, dict) and set(answer) == set(expected) and isinstance(answer["stem"], float) \
            and abs(answer["stem"] - lr) < 1e-12:
        _fail("03.1", "the stem got the largest rate: the order is upside down.",
              "the head (the last stage) gets lr; go down the list dividing by decay each time.")
    _compare_dict("03.1", answer, expected, shape_hint="return a dict {stage: rate} with a rate for every stage.",
                  value_hint=f"stage i from the top gets lr / decay**i (the head is i = 0), here lr={lr}, "
                             f"decay={decay}.", tol=1e-12)
    return "head at lr, every stage below divided by decay once more."


def _ask_best_rate(rng):
    """Four rates with roles: the right one (best mean validation accuracy), one with the best test accuracy, one
    with the single best validation run but a worse mean, one that diverged. Another method's rows distract."""
    right, by_test, single_best, diverged = rng.sample([0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0], 4)
    method, other = rng.sample(["finetune", "scratch"], 2)

    def jitter():
        return rng.uniform(-0.004, 0.004)
    runs = [(right, 0.90, 0.80, False), (right, 0.94, 0.82, False), (by_test, 0.85, 0.95, False),
            (by_test, 0.87, 0.96, False), (single_best, 0.97, 0.70, False), (single_best, 0.80, 0.70, False),
            (diverged, 0.99, 0.99, True), (diverged, 0.20, 0.20, True)]
    rows = [{"method": method, "lr": lr, "seed": i % 2, "val_accuracy": round(v + jitter(), 4),
             "accuracy": round(a + jitter(), 4), "diverged": d} for i, (lr, v, a, d) in enumerate(runs)]
    rows += [{"method": other, "lr": lr, "seed": 0, "val_accuracy": v, "accuracy": v, "diverged": False}
             for lr, v in ((by_test, 0.98), (single_best, 0.5))]
    rng.shuffle(rows)
    return {"rows": rows, "method": method, "roles": {"right": right, "by_test": by_test,
                                                      "single_best": single_best, "diverged": diverged}}


@_exercise("03.2", "best_rate", "the learning rate with the best mean validation accuracy, diverged runs excluded",
           _ask_best_rate, lambda fn, inputs: fn(inputs["rows"], inputs["method"]), rounds=4)
def judge_best_rate(answer, inputs) -> str:
    roles = inputs["roles"]
    if answer == roles["diverged"]:
        _fail("03.2", "you picked a rate whose runs diverged.", "skip rows with row['diverged'] True.")
    if answer == roles["by_test"]:
        _fail("03.2", f"you chose by test accuracy: {answer} has the best *test* accuracy, not the best validation "
                      f"accuracy.", "average row['val_accuracy'] over seeds; the test split only reports the choice.")
    if answer == roles["single_best"]:
        _fail("03.2", f"{answer} has the single best validation run, but not the best mean over seeds.",
              "average the validation accuracy over seeds for each rate, then take the best average.")
    if answer != roles["right"]:
        _fail("03.2", f"got {answer!r:.40}, expected {roles['right']} for these rows.",
              "only rows of the given method count.")
    return "the best mean validation accuracy over seeds, diverged runs excluded."


def _ask_range_test(rng):
    """A range test's record: 100 steps, the rate 1e-5 to 10 exponentially; the loss flat, then falling around a
    rate of its own, then blowing up (and, half the time, ending in a NaN); each step's mini-batch noise on top."""
    steps, start, end = 100, 1e-5, 10.0
    lrs = [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]
    base, drop = rng.uniform(1.5, 2.5), rng.uniform(0.6, 0.9)
    fall = rng.uniform(-3.0, -1.2)  # log10 of the rate where it falls fastest, and of the one where it blows up
    blow = min(fall + rng.uniform(1.2, 2.0), 0.5)
    width = rng.uniform(0.25, 0.5)
    losses = []
    for lr in lrs:
        x = math.log10(lr)
        loss = base * (1 - drop / (1 + math.exp(-(x - fall) / width))) + math.exp(8 * (x - blow))
        losses.append(loss * (1 + rng.gauss(0, 0.04)))
    if rng.random() < 0.5:
        stop = next(i for i, loss in enumerate(losses) if loss > 8 * base)
        losses[stop] = math.nan
    return {"lrs": lrs, "losses": losses}


def _range_test_readings(lrs, losses) -> dict[str, float]:
    """What the usual wrong readings of the curve give, by the hint that names each."""
    from .rangetest import read_curve, read_losses

    suggestion, at_min = read_losses(lrs, losses)
    finite = [(lr, loss) for lr, loss in zip(lrs, losses) if math.isfinite(loss)]
    average, uncorrected = 0.0, []
    for loss in losses:
        average = 0.98 * average + 0.02 * loss
        if not math.isfinite(average):
            break
        uncorrected.append(average)
    with warnings.catch_warnings():  # a wrong reading's curve may not fall at all
        warnings.simplefilter("ignore")
        raw = read_curve([lr for lr, _ in finite], [loss for _, loss in finite], skip=len(lrs) // 10)[0]
        no_correction = read_curve(lrs[:len(uncorrected)], uncorrected, skip=len(lrs) // 10)[0]
    return {
        "this is the rate at the lowest smoothed loss: there the loss is about to blow up. The suggestion is where "
        "it falls fastest, before that minimum": at_min,
        "this is the minimum / 10 rule of thumb; this exercise asks for the rate of steepest descent": at_min / 10,
        "smooth the losses first (bias-corrected moving average, 0.98): one mini-batch's loss is noise, and the "
        "steepest step of the raw curve is a noisy one": raw,
        "divide the moving average by 1 - 0.98**(i+1) (the bias correction): without it the curve starts near 0 "
        "and climbs for the first hundred steps": no_correction,
    }, suggestion


@_exercise("03.3", "suggest_rate", "the rate a range test suggests: steepest descent of the smoothed loss",
           _ask_range_test, lambda fn, inputs: fn(inputs["lrs"], inputs["losses"]), rounds=3)
def judge_suggest_rate(answer, inputs) -> str:
    lrs = inputs["lrs"]
    value = _number("03.3", answer, "return the suggested rate, one of lrs, as a float.")
    readings, suggestion = _range_test_readings(lrs, inputs["losses"])
    step = math.log(lrs[1] / lrs[0])  # a neighbouring step is fine: forward or central differences both pass

    def near(a, b):
        return a > 0 and b > 0 and abs(math.log(a / b)) <= 1.01 * step
    if not near(value, suggestion):
        hint = next((h for h, wrong in readings.items() if math.isfinite(wrong) and near(value, wrong)),
                    "smooth (bias-corrected moving average, 0.98); stop when the smoothed loss is not finite or above "
                    "4 x its lowest so far; slope at step i: (s[i+1] - s[i-1]) / log(lrs[i+1] / lrs[i-1]) for i "
                    "from 10 up to the step of the minimum; return the rate of the most negative slope.")
        _fail("03.3", f"you suggested {value:.3g}.", hint)
    return f"suggested {suggestion:.3g}: steepest descent of the smoothed loss, before its minimum."


# ------------------------------------------------------------------------------------------------------------------
# Lesson 04

def _ask_ntg(rng):
    rows = []
    for r in sorted(rng.sample([0.0, 0.25, 0.5, 1.0], 2)):
        for n in sorted(rng.sample([5, 10, 20, 80], 2)):
            for seed in range(rng.randint(1, 3)):
                rows.append({"relatedness": r, "shots": n, "seed": seed, "err_scratch": round(rng.random(), 2),
                             "err_finetune": round(rng.random(), 2)})
    rng.shuffle(rows)
    return {"rows": rows}


@_exercise("04.1", "ntg_by_setting", "the mean negative-transfer gap per (relatedness, labels per class)", _ask_ntg,
           lambda fn, inputs: fn(inputs["rows"]))
def judge_ntg(answer, inputs) -> str:
    groups = {}
    for r in inputs["rows"]:
        groups.setdefault((r["relatedness"], r["shots"]), []).append(r["err_finetune"] - r["err_scratch"])
    expected = {k: sum(v) / len(v) for k, v in groups.items()}
    if isinstance(answer, dict) and set(answer) == set(expected) and all(
            isinstance(answer[k], float) and abs(answer[k] + v) < 1e-9 for k, v in expected.items()) and any(
            abs(v) > 1e-9 for v in expected.values()):
        _fail("04.1", "the signs are the wrong way round.",
              "NTG = err(transfer) - err(scratch): positive when fine-tuning made more errors than scratch.")
    _compare_dict("04.1", answer, expected,
                  shape_hint="return a dict keyed by (relatedness, shots) tuples, one entry per setting.",
                  value_hint="average err_finetune - err_scratch over the seeds of each setting.", tol=1e-9)
    return "mean NTG per setting, positive where pretraining hurt."


def _ask_keep(rng):
    return {**_model_input(rng), "keep": rng.randint(1, len(_tiny_model().stage_names) - 2)}


@_exercise("04.2", "keep_lower_stages", "copy the first stages of a pretrained model, re-initialise the rest",
           _ask_keep, lambda fn, inputs: _answer_from_pretrained(fn, inputs, inputs["keep"]))
def judge_keep(answer, inputs) -> str:
    reference = _tiny_model(8, inputs["seed"])
    before, keep, n, model = reference.state_dict(), inputs["keep"], inputs["num_classes"], answer["model"]
    if any(not _same(v, answer["pretrained_after"].get(k)) for k, v in before.items()):
        _fail("04.2", "the pretrained model itself was changed.", "work on models.copy_model(pretrained).")
    if model["type"] != "StagedNet" or answer["same_object"]:
        _fail("04.2", f"expected a new StagedNet, got {model['type']}.", "return the copy you changed.")
    if model["num_classes"] != n:
        _fail("04.2", f"the head has {model['num_classes']} outputs, expected {n}.", f"models.replace_head(model, {n}).")
    stages = _stage_parameters(reference)
    features = reference.stage_names[:-1]
    same = {s: all(_same(before[p], model["state"].get(p)) for p in stages[s]) for s in features}
    expected = {s: i < keep for i, s in enumerate(features)}
    if same != expected:
        _fail("04.2", f"with keep={keep} the stages equal to the pretrained ones are "
                      f"{[s for s, v in same.items() if v]}, expected {[s for s, v in expected.items() if v]}.",
              "copy everything, then transfer.reinit(model, stages[keep:]) for the feature stages after the first "
              "keep (not the head: it is replaced anyway).")
    return (f"the first {keep} stages kept, the rest re-initialised, a new {n}-class head, the original "
            f"untouched.")


# ------------------------------------------------------------------------------------------------------------------
# Lesson 05

def _ask_leep(rng):
    generator = torch.Generator().manual_seed(rng.randrange(1_000_000))
    n, sources, targets = rng.randint(40, 90), rng.randint(3, 6), rng.randint(2, 4)
    return {"source_probs": torch.softmax(torch.randn(n, sources, generator=generator) * 2, dim=1),
            "labels": torch.arange(n) % targets}


@_exercise("05.1", "leep_score", "LEEP from source-class probabilities and target labels", _ask_leep,
           lambda fn, inputs: fn(inputs["source_probs"], inputs["labels"]))
def judge_leep(answer, inputs) -> str:
    from .measure import leep

    expected = leep(inputs["source_probs"], inputs["labels"])
    answer = _number("05.1", answer, "return a float (the mean log-likelihood).")
    if answer > 0:
        _fail("05.1", f"got {answer:.4f}: LEEP is a mean log-probability, never positive.",
              "take the log of Σ_z P(y|z) θ(x)_z for each example, then the mean.")
    if abs(answer - expected) > 1e-6:
        _fail("05.1", f"got {answer:.6f}, expected {expected:.6f}.",
              "P(y, z) = mean over examples of θ(x)_z [label is y]; P(y|z) = P(y, z) / P(z); "
              "score = mean_i log Σ_z P(y_i|z) θ(x_i)_z.")
    return f"LEEP = {expected:.4f} on {len(inputs['labels'])} examples, as ftcourse.measure.leep computes it."


def _ask_tau(rng):
    n = rng.randint(5, 7)
    x = [round(v, 3) for v in rng.sample([i / 100 for i in range(100)], n)]
    increasing = sorted(x)
    return {"cases": [(increasing, [10 * v + 1 for v in increasing]), (increasing, list(reversed(increasing))),
                      (x, [round(v, 3) for v in rng.sample([i / 100 for i in range(100)], n)])]}


def _kendall(x, y) -> float:
    pairs = [(i, j) for i in range(len(x)) for j in range(i + 1, len(x))]
    score = sum(1 if (x[i] - x[j]) * (y[i] - y[j]) > 0 else -1 for i, j in pairs)
    return score / len(pairs)


@_exercise("05.2", "kendall_tau", "rank agreement between a score and fine-tuned accuracy", _ask_tau,
           lambda fn, inputs: [fn(list(x), list(y)) for x, y in inputs["cases"]], rounds=3)
def judge_tau(answer, inputs) -> str:
    if not isinstance(answer, list) or len(answer) != len(inputs["cases"]):
        _fail("05.2", "expected one answer per pair of rankings.", "return a float.")
    for (x, y), got in zip(inputs["cases"], answer):
        got = _number("05.2", got, "return a float between -1 and 1.")
        expected = _kendall(x, y)
        if abs(got - expected) > 1e-9:
            _fail("05.2", f"kendall_tau({x}, {y}) gave {got}, expected {expected}.",
                  "for every pair i < j: concordant if x and y order the pair the same way, discordant if not; "
                  "divide the difference by the number of pairs.")
    return "Kendall's τ on three rankings: same order, reversed, and mixed."


# ------------------------------------------------------------------------------------------------------------------
# Lesson 07

def _ask_lora(rng):
    sizes = {"in": rng.randint(4, 12), "out": rng.randint(3, 9), "r": rng.choice([1, 2, 4]),
             "alpha": rng.choice([1.0, 2.0, 8.0])}
    g = torch.Generator().manual_seed(rng.randrange(1_000_000))
    return {**sizes, "weight": torch.randn(sizes["out"], sizes["in"], generator=g),
            "bias": torch.randn(sizes["out"], generator=g), "x": torch.randn(7, sizes["in"], generator=g),
            "A": torch.randn(sizes["r"], sizes["in"], generator=g), "B": torch.randn(sizes["out"], sizes["r"], generator=g)}


def _linear(inputs) -> torch.nn.Linear:
    base = torch.nn.Linear(inputs["in"], inputs["out"])
    with torch.no_grad():
        base.weight.copy_(inputs["weight"])
        base.bias.copy_(inputs["bias"])
    return base


def _answer_lora(LoRALinear, inputs):
    """Build the learner's layer on the given weights, read its output at the start and with the given A and B."""
    layer = LoRALinear(_linear(inputs), inputs["r"], inputs["alpha"])
    with torch.no_grad():
        at_start = layer(inputs["x"]).detach().clone()
        shapes = {name: list(getattr(layer, name).shape) for name in ("lora_A", "lora_B")}
        b_at_start = layer.lora_B.detach().clone()
        adapted = None  # with A and B of the wrong shapes there is nothing to compare: the judge says so first
        if layer.lora_A.shape == inputs["A"].shape and layer.lora_B.shape == inputs["B"].shape:
            layer.lora_A.copy_(inputs["A"])
            layer.lora_B.copy_(inputs["B"])
            adapted = layer(inputs["x"]).detach().clone()
    trainable = sorted(name for name, p in layer.named_parameters() if p.requires_grad)
    return {"at_start": at_start, "adapted": adapted, "shapes": shapes, "b_at_start": b_at_start,
            "trainable": trainable}


def peft_lora_output(inputs) -> torch.Tensor:
    """The reference for 07.1: ``peft``'s LoRA layer on the same frozen weights and the same A and B."""
    from peft import LoraConfig, get_peft_model

    holder = torch.nn.Sequential()
    holder.add_module("layer", _linear(inputs))
    model = get_peft_model(holder, LoraConfig(r=inputs["r"], lora_alpha=inputs["alpha"], target_modules=["layer"],
                                              lora_dropout=0.0))
    layer = model.base_model.model.layer
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(inputs["A"])
        layer.lora_B["default"].weight.copy_(inputs["B"])
        return model(inputs["x"])


@_exercise("07.1", "LoRALinear", "LoRA for one linear layer, by hand, against peft's", _ask_lora, _answer_lora)
def judge_lora(answer, inputs) -> str:
    r, n_in, n_out = inputs["r"], inputs["in"], inputs["out"]
    if answer["shapes"] != {"lora_A": [r, n_in], "lora_B": [n_out, r]}:
        _fail("07.1", f"lora_A and lora_B have shapes {answer['shapes']}; expected A {[r, n_in]} and B {[n_out, r]}.",
              "A maps the input down to r numbers, B maps them back up: A is r x in_features, B is out_features x r.")
    if not _same(torch.zeros(n_out, r), answer["b_at_start"]):
        _fail("07.1", "lora_B does not start at zero.", "initialise B with zeros and A at random, so that BA = 0.")
    with torch.no_grad():
        frozen = _linear(inputs)(inputs["x"])
    if not isinstance(answer["at_start"], torch.Tensor) or not torch.allclose(answer["at_start"], frozen, atol=1e-5):
        _fail("07.1", "at the start the layer's output differs from the frozen layer's.",
              "with B = 0 the correction is zero: return base(x) + scaling * (x @ A.T @ B.T).")
    if answer["trainable"] != ["lora_A", "lora_B"]:
        _fail("07.1", f"the trainable parameters are {answer['trainable']}; expected lora_A and lora_B only.",
              "freeze the base layer: base.requires_grad_(False).")
    expected = peft_lora_output(inputs)
    adapted = answer["adapted"]
    if not isinstance(adapted, torch.Tensor) or adapted.shape != expected.shape:
        _fail("07.1", "the layer's output has the wrong shape.", "the output has out_features columns, like base's.")
    if not torch.allclose(adapted, expected, atol=1e-5):
        ratio = ((adapted - frozen).norm() / (expected - frozen).norm()).item()
        _fail("07.1", f"with the same A and B your output differs from peft's (your correction is {ratio:.2f} times "
                      f"peft's).", "scale the correction B A x by alpha / r.")
    return f"starts equal to the frozen layer and matches peft's LoRA layer (r = {r}, alpha = {inputs['alpha']:g})."


def _ask_cheapest(rng):
    methods = ["finetune", "probe", "bitfit", "lora", "surgical:stem", "surgical:layer4"]
    sizes = dict(zip(methods, [300_000, 1_000, 2_000, 8_000, 1_500, 230_000]))
    for method in methods[1:]:  # other sizes than the notebook's, the order kept (fine-tuning is the largest)
        sizes[method] = int(sizes[method] * rng.uniform(0.8, 1.2))
    rows = []
    for target in rng.sample(["related", "shifted", "conflict", "unrelated"], 3):
        full = rng.uniform(0.8, 0.97)
        for method in methods:
            mean = full if method == "finetune" else full - rng.choice([-0.02, -0.005, 0.005, 0.008, 0.015, 0.1, 0.4])
            for seed in range(3):
                rows.append({"target": target, "method": method, "seed": seed, "trainable": sizes[method],
                             "accuracy": round(mean + (seed - 1) * rng.uniform(0, 0.03), 4)})
    rng.shuffle(rows)
    return {"rows": rows, "margin": rng.choice([0.01, 0.02])}


def cheapest_within(rows, margin: float) -> dict:
    """The reference for 07.2: per target, the method with the fewest trainable parameters whose mean accuracy over
    seeds is at least full fine-tuning's mean minus ``margin``."""
    means: dict = {}
    for row in rows:
        means.setdefault((row["target"], row["method"]), []).append(row["accuracy"])
    trainable = {row["method"]: row["trainable"] for row in rows}
    answer = {}
    for target in sorted({row["target"] for row in rows}):
        full = sum(means[target, "finetune"]) / len(means[target, "finetune"])
        good = [m for (t, m), values in means.items() if t == target and sum(values) / len(values) >= full - margin]
        answer[target] = min(good, key=lambda m: trainable[m])
    return answer


def _same_choices(exercise_id: str, answer, expected: dict, what: str, shape_hint: str, wrong_hint: str) -> None:
    """Fail unless ``answer`` is a dict with ``expected``'s keys and the same choice under each."""
    if not isinstance(answer, dict) or set(answer) != set(expected):
        _fail(exercise_id, f"expected a dict with one {what} {sorted(expected)}, got {answer!r:.200}.", shape_hint)
    wrong = {key: answer[key] for key in expected if answer[key] != expected[key]}
    if wrong:
        _fail(exercise_id, f"wrong choices {wrong}; they should be {({key: expected[key] for key in wrong})}.",
              wrong_hint)


@_exercise("07.2", "cheapest_method", "the cheapest method within a margin of full fine-tuning, per target",
           _ask_cheapest, lambda fn, inputs: fn(inputs["rows"], inputs["margin"]), rounds=3)
def judge_cheapest(answer, inputs) -> str:
    expected = cheapest_within(inputs["rows"], inputs["margin"])
    _same_choices("07.2", answer, expected, "method per target", "return {target: method}, one entry per value of "
                  "row['target'].", "average each method's accuracy over seeds first; keep the methods whose mean is "
                  "at least full fine-tuning's mean minus the margin; of those, take the one with the fewest "
                  "trainable parameters.")
    return f"the cheapest method within {inputs['margin']:g} of full fine-tuning on each of {len(expected)} targets."


# Lesson 09

def _ask_masking(rng):
    """A batch of token ids like the text lab's: [CLS] words [SEP] and padding, ids of special tokens below 5."""
    g = torch.Generator().manual_seed(rng.randrange(1_000_000))
    rows, width, vocab = rng.randint(300, 500), 16, rng.randint(60, 120)
    lengths = torch.randint(8, width - 1, (rows,), generator=g)
    ids = torch.randint(5, vocab, (rows, width), generator=g)
    position = torch.arange(width)
    ids[position > lengths[:, None]] = 0  # [PAD]
    ids[:, 0] = 2  # [CLS]
    ids[torch.arange(rows), lengths] = 3  # [SEP]
    special = (ids < 5)
    return {"input_ids": ids, "special": special, "mask_id": 4, "vocab_size": vocab, "seed": rng.randrange(10_000)}


def _answer_masking(mask_tokens, inputs):
    generator = torch.Generator().manual_seed(inputs["seed"])
    result = mask_tokens(inputs["input_ids"].clone(), inputs["special"].clone(), inputs["mask_id"],
                         inputs["vocab_size"], generator)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return {"returned": type(result).__name__}
    return {"inputs": result[0], "labels": result[1]}


def masking_statistics(ids, special, inputs, labels) -> dict:
    """What a masking did, as shares: of the maskable tokens, how many were chosen (label set); of the chosen ones,
    how many became [MASK] (id 4 here), were left as they were, or became another token; and how many positions
    that were not chosen changed (should be none), and special tokens chosen (should be none)."""
    chosen = labels != -100
    n = max(int(chosen.sum()), 1)
    masked = chosen & (inputs == 4)
    kept = chosen & (inputs == ids) & ~masked
    return {"chosen": float(chosen[~special].float().mean()), "masked": float(masked.sum()) / n,
            "kept": float(kept.sum()) / n, "replaced": float((chosen & ~masked & ~kept).sum()) / n,
            "labels_right": bool(torch.equal(labels[chosen], ids[chosen])),
            "unchosen_changed": int((~chosen & (inputs != ids)).sum()), "special_chosen": int((chosen & special).sum())}


def collator_statistics(inputs_of_exercise) -> dict:
    """The reference for 09.1: the same statistics for ``transformers``' ``DataCollatorForLanguageModeling``
    (15%, 80/10/10) on the same ids, through its own masking function."""
    from transformers import DataCollatorForLanguageModeling

    class Vocabulary:  # what the collator asks of a tokenizer: the [MASK] id, the size, which ids are special
        mask_token, mask_token_id, pad_token, pad_token_id = "[MASK]", 4, "[PAD]", 0
        all_special_ids = [0, 1, 2, 3, 4]

        def __len__(self):
            return inputs_of_exercise["vocab_size"]

        def convert_tokens_to_ids(self, token):
            return 4

    collator = DataCollatorForLanguageModeling(Vocabulary(), mlm_probability=0.15)
    ids = inputs_of_exercise["input_ids"]
    torch.manual_seed(inputs_of_exercise["seed"])
    inputs, labels = collator.torch_mask_tokens(ids.clone(), special_tokens_mask=inputs_of_exercise["special"].clone())
    return masking_statistics(ids, inputs_of_exercise["special"], inputs, labels)


@_exercise("09.1", "mask_tokens", "BERT's masking (15%; 80/10/10) by hand, against DataCollatorForLanguageModeling",
           _ask_masking, _answer_masking)
def judge_masking(answer, inputs) -> str:
    hint_shape = "return (inputs, labels): two tensors shaped like input_ids."
    if "returned" in answer or not all(isinstance(answer.get(k), torch.Tensor) for k in ("inputs", "labels")):
        _fail("09.1", "mask_tokens should return two tensors, the corrupted inputs and the labels.", hint_shape)
    ids, special = inputs["input_ids"], inputs["special"]
    if answer["inputs"].shape != ids.shape or answer["labels"].shape != ids.shape:
        _fail("09.1", f"the tensors have shapes {list(answer['inputs'].shape)} and {list(answer['labels'].shape)}; "
                      f"expected {list(ids.shape)}.", hint_shape)
    mine = masking_statistics(ids, special, answer["inputs"].long(), answer["labels"].long())
    reference = collator_statistics(inputs)
    if mine["chosen"] > 0.5:
        _fail("09.1", f"the labels are set (not -100) at {mine['chosen']:.0%} of the tokens.",
              "the loss is computed at the chosen positions only: labels[~chosen] = -100.")
    if mine["special_chosen"]:
        _fail("09.1", f"{mine['special_chosen']} special tokens ([CLS], [SEP], [PAD]) were chosen.",
              "never choose a position where special is True: set its probability to 0 before drawing.")
    if not mine["labels_right"]:
        _fail("09.1", "at the chosen positions, the labels are not the original tokens.",
              "labels = input_ids.clone() before you change anything; labels[~chosen] = -100.")
    if mine["unchosen_changed"]:
        _fail("09.1", f"{mine['unchosen_changed']} positions that were not chosen (label -100) were changed.",
              "only chosen positions may be masked or replaced; the rest stay as they were, with label -100.")
    tolerance = {"chosen": 0.03, "masked": 0.06, "kept": 0.05, "replaced": 0.05}
    for name, tol in tolerance.items():
        if abs(mine[name] - reference[name]) > tol:
            _fail("09.1", f"the share '{name}' is {mine[name]:.3f}; DataCollatorForLanguageModeling gives "
                          f"{reference[name]:.3f} on the same ids (allowed difference {tol}).",
                  "choose each maskable position with probability 0.15; of the chosen, 80% become [MASK], "
                  "10% a random token (torch.randint(vocab_size, ...)), and the rest stay.")
    return (f"chose {mine['chosen']:.1%} of the tokens; of those {mine['masked']:.0%} [MASK], "
            f"{mine['replaced']:.0%} random, {mine['kept']:.0%} kept (the collator: {reference['chosen']:.1%}; "
            f"{reference['masked']:.0%} / {reference['replaced']:.0%} / {reference['kept']:.0%}).")


def _ask_lora_classifier(rng):
    return {"num_classes": rng.randint(2, 6), "rank": rng.choice([2, 4, 8, 16]), "alpha": rng.choice([4, 8, 16, 32]),
            "seed": rng.randrange(1_000_000)}


def _answer_lora_classifier(fn, inputs):
    """Hand a classifier built from the shipped text checkpoint to ``fn``; report what came back: its type, the
    LoRA settings peft recorded, which parameters train, and whether it computes what the classifier did (LoRA
    starts as the identity, B = 0)."""
    from . import text

    base = text.classifier("finetune", inputs["num_classes"], seed=inputs["seed"]).eval()
    ids = torch.randint(5, base.config.vocab_size, (4, 12), generator=torch.Generator().manual_seed(inputs["seed"]))
    with torch.no_grad():
        before = base(input_ids=ids).logits.clone()
    model = fn(base, inputs["rank"], inputs["alpha"])
    config = getattr(model, "peft_config", {}).get("default")
    try:
        with torch.no_grad():
            same = bool(torch.allclose(model.eval()(input_ids=ids).logits, before, atol=1e-5))
    except Exception:  # not a model that takes input_ids
        same = False
    return {"type": type(model).__name__, "peft": config is not None,
            "r": getattr(config, "r", None), "alpha": getattr(config, "lora_alpha", None),
            "targets": sorted(getattr(config, "target_modules", None) or []) if config is not None else [],
            "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad)
            if hasattr(model, "named_parameters") else [], "same_output": same}


@functools.cache
def _lora_reference_names() -> tuple[str, ...]:
    """The trainable parameters of the course's own LoRA classifier (:func:`ftcourse.text.lora`): the same for every
    rank, rate and number of classes, so built once."""
    from . import text

    model = text.lora(text.classifier("finetune", 2))
    return tuple(sorted(n for n, p in model.named_parameters() if p.requires_grad))


@_exercise("09.2", "lora_classifier", "LoRA through peft on query and value, the new head trained whole",
           _ask_lora_classifier, _answer_lora_classifier, rounds=3)
def judge_lora_classifier(answer, inputs) -> str:
    if not isinstance(answer, dict) or not answer.get("peft"):
        got = answer.get("type") if isinstance(answer, dict) else type(answer).__name__
        _fail("09.2", f"your function returned a {str(got)[:60]}, not a peft model.",
              "wrap the classifier with peft: get_peft_model(model, LoraConfig(...)), and return what it gives.")
    if (answer["r"], answer["alpha"]) != (inputs["rank"], inputs["alpha"]):
        _fail("09.2", f"the LoRA has r={answer['r']} and lora_alpha={answer['alpha']}; asked for r={inputs['rank']} "
                      f"and alpha={inputs['alpha']}.", "LoraConfig(r=rank, lora_alpha=alpha, ...).")
    if answer["targets"] != ["query", "value"]:
        _fail("09.2", f"LoRA adapts {answer['targets']}.",
              "Hu et al. adapt the attention's query and value projections: target_modules=['query', 'value'] "
              "(BERT's names for them).")
    reference = set(_lora_reference_names())
    trainable = set(answer["trainable"])
    head = sorted(n for n in reference - trainable if "modules_to_save" in n)
    if head:
        _fail("09.2", f"the new head does not train (e.g. {head[0]}).",
              "the classifier and the pooler start random: train them whole with modules_to_save=['classifier', "
              "'pooler'] (ftcourse.text.head_names(model)).")
    if trainable != reference:
        extra = sorted(trainable - reference)
        example = extra[0] if extra else sorted(reference - trainable)[0]
        _fail("09.2", f"the parameters that train are not LoRA's and the head's (e.g. {example}).",
              "everything but the LoRA matrices and the new head stays frozen: get_peft_model does that; do not "
              "set requires_grad yourself.")
    if not answer["same_output"]:
        _fail("09.2", "the model does not compute what the classifier did before training.",
              "LoRA starts as the identity: B = 0 (peft's default, init_lora_weights=True), lora_dropout=0.0.")
    return (f"LoRA of rank {inputs['rank']} (alpha {inputs['alpha']}) on query and value, the head trained whole: "
            f"{len(reference)} trainable tensors, the same output as the classifier before training.")


# ------------------------------------------------------------------------------------------------------------------
# Lesson 08

def _ask_masks(rng):
    num_classes = rng.choice([3, 4, 5])
    absent = rng.randrange(1, num_classes)  # a class in neither map: it must not count
    only_predicted = rng.choice([c for c in range(1, num_classes) if c != absent])  # a class never true: IoU 0
    shape = (rng.randint(2, 4), rng.randint(4, 7), rng.randint(4, 7))
    g = torch.Generator().manual_seed(rng.randrange(2**31))
    present = [c for c in range(num_classes) if c not in (absent, only_predicted)]
    target = torch.tensor(present)[torch.randint(0, len(present), shape, generator=g)]
    pred = torch.where(torch.rand(shape, generator=g) < 0.7, target,
                       torch.tensor(present)[torch.randint(0, len(present), shape, generator=g)])
    pred[0, 0, 0] = only_predicted
    # every image a different share of each class, so that averaging per image gives another number
    pred[-1, :2] = target[-1, :2] = present[0]
    return {"pred": pred, "target": target, "num_classes": num_classes}


def _mean_iou_mistakes(pred, target, num_classes) -> dict[str, float]:
    """What the usual wrong recipes give, to say which one a wrong answer looks like."""
    ious = dense.iou_per_class(pred, target, num_classes)
    per_image = [dense.mean_iou(p, t, num_classes) for p, t in zip(pred, target)]
    return {"absent class counted as 0": float(torch.nan_to_num(ious, nan=0.0).mean()),
            "absent class counted as 1": float(torch.nan_to_num(ious, nan=1.0).mean()),
            "background left out": float(ious[1:].nanmean()),
            "mean over images of each image's mIoU": sum(per_image) / len(per_image)}


@_exercise("08.1", "mean_iou", "mean IoU of predicted and true class maps", _ask_masks,
           lambda fn, inputs: fn(inputs["pred"], inputs["target"], inputs["num_classes"]), rounds=2)
def judge_mean_iou(answer, inputs) -> str:
    value = _number("08.1", answer, "the mean IoU")
    expected = dense.mean_iou(inputs["pred"], inputs["target"], inputs["num_classes"])
    if abs(value - expected) > 1e-6:
        looks = [name for name, v in _mean_iou_mistakes(inputs["pred"], inputs["target"],
                                                         inputs["num_classes"]).items() if abs(value - v) < 1e-6]
        hint = (f"your number is what '{looks[0]}' gives. " if looks else "") + (
            "count intersections and unions over all pixels of all images, per class (background included); "
            "average IoU over the classes whose union is not empty.")
        _fail("08.1", f"you returned {value:.4f}; the mean IoU is {expected:.4f}.", hint)
    return f"mean IoU {expected:.4f} over {inputs['num_classes']} classes, one of them absent and left out."


def _ask_detections(rng):
    """One image, one class: true boxes, and detections in a shuffled order with distinct scores: some on an object,
    some duplicates of one, often two on a pair of overlapping objects (where greedy matching by best IoU and by
    first IoU >= 0.5 differ), often one at IoU exactly 0.5 (>= counts it), some on nothing."""
    truths, boxes = [], []
    for k in range(rng.randint(2, 4)):
        x, y = 20 * k + rng.randint(0, 4), rng.randint(0, 20)
        truths.append([x, y, x + 8, y + 8])
    for t in truths:
        for _ in range(rng.randint(0, 2)):  # on the object (and a duplicate)
            d = [rng.randint(-1, 1) for _ in range(4)]
            boxes.append([t[0] + d[0], t[1] + d[1], t[2] + d[2], t[3] + d[3]])
    if rng.random() < 0.75:
        t = truths[0]
        boxes.append([t[0], t[1], t[2], t[1] + 4])  # half of the object: IoU exactly 0.5
    boxes += [[200 + 10 * i, 50, 206 + 10 * i, 56] for i in range(rng.randint(0, 2))]  # on nothing
    scores = rng.sample(range(1, 100), len(boxes) + 2)
    if rng.random() < 0.6:
        # Objects a, then b. The surer detection overlaps both (IoU 0.67 with a, 0.82 with b), the other only a
        # (0.9; 0.46 with b): matched to its best box, each finds one; matched to the first box above 0.5, the
        # surer one takes a and the other finds nothing.
        truths += [[100, 0, 110, 10], [103, 0, 113, 10]]
        boxes += [[102, 0, 112, 10], [100, 0, 109, 10]]
        scores[-2:] = sorted(scores[-2:], reverse=True)
    else:
        scores = scores[:len(boxes)]
    order = list(range(len(boxes)))
    rng.shuffle(order)
    return {"boxes": torch.tensor([boxes[i] for i in order], dtype=torch.float32),
            "scores": torch.tensor([scores[i] / 100 for i in order]),
            "truths": torch.tensor(truths, dtype=torch.float32)}


def _matching_mistakes(boxes, scores, truths) -> dict[str, list[bool]]:
    """What the usual wrong matchings give, by the hint that names each."""
    iou = dense.box_iou(boxes, truths)
    order = torch.argsort(scores, descending=True).tolist()

    def greedy(indices, *, once=True, strict=False, first=False):
        found, hits = [False] * len(truths), []
        for i in indices:
            free = [j for j in range(len(truths)) if not (once and found[j])]
            ok = [j for j in free if (iou[i, j] > 0.5 if strict else iou[i, j] >= 0.5)]
            j = (ok[0] if first else max(ok, key=lambda j: iou[i, j])) if ok else None
            if j is not None:
                found[j] = True
            hits.append(j is not None)
        return hits
    return {"take the detections in order of score, highest first: the matching is greedy by confidence":
            greedy(range(len(boxes))),
            "each true box is matched once: a second detection of an object already found is a false positive":
            greedy(order, once=False),
            "IoU >= 0.5 counts: a detection at exactly 0.5 is a true positive": greedy(order, strict=True),
            "match each detection to the free true box it overlaps most, not to the first one above 0.5":
            greedy(order, first=True)}


@_exercise("08.3", "match_detections", "greedy matching of detections to true boxes at IoU 0.5, as AP50 counts",
           _ask_detections, lambda fn, inputs: fn(inputs["boxes"], inputs["scores"], inputs["truths"]), rounds=3)
def judge_match_detections(answer, inputs) -> str:
    boxes, scores, truths = inputs["boxes"], inputs["scores"], inputs["truths"]
    expected = dense.match_detections(boxes, scores, truths)
    if isinstance(answer, torch.Tensor):
        answer = answer.tolist()
    if not isinstance(answer, list) or len(answer) != len(expected) or \
            not all(isinstance(a, (bool, int)) for a in answer):
        _fail("08.3", f"expected a list of {len(expected)} True/False, one per detection, got {answer!r:.120}.",
              "return [True or False for each detection], in order of score, highest first.")
    if [bool(a) for a in answer] != expected:
        hint = next((h for h, wrong in _matching_mistakes(boxes, scores, truths).items()
                     if wrong == [bool(a) for a in answer]),
                    "sort the detections by score (highest first); each matches the not yet matched true box it "
                    "overlaps most, a true positive if that IoU is >= 0.5.")
        _fail("08.3", "some detections are counted wrong.", hint)
    return f"{sum(expected)} true and {len(expected) - sum(expected)} false positives among {len(expected)} detections."


# What lesson 08 measured (cpu profile, segmentation, test mIoU per seed), the centre of the 08.2 exercise's tables.
LESSON08_MIOU = {  # per seed 0, 1, 2
    ("related", 16): {"scratch": [0.246, 0.192, 0.191], "finetune": [0.423, 0.436, 0.389]},
    ("related", 128): {"scratch": [0.231, 0.152, 0.152], "finetune": [0.500, 0.465, 0.235]},
    ("conflict", 16): {"scratch": [0.747, 0.406, 0.451], "finetune": [0.497, 0.452, 0.333]},
    ("conflict", 128): {"scratch": [0.794, 0.150, 0.455], "finetune": [0.642, 0.795, 0.618]},
}


def _ask_verdicts(rng):
    """Lesson 08's scratch scores per seed, and fine-tuning at a distance from them drawn per setting (clearly
    above, a little above, level, a little below, clearly below), with noise per seed: every verdict can come out
    either way, so no one table answers most questions."""
    rows = []
    for (target, shots), by_method in LESSON08_MIOU.items():
        shift, effect = rng.uniform(-0.03, 0.03), rng.choice([-0.2, -0.06, 0.0, 0.06, 0.2])
        for seed, value in enumerate(by_method["scratch"]):
            scratch = value + shift + rng.uniform(-0.01, 0.01)
            for method, score in (("scratch", scratch), ("finetune", scratch + effect + rng.uniform(-0.04, 0.04))):
                rows.append({"target": target, "shots": shots, "method": method, "seed": seed,
                             "score": round(score, 4)})
    rng.shuffle(rows)
    return {"rows": rows, "margin": rng.choice([0.0, 0.02, 0.05])}


def pretraining_verdicts(rows, margin: float) -> dict[str, str]:
    """The reference for 08.2: per ``"target/shots"``, ``"finetune"`` when fine-tuning beats scratch by more than
    ``margin`` (the low end of the paired 90% interval of finetune - scratch is above it), ``"scratch"`` when scratch
    beats fine-tuning so, else ``"either"``."""
    from .stats import paired_difference

    scores: dict = {}
    for row in rows:
        scores.setdefault((row["target"], row["shots"], row["method"]), {})[row["seed"]] = row["score"]
    verdicts = {}
    for target, shots in sorted({(t, n) for t, n, _ in scores}):
        tuned, scratch = scores[target, shots, "finetune"], scores[target, shots, "scratch"]
        seeds = sorted(tuned)
        d = paired_difference([tuned[s] for s in seeds], [scratch[s] for s in seeds])
        verdicts[f"{target}/{shots}"] = ("finetune" if d["low"] > margin else "scratch" if d["high"] < -margin
                                          else "either")
    return verdicts


@_exercise("08.2", "pretraining_verdicts", "fine-tune or train from scratch, by the course's rule, per setting",
           _ask_verdicts, lambda fn, inputs: fn(inputs["rows"], inputs["margin"]), rounds=2)
def judge_verdicts(answer, inputs) -> str:
    expected = pretraining_verdicts(inputs["rows"], inputs["margin"])
    _same_choices("08.2", answer, expected, "verdict per setting", "key each verdict by f\"{target}/{labels}\", "
                  "one per (target, labels) pair in the rows.", "pair the seeds: d_s = finetune_s - scratch_s; "
                  "ftcourse.stats.paired_difference gives the 90% interval; 'finetune' if its low end is above the "
                  "margin, 'scratch' if its high end is below minus the margin, else 'either'. Comparing means alone "
                  "ignores the noise.")
    return f"{len(expected)} verdicts at a margin of {inputs['margin']:g}."


# ------------------------------------------------------------------------------------------------------------------
# The capstone (10.1): a recipe, run on the practice target here, on a secret one when graded.

class _ImageCounter:
    """Counts images that go through a network's first convolution (3 input channels) with gradients enabled.

    That is the compute of training: forward passes that will be backpropagated. Forward passes under
    ``torch.no_grad()`` (evaluation, extracting features once) are free. The notebook's check uses it to tell you
    how much of the budget you used; the grader does not trust it (your code could remove it) and enforces a time
    limit instead.
    """

    def __init__(self):
        self.images = 0

    def __call__(self, module, inputs, output):
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == 3 and torch.is_grad_enabled():
            self.images += inputs[0].shape[0]

    def __enter__(self):
        self.handle = torch.nn.modules.module.register_module_forward_hook(self)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def capstone_train(kind: str = "shape"):
    """A practice target's training images and labels (an ImageData): all a recipe may learn from. ``kind``:
    "shape" or "colour" (:data:`ftcourse.capstone.KINDS`)."""
    return capstone.practice(kind)[0]


def _answer_capstone(recipe, inputs):
    """Run the recipe on the training images handed over; return its model as a checkpoint (weights, plain data)."""
    from .data import ImageData

    train = ImageData(inputs["images"], inputs["labels"], list(inputs["classes"]))
    model = recipe(train, inputs["budget"])
    if not isinstance(model, models.StagedNet):
        return {"type": type(model).__name__}
    return {"type": "StagedNet", "format": 1, "config": dict(model.config or {}),
            "state_dict": {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}}


def capstone_inputs(train) -> dict:
    """What the recipe is handed: the training images and labels, and the budget."""
    return {"images": train.images.cpu(), "labels": train.labels.cpu(), "classes": list(train.classes),
            "budget": capstone.BUDGET}


def judge_capstone(answer, test, kind: str, where: str = "") -> tuple[float, str]:
    """The test accuracy of the model the recipe returned on a target of ``kind``, and what it means (its share
    of the points: :func:`ftcourse.capstone.score`); ``where`` names the target in a failure ("the shape practice
    target"). The network is the course's
    (:func:`capstone.network`), built here; the answer only supplies its weights, each checked first: the same names,
    shapes and dtypes, dense, finite. A checkpoint that names another architecture scores zero with the reason."""
    from .train import evaluate

    if not isinstance(answer, dict) or answer.get("type") != "StagedNet":
        kind = answer.get("type") if isinstance(answer, dict) else type(answer).__name__
        _fail(capstone.EXERCISE, f"the recipe returned {str(kind)[:60]}, not a StagedNet.",
              "return the trained model (a course network from ftcourse.models).")
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in capstone.NETWORK.items()}
    config = answer.get("config")
    config = {k: list(v) if isinstance(v, (tuple, list)) else v for k, v in config.items()} \
        if isinstance(config, dict) else config
    if config != expected:
        _fail(capstone.EXERCISE, f"the model is not the lab's network with {capstone.CLASSES} outputs "
                                 f"({capstone.NETWORK}); it says {str(config)[:160]}.",
              "fine-tune one of the lab's checkpoints (models.pretrained) with models.replace_head(model, "
              "len(train.classes)); the grader builds that network and loads your weights into it.")
    model = capstone.network()
    reference = model.state_dict()
    weights = answer.get("state_dict")
    if not isinstance(weights, dict) or set(weights) != set(reference):
        _fail(capstone.EXERCISE, "the weights returned do not fit the lab's network (other parameter names).",
              "return the model itself; do not rename or drop its parameters.")
    loaded = {}
    for name, like in reference.items():
        value = weights[name]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and like.dim() == 0:
            value = torch.tensor(value, dtype=like.dtype)  # plain() sent 0-dim tensors (BatchNorm's counters) as numbers
        if not (isinstance(value, torch.Tensor) and value.layout == torch.strided and value.shape == like.shape
                and value.dtype == like.dtype) or (value.is_floating_point() and not torch.isfinite(value).all()):
            _fail(capstone.EXERCISE, f"its weight {name[:80]} is not a finite {like.dtype} tensor of shape "
                                     f"{tuple(like.shape)}.", "return the model itself, trained, without changes.")
        loaded[name] = value
    model.load_state_dict(loaded)
    accuracy = evaluate(model.eval(), test)["accuracy"]
    passing, full = capstone.MARKS[kind]
    if not accuracy >= passing:
        _fail(capstone.EXERCISE, f"{f'on {where}, ' if where else ''}test accuracy {accuracy:.3f}; a {kind} target "
                                 f"needs {passing:.3f}.",
              "which source learned what this target needs? Compare sources and rates on the training images "
              "first (lessons 04 and 05): the target may be about shapes or about colours.")
    return accuracy, (f"test accuracy {accuracy:.3f} on a {kind} target: {capstone.score(accuracy, kind):.0%} of the "
                      f"points (half at the pass mark {passing:.2f}, all at {full:.2f})")


def check_capstone(recipe) -> None:
    """10.1: ``recipe(train, budget)`` -> a trained StagedNet for ``train``'s classes, within ``budget`` images.

    Here it runs on the two public practice targets, one of each kind, counts the images trained on, and tests each
    model on its practice test set. ``ftcourse grade`` runs it once, on the secret target (of either kind), with a
    time limit instead of the counter.
    """
    lines = []
    for kind in capstone.KINDS:
        train, test = capstone.practice(kind)
        inputs = capstone_inputs(train)
        try:
            with _ImageCounter() as counter:
                answer = plain(_answer_capstone(recipe, inputs))
        except NotImplementedError as error:
            raise ExerciseNotDone(f"Exercise {capstone.EXERCISE} is not done yet: {error}") from None
        except Exception as error:
            _fail(capstone.EXERCISE, f"your recipe raised {type(error).__name__} on the {kind} target: {error}",
                  "run it on its own in a new cell and read the traceback.")
        if counter.images > capstone.BUDGET:
            _fail(capstone.EXERCISE,
                  f"the recipe trained on {counter.images:,} images; the budget is {capstone.BUDGET:,}.",
                  "steps x batch size (plus any probe or LR-finder steps) must stay within the budget.")
        _, what = judge_capstone(answer, test, kind, where=f"the {kind} practice target")
        lines.append(f"  {kind} target: {what}, with {counter.images:,} of {capstone.BUDGET:,} images")
    print(f"PASSED exercise {capstone.EXERCISE} on both practice targets:\n" + "\n".join(lines) +
          "\nThe grader runs your recipe once, on a secret target of either kind.")


GRADED[capstone.EXERCISE] = Exercise(capstone.EXERCISE, "recipe",
                                     "capstone: the best fine-tuning recipe for a new target within a budget",
                                     lambda rng: {}, _answer_capstone, None)
GRADED = dict(sorted(GRADED.items()))  # in the order of the course (the modules above register 09 before 08)
EXERCISES = {id: f"{e.function}: {e.title}" for id, e in GRADED.items()}


# ------------------------------------------------------------------------------------------------------------------
# The checks the notebooks call: one per exercise.

def check_finetune_start(finetune_start) -> None:
    """01.1: ``finetune_start(pretrained, num_classes)`` returns a copy with a fresh head, everything trainable."""
    return check("01.1", finetune_start)


def check_paired_verdict(paired_verdict) -> None:
    """01.2: ``paired_verdict(a, b, margin)`` -> {"mean", "low", "high", "beats"}: the paired 90% interval of a - b
    and whether a beats b by more than ``margin`` (``low > margin``)."""
    return check("01.2", paired_verdict)


def check_freeze_first(freeze_first) -> None:
    """02.1: ``freeze_first(model, k)`` freezes exactly the first k stages."""
    return check("02.1", freeze_first)


def check_train_mode(train_mode) -> None:
    """02.2: ``train_mode(model, frozen)`` puts a torchvision ResNet in training mode with the children named in
    ``frozen`` frozen: their parameters do not train and their BatchNorm layers stay in evaluation mode."""
    return check("02.2", train_mode)


def check_discriminative_rates(discriminative_rates) -> None:
    """03.1: ``discriminative_rates(stage_names, lr, decay)`` -> {stage: rate}, the head at lr, each stage below /decay."""
    return check("03.1", discriminative_rates)


def check_best_rate(best_rate) -> None:
    """03.2: ``best_rate(rows, method)`` -> the lr whose mean *validation* accuracy over seeds is highest, skipping
    diverged runs. The test accuracy in the rows points elsewhere, so a choice made on it fails."""
    return check("03.2", best_rate)


def check_suggest_rate(suggest_rate) -> None:
    """03.3: ``suggest_rate(lrs, losses)`` -> the rate where the range test's smoothed loss falls fastest, before its
    minimum, as :func:`ftcourse.rangetest.lr_find` reads it."""
    return check("03.3", suggest_rate)


def check_ntg_by_setting(ntg_by_setting) -> None:
    """04.1: ``ntg_by_setting(rows)`` -> {(relatedness, shots): mean over seeds of err_finetune - err_scratch}."""
    return check("04.1", ntg_by_setting)


def check_keep_lower_stages(keep_lower_stages) -> None:
    """04.2: ``keep_lower_stages(pretrained, num_classes, keep)``: a copy with the first ``keep`` stages of
    ``pretrained``, the other feature stages re-initialised and a new head of ``num_classes`` outputs."""
    return check("04.2", keep_lower_stages)


def check_leep_score(leep_score) -> None:
    """05.1: ``leep_score(source_probs, labels)`` -> LEEP (Nguyen et al. 2020), as ``ftcourse.measure.leep``."""
    return check("05.1", leep_score)


def check_kendall_tau(kendall_tau) -> None:
    """05.2: ``kendall_tau(x, y)`` -> (concordant - discordant) / (n (n - 1) / 2), for values without ties."""
    return check("05.2", kendall_tau)


def check_lora_linear(LoRALinear) -> None:
    """07.1: ``LoRALinear(base, r, alpha)``: base(x) + (alpha / r) B A x with base frozen, A random (r x in), B zeros
    (out x r); compared with ``peft``'s LoRA layer on the same weights."""
    return check("07.1", LoRALinear)


def check_cheapest_method(cheapest_method) -> None:
    """07.2: ``cheapest_method(rows, margin)`` -> {target: the method with the fewest trainable parameters whose mean
    accuracy is within ``margin`` of full fine-tuning's}."""
    return check("07.2", cheapest_method)


def check_mean_iou(mean_iou) -> None:
    """08.1: ``mean_iou(pred, target, num_classes)`` -> IoU per class over all pixels, averaged over the classes
    present in either map (background included)."""
    return check("08.1", mean_iou)


def check_pretraining_verdicts(pretraining_verdicts) -> None:
    """08.2: ``pretraining_verdicts(rows, margin)`` -> {"target/labels": "finetune", "scratch" or "either"} by the
    paired 90% interval of finetune - scratch over seeds."""
    return check("08.2", pretraining_verdicts)


def check_match_detections(match_detections) -> None:
    """08.3: ``match_detections(boxes, scores, truths)`` -> [True/False per detection, highest score first]: PASCAL
    VOC's greedy matching at IoU >= 0.5, each true box matched once."""
    return check("08.3", match_detections)


def check_lora_classifier(lora_classifier) -> None:
    """09.2: ``lora_classifier(model, rank, alpha)`` -> the classifier wrapped by ``peft``: LoRA of rank ``rank`` and
    scale ``alpha`` on query and value, the new head (classifier and pooler) trained whole, the rest frozen."""
    return check("09.2", lora_classifier)


def check_mask_tokens(mask_tokens) -> None:
    """09.1: ``mask_tokens(input_ids, special, mask_id, vocab_size, generator)`` -> (inputs, labels): BERT's masking,
    15% of the non-special tokens chosen, 80% of them [MASK], 10% a random token, 10% kept; labels -100 elsewhere."""
    return check("09.1", mask_tokens)
