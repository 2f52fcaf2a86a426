"""Checks for the exercises: each says what is wrong, gives a hint, and says clearly when you have passed.

In an exercise notebook you write a function, then call its check::

    check_freeze_first(freeze_first)

A check calls your function on fresh inputs and compares the result with what it should be. It prints
``PASSED`` with what was checked, or raises :class:`ExerciseFailed` with what went wrong and a hint. Until you write
the function, its stub raises ``NotImplementedError`` and the check lets that through unchanged.

For grading (``ftcourse grade``), each result is also appended as a JSON line to the file named by the
``FTCOURSE_GRADE_REPORT`` environment variable, when it is set.
"""

from __future__ import annotations

import json
import os

import torch

from . import models

EXERCISES = {
    "01.1": "finetune_start: a copy of the pretrained model with a new head",
    "01.2": "finetuning_advantage: accuracy gain of fine-tuning over scratch per target size",
    "02.1": "freeze_first: freeze the first k stages",
    "02.2": "count_trainable: number of trainable parameters",
    "03.1": "discriminative_rates: ULMFiT's layer-wise learning rates",
    "03.2": "best_rate: the learning rate with the best mean accuracy, diverged runs excluded",
}
REPORT_VARIABLE = "FTCOURSE_GRADE_REPORT"


class ExerciseFailed(AssertionError):
    """Your answer is not right yet; the message says why and how to fix it."""


def _record(exercise: str, passed: bool, message: str) -> None:
    path = os.environ.get(REPORT_VARIABLE)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"exercise": exercise, "passed": passed, "message": message}) + "\n")


def _passed(exercise: str, what: str) -> bool:
    message = f"PASSED exercise {exercise}: {what}"
    _record(exercise, True, message)
    print(message)
    return True


def _fail(exercise: str, problem: str, hint: str):
    message = f"Exercise {exercise} is not right yet: {problem}\nHint: {hint}"
    _record(exercise, False, message)
    raise ExerciseFailed(message)


def _call(exercise: str, fn, *args):
    """Call the learner's function; a stub's NotImplementedError goes through, other errors become a failure."""
    try:
        return fn(*args)
    except NotImplementedError:
        _record(exercise, False, f"Exercise {exercise} is not done yet (the stub raises NotImplementedError).")
        raise
    except ExerciseFailed:
        raise
    except Exception as error:  # the learner's code crashed: report it as a failed check with the error
        _fail(exercise, f"your function raised {type(error).__name__}: {error}",
              "run it on its own in a new cell and read the traceback.")


def _compare_dict(exercise: str, answer, expected: dict, *, shape_hint: str, value_hint: str, tol: float) -> None:
    """Fail unless ``answer`` is a dict with ``expected``'s keys and values (within ``tol``)."""
    if not isinstance(answer, dict) or set(answer) != set(expected):
        _fail(exercise, f"expected a dict with keys {sorted(expected, key=str)}, got {answer!r}.", shape_hint)
    wrong = {k: answer[k] for k in expected if abs(answer[k] - expected[k]) > tol}
    if wrong:
        _fail(exercise, f"wrong values {wrong}; they should be {expected}.", value_hint)


def _tiny_model(num_classes: int = 8) -> models.StagedNet:
    torch.manual_seed(0)
    return models.resnet(num_classes, width=4, blocks=(1, 1, 1))


def check_finetune_start(finetune_start) -> bool:
    """01.1: ``finetune_start(pretrained, num_classes)`` returns a copy with a fresh head, everything trainable."""
    pretrained = _tiny_model(8)
    before = {k: v.clone() for k, v in pretrained.state_dict().items()}
    model = _call("01.1", finetune_start, pretrained, 5)
    if model is pretrained or model.head is pretrained.head:
        _fail("01.1", "you changed the pretrained model itself instead of a copy.",
              "start from models.copy_model(pretrained), then replace the copy's head.")
    if any(not torch.equal(before[k], v) for k, v in pretrained.state_dict().items()):
        _fail("01.1", "the pretrained model's weights changed.", "work on models.copy_model(pretrained).")
    if getattr(model, "num_classes", None) != 5:
        _fail("01.1", f"the head has {getattr(model, 'num_classes', '?')} outputs instead of 5.",
              "use models.replace_head(copy, num_classes).")
    body = [k for k in before if not k.startswith("head.")]
    if any(not torch.equal(before[k], model.state_dict()[k]) for k in body):
        _fail("01.1", "the feature extractor's weights differ from the pretrained ones.",
              "fine-tuning starts from theta_pre: copy the model, do not build a new one.")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    if frozen:
        _fail("01.1", f"{len(frozen)} parameters are frozen, e.g. {frozen[0]}.",
              "full fine-tuning trains every parameter; leave requires_grad=True.")
    return _passed("01.1", "a copy of theta_pre with a new 5-class head, all parameters trainable.")


