"""Lesson 08's exercises: mean IoU of class maps, the verdict "fine-tune or scratch" by the paired rule, and the
greedy matching of detections that AP50 counts."""

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


def right_match(boxes, scores, truths, *, by_score=True, once=True, at_least=True, best=True):
    """Exercise 08.3's answer, from box coordinates; the keywords give its usual slips."""
    def iou(a, b):
        inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
    boxes, truths = boxes.tolist(), truths.tolist()
    order = sorted(range(len(boxes)), key=lambda i: -float(scores[i])) if by_score else range(len(boxes))
    taken, hits = set(), []
    for i in order:
        ok = [(iou(boxes[i], t), j) for j, t in enumerate(truths) if not (once and j in taken)]
        ok = [(v, j) for v, j in ok if (v >= 0.5 if at_least else v > 0.5)]
        if ok:
            taken.add((max(ok) if best else ok[0])[1])
        hits.append(bool(ok))
    return hits


def test_a_right_matching_passes(capsys):
    checks.check_match_detections(right_match)
    assert "PASSED exercise 08.3" in capsys.readouterr().out


@pytest.mark.parametrize("slip, hint", [(dict(by_score=False), "in order of score"),
                                        (dict(once=False), "each true box is matched once"),
                                        (dict(at_least=False), "IoU >= 0.5 counts"),
                                        (dict(best=False), "overlaps most, not to the first")])
def test_each_usual_slip_in_matching_detections_gets_its_own_hint(slip, hint):
    failed = []
    for i in range(40):
        inputs = checks.GRADED["08.3"].ask(random.Random(f"slips/{i}"))
        try:
            checks.GRADED["08.3"].judge(right_match(**inputs, **slip), inputs)
        except checks.ExerciseFailed as error:
            failed.append(error.hint)
    assert len(failed) >= 10 and all(hint in h for h in failed), failed[:3]


def test_match_detections_is_what_average_precision_counts():
    """dense.match_detections (08.3's reference) and dense.average_precision share one matching: AP from its
    hits over one image is average_precision's."""
    for i in range(20):
        q = checks.GRADED["08.3"].ask(random.Random(f"ap/{i}"))
        hits = dense.match_detections(q["boxes"], q["scores"], q["truths"])
        detections = [torch.cat([torch.zeros(len(q["boxes"]), 1), q["scores"][:, None], q["boxes"]], 1)]
        truths = [torch.cat([torch.zeros(len(q["truths"]), 1), q["truths"]], 1)]
        assert dense.average_precision(detections, truths, 1) == pytest.approx(
            dense._area_under_envelope(hits, len(q["truths"])))
