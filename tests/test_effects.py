"""The effects the transfer lab exists to show, measured on the CPU at the cpu profile's sizes, 3 seeds each.

These are the claims the course's notebooks make about the lab, checked on fresh runs from the shipped checkpoint.
"""

import pytest

from ftcourse import experiments, models
from ftcourse.env import PROFILES

pytestmark = pytest.mark.slow  # minutes of training at the cpu profile's sizes

SIZES = PROFILES["cpu"]
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def results():
    pretrained = models.pretrained("lab")
    rows = experiments.compare("related", (5, 80), methods=("scratch", "finetune"), seeds=SEEDS,
                               steps=SIZES.steps, batch_size=SIZES.batch_size,
                               test_per_class=SIZES.test_per_class, pretrained=pretrained)
    rows += experiments.compare("conflict", (5, 80), seeds=SEEDS, steps=SIZES.steps, batch_size=SIZES.batch_size,
                                test_per_class=SIZES.test_per_class, pretrained=pretrained)
    return {(r["task"], r["shots"], r["method"], r["seed"]): r["accuracy"] for r in rows}


def accuracy(results, task, shots, method):
    return [results[(task, shots, method, seed)] for seed in SEEDS]


def mean(values):
    return sum(values) / len(values)


def test_fine_tuning_beats_scratch_by_15_points_with_5_labels_per_class_on_related(results):
    gains = [f - s for f, s in zip(accuracy(results, "related", 5, "finetune"), accuracy(results, "related", 5,
                                                                                          "scratch"))]
    assert min(gains) >= 0.15, gains


def test_a_linear_probe_is_20_points_below_scratch_on_conflict(results):
    for shots in (5, 80):
        gaps = [s - p for s, p in zip(accuracy(results, "conflict", shots, "scratch"),
                                      accuracy(results, "conflict", shots, "probe"))]
        assert min(gaps) >= 0.20, (shots, gaps)


def test_fine_tuning_ends_below_scratch_on_conflict_for_every_seed(results):
    ntg = [s - f for s, f in zip(accuracy(results, "conflict", 5, "scratch"),
                                 accuracy(results, "conflict", 5, "finetune"))]  # err(ft) - err(scratch)
    assert min(ntg) > 0, ntg


def test_the_advantage_of_fine_tuning_on_related_shrinks_as_labels_grow(results):
    def advantage(shots):
        return mean(accuracy(results, "related", shots, "finetune")) - mean(accuracy(results, "related", shots,
                                                                                     "scratch"))
    assert advantage(5) > advantage(80) + 0.10, (advantage(5), advantage(80))


def test_the_negative_transfer_gap_on_conflict_changes_with_target_size(results):
    """Reported as measured: in this lab the gap shrinks as labels grow (fine-tuning catches up with scratch)."""
    def ntg(shots):
        return mean(accuracy(results, "conflict", shots, "scratch")) - mean(accuracy(results, "conflict", shots,
                                                                                      "finetune"))
    assert ntg(5) > ntg(80) + 0.05, (ntg(5), ntg(80))