def check_finetuning_advantage(finetuning_advantage) -> bool:
    """01.2: ``finetuning_advantage(rows)`` -> {labels per class: mean fine-tune accuracy - mean scratch accuracy}."""
    rows = [{"shots": 5, "seed": s, "method": m, "accuracy": a} for s, m, a in
            [(0, "scratch", 0.3), (1, "scratch", 0.4), (0, "finetune", 0.9), (1, "finetune", 0.8),
             (0, "probe", 0.7), (1, "probe", 0.7)]]
    rows += [{"shots": 80, "seed": s, "method": m, "accuracy": a} for s, m, a in
             [(0, "scratch", 0.9), (1, "scratch", 0.95), (0, "finetune", 0.97), (1, "finetune", 0.98)]]
    answer = _call("01.2", finetuning_advantage, rows)
    expected = {5: 0.5, 80: 0.05}
    _compare_dict("01.2", answer, expected, shape_hint="one entry per value of row['shots'].", tol=1e-9,
                  value_hint="average over seeds first (fine-tune and scratch separately), then subtract; "
                             "ignore the probe.")
    return _passed("01.2", "the mean fine-tune minus mean scratch accuracy for each target size.")


def check_freeze_first(freeze_first) -> bool:
    """02.1: ``freeze_first(model, k)`` freezes exactly the first k stages."""
    for k in range(len(_tiny_model().stage_names) + 1):
        model = _call("02.1", freeze_first, _tiny_model(), k)
        if model is None:
            _fail("02.1", "your function returned None.", "return the model at the end.")
        trainable = [name for name in model.stage_names
                     if any(p.requires_grad for p in model.stage(name).parameters())]
        expected = list(model.stage_names[k:])
        if trainable != expected:
            _fail("02.1", f"with k={k} the trainable stages are {trainable}, expected {expected}.",
                  "loop over model.stage_names[:k] and call model.stage(name).requires_grad_(False).")
    return _passed("02.1", "for every k, exactly the first k stages are frozen.")


def check_count_trainable(count_trainable) -> bool:
    """02.2: ``count_trainable(model)`` counts the numbers (not tensors) in trainable parameters."""
    model = _tiny_model()
    model.stem.requires_grad_(False)
    expected = sum(p.numel() for p in model.parameters() if p.requires_grad)
    answer = _call("02.2", count_trainable, model)
    if answer == sum(1 for p in model.parameters() if p.requires_grad):
        _fail("02.2", f"{answer} is the number of trainable tensors, not of parameters.",
              "add up p.numel() for each trainable tensor p.")
    if answer == sum(p.numel() for p in model.parameters()):
        _fail("02.2", f"{answer} counts the frozen parameters too.", "keep only tensors with p.requires_grad.")
    if answer != expected:
        _fail("02.2", f"got {answer}, expected {expected}.", "sum(p.numel() for p in model.parameters() if ...).")
    return _passed("02.2", f"{expected:,} trainable parameters counted correctly.")


def check_discriminative_rates(discriminative_rates) -> bool:
    """03.1: ``discriminative_rates(stage_names, lr, decay)`` -> {stage: rate}, the head at lr, each stage below /decay."""
    names = ("stem", "layer1", "layer2", "head")
    answer = _call("03.1", discriminative_rates, names, 0.1, 2.0)
    expected = {"head": 0.1, "layer2": 0.05, "layer1": 0.025, "stem": 0.0125}
    if isinstance(answer, dict) and set(answer) == set(expected) and abs(answer["stem"] - 0.1) < 1e-12 \
            and abs(answer["head"] - 0.1) > 1e-12:
        _fail("03.1", "the stem got the largest rate: the order is upside down.",
              "the head (the last stage) gets lr; go down the list dividing by decay each time.")
    _compare_dict("03.1", answer, expected, shape_hint="return a dict {stage: rate} with a rate for every stage.",
                  value_hint="stage i from the top gets lr / decay**i (the head is i = 0), here lr=0.1, decay=2.",
                  tol=1e-12)
    return _passed("03.1", "head at lr, every stage below divided by decay once more.")


def check_best_rate(best_rate) -> bool:
    """03.2: ``best_rate(rows, method)`` -> the lr whose mean accuracy over seeds is highest, skipping diverged runs."""
    rows = [{"method": m, "lr": lr, "seed": s, "accuracy": a, "diverged": d} for m, lr, s, a, d in [
        ("finetune", 0.01, 0, 0.90, False), ("finetune", 0.01, 1, 0.94, False),
        ("finetune", 0.1, 0, 0.97, False), ("finetune", 0.1, 1, 0.85, False),
        ("finetune", 1.0, 0, 0.99, True), ("finetune", 1.0, 1, 0.20, True),
        ("scratch", 0.1, 0, 0.95, False), ("scratch", 0.01, 0, 0.50, False)]]
    answer = _call("03.2", best_rate, rows, "finetune")
    if answer == 1.0:
        _fail("03.2", "you picked a rate whose runs diverged.", "skip rows with row['diverged'] True.")
    if answer == 0.1:
        _fail("03.2", "0.1 has the single best run, but not the best mean over seeds.",
              "average the accuracy over seeds for each rate, then take the best average.")
    if answer != 0.01:
        _fail("03.2", f"got {answer!r}, expected 0.01 for these rows.", "only rows of the given method count.")
    return _passed("03.2", "the best mean accuracy over seeds, diverged runs excluded.")
