"""The main job's claims (``ftcourse tour`` and the README's table), measured on the CPU at the tour's cpu sizes.

The tour compares scratch, a linear probe and fine-tuning on the lab's ``related`` and ``conflict`` targets with 5
and 20 labels per class, 3 seeds, every method at its own rate tuned on validation (the fair-comparison protocol).
A claim "A beats B" is a paired difference over seeds whose 90% interval lies above the margin
(:func:`ftcourse.stats.paired_difference`); "A matches B" is an interval inside ±margin.
"""

import pytest

from ftcourse import experiments, models, tour
from ftcourse.env import PROFILES
from ftcourse.stats import paired_difference

pytestmark = pytest.mark.slow  # minutes of training at the cpu profile's sizes

SIZES = PROFILES["cpu"]
SEEDS = SIZES.seeds
SHOTS = tour.SHOTS["cpu"]


@pytest.fixture(scope="module")
def results(tuning_cache):
    pretrained = models.pretrained("lab")
    rows = []
    for task in tour.TASKS:
        rows += experiments.compare(task, SHOTS, seeds=SEEDS, steps=SIZES.steps, batch_size=SIZES.batch_size,
                                    test_per_class=SIZES.test_per_class, pretrained=pretrained, lr="tuned",
                                    cache=tuning_cache)
    return {(r["task"], r["shots"], r["method"], r["seed"]): r["accuracy"] for r in rows}


def accuracy(results, task, shots, method):
    return [results[(task, shots, method, seed)] for seed in SEEDS]


def test_fine_tuning_beats_tuned_scratch_by_15_points_with_5_labels_per_class_on_related(results):
    gain = paired_difference(accuracy(results, "related", 5, "finetune"), accuracy(results, "related", 5, "scratch"))
    assert gain["low"] > 0.15, gain


def test_the_advantage_of_fine_tuning_on_related_shrinks_as_labels_grow(results):
    def advantage(shots):
        return [f - s for f, s in zip(accuracy(results, "related", shots, "finetune"),
                                      accuracy(results, "related", shots, "scratch"))]
    shrink = paired_difference(advantage(5), advantage(20))
    assert shrink["low"] > 0.1, shrink


def test_a_linear_probe_stays_near_chance_on_conflict_whatever_its_rate(results):
    for shots in SHOTS:
        probe = accuracy(results, "conflict", shots, "probe")
        assert max(probe) < 0.2 + 0.1, (shots, probe)  # 5 colours: chance is 0.2
        below = paired_difference(accuracy(results, "conflict", shots, "scratch"), probe)
        assert below["low"] > 0.5, (shots, below)


def test_tuned_fine_tuning_matches_tuned_scratch_on_conflict_with_20_labels_per_class(results):
    """The tour's correction of the old claim "fine-tuning ends below scratch": with each method at its tuned rate,
    the two are within 2 points, seed by seed (an equivalence claim, so it needs the seeds too)."""
    gap = paired_difference(accuracy(results, "conflict", 20, "scratch"), accuracy(results, "conflict", 20, "finetune"))
    assert -0.02 < gap["low"] and gap["high"] < 0.02, gap
