"""Lesson 08's exercises: mean IoU of class maps, and the verdict "fine-tune or scratch" by the paired rule."""

import random

import pytest
import torch

from ftcourse import checks, dense


def verdict(exercise_id, fn, seed=3):
    exercise = checks.GRADED[exercise_id]
    inputs = exercise.ask(random.Random(seed))
    return exercise.judge(checks.plain(exercise.answer(fn, inputs)), inputs)


def right_mean_iou(pred, target, num_classes):
    ious = []
    for c in range(num_classes):
        intersection = ((pred == c) & (target == c)).sum().item()
        union = ((pred == c) | (target == c)).sum().item()
        if union:
            ious.append(intersection / union)
    return sum(ious) / len(ious)


def absent_as_zero(pred, target, num_classes):
    total = 0.0
    for c in range(num_classes):
        union = ((pred == c) | (target == c)).sum().item()
        total += ((pred == c) & (target == c)).sum().item() / union if union else 0.0
    return total / num_classes


def per_image(pred, target, num_classes):
    return sum(right_mean_iou(p, t, num_classes) for p, t in zip(pred, target)) / len(pred)


def without_background(pred, target, num_classes):
    return _mean_over(pred, target, range(1, num_classes))


def _mean_over(pred, target, classes):
    ious = [((pred == c) & (target == c)).sum().item() / ((pred == c) | (target == c)).sum().item()
            for c in classes if ((pred == c) | (target == c)).any()]
    return sum(ious) / len(ious)


@pytest.mark.parametrize("seed", range(6))
def test_a_right_mean_iou_passes_on_any_inputs(seed):
    assert "mean IoU" in verdict("08.1", right_mean_iou, seed)


@pytest.mark.parametrize("wrong, looks_like", [(absent_as_zero, "absent class counted as 0"),
                                               (per_image, "mean over images"),
                                               (without_background, "background left out")])
def test_the_usual_mean_iou_mistakes_fail_and_are_named(wrong, looks_like):
    with pytest.raises(checks.ExerciseFailed, match=looks_like):
        verdict("08.1", wrong, seed=1)


def test_mean_iou_inputs_hold_an_absent_class_and_a_class_only_predicted():
    for seed in range(5):
        inputs = checks.GRADED["08.1"].ask(random.Random(seed))
        ious = dense.iou_per_class(inputs["pred"], inputs["target"], inputs["num_classes"])
        assert torch.isnan(ious).sum() == 1 and (ious == 0).any()


def by_the_paired_rule(rows, margin):
    return checks.pretraining_verdicts(rows, margin)


def by_the_means(rows, margin):  # ignores the noise: never says "either"
    means = {}
    for r in rows:
        means.setdefault((f"{r['target']}/{r['shots']}", r["method"]), []).append(r["score"])
    return {key: "finetune" if sum(means[key, "finetune"]) > sum(means[key, "scratch"]) else "scratch"
            for key, _ in means}


def test_the_verdict_check_passes_the_right_answer_and_fails_the_means():
    for seed in range(4):
        assert "verdicts" in verdict("08.2", by_the_paired_rule, seed)
    with pytest.raises(checks.ExerciseFailed):
        verdict("08.2", lambda rows, margin: {"related/16": "finetune"})
    caught = 0
    for seed in range(10):
        try:
            verdict("08.2", by_the_means, seed)
        except checks.ExerciseFailed:
            caught += 1
    assert caught >= 1, "the lesson's measurements should hold a setting the paired rule calls 'either'"


def test_the_verdict_reference_on_a_hand_made_table():
    rows = [{"target": "t", "shots": 8, "method": m, "seed": s, "score": v}
            for m, values in (("finetune", (0.5, 0.6, 0.55)), ("scratch", (0.3, 0.31, 0.32))) for s, v in enumerate(values)]
    assert checks.pretraining_verdicts(rows, 0.0) == {"t/8": "finetune"}  # d = 0.2, 0.29, 0.23
    assert checks.pretraining_verdicts(rows, 0.3) == {"t/8": "either"}
    swapped = [{**r, "method": "scratch" if r["method"] == "finetune" else "finetune"} for r in rows]
    assert checks.pretraining_verdicts(swapped, 0.0) == {"t/8": "scratch"}
