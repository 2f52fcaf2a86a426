"""The central claim of every lesson (01-05, 07-09), measured on fresh runs at the cpu profile's sizes, on seeds the
lessons were not written on.

COURSE.md: each lesson's central claim is also a test at cpu sizes, because the quick profile that CI runs the
notebooks in cannot show effects. Every comparison follows the fair-comparison protocol: each method at its own rate
chosen on validation (``lr="tuned"``), 3 seeds, and a claim "A beats B" is a paired difference over seeds whose 90%
interval lies above the margin (:func:`ftcourse.stats.paired_difference`); "A matches B" is an interval inside
±margin. Tuned runs go to one session-wide cache (``tuning_cache``), so a run that two tests share is trained once.

The seeds are disjoint from the lessons' own (0, 1, 2) and from the second set the course checks every lesson with
(3, 4, 5): a claim that holds only for the seeds it was written on is not a finding. The lessons check more (every
size, every remedy, every score); these are the central claims, at the smallest sizes that still make them, to keep
the suite short.
"""

import statistics

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from ftcourse import experiments, lab, measure, models
from ftcourse.env import PROFILES
from ftcourse.stats import paired_difference

pytestmark = pytest.mark.slow  # minutes of training at the cpu profile's sizes

SIZES = PROFILES["cpu"]
SEEDS = (6, 7, 8)  # disjoint from the lessons' seeds (0, 1, 2) and the course's second set (3, 4, 5)
MORE_SEEDS = (6, 7, 8, 9, 10, 11)  # where three seeds spread too widely to settle a real effect, and runs are cheap
NINE_SEEDS = tuple(range(6, 15))  # where one seed in six can fail whole
assert not set(NINE_SEEDS) & {*SIZES.seeds, 3, 4, 5}
RUN = {"steps": SIZES.steps, "batch_size": SIZES.batch_size}


def target(name, shots, seed, **kwargs):
    return lab.target(name, shots, test_per_class=SIZES.test_per_class, seed=seed, **kwargs)


@pytest.fixture(scope="module")
def pretrained():
    return models.pretrained("lab")


def tuned(task, method, seed, cache, **kwargs):
    return experiments.run(task, method, seed=seed, lr="tuned", cache=cache, **{**RUN, **kwargs})


# --- lesson 01 -----------------------------------------------------------------------------------------------------

def test_fine_tuning_reaches_80_percent_validation_accuracy_in_fewer_steps_than_scratch(pretrained, tuning_cache):
    """Lesson 01's compute claim, counted in optimiser steps (each method at its rate chosen on val, 80 labels)."""
    budget, reach = 2 * SIZES.steps, {"scratch": [], "finetune": []}
    for seed in SEEDS:
        task = target("related", 80, seed)
        for method in reach:
            lr = tuned(task, method, seed, tuning_cache, pretrained=pretrained)["lr"]
            history = experiments.run(task, method, pretrained=pretrained, seed=seed, lr=lr, val=task.val,
                                      sync_every=10, steps=budget, batch_size=SIZES.batch_size)["history"]
            reach[method].append(next((s for s, a in zip(history.log_step, history.val_acc) if a >= 0.8), budget))
    saved = paired_difference(reach["scratch"], reach["finetune"])
    assert saved["low"] > 0, reach


# --- lesson 02 -----------------------------------------------------------------------------------------------------

def test_frozen_copied_stages_lose_colour_with_depth_on_the_conflicting_target(pretrained):
    """Lesson 02 (rate 0.05 for every point, as in the lesson): AnB with one stage copied keeps colour learnable,
    with every stage copied and frozen it is near chance, seed by seed."""
    accuracy = {n: [experiments.copied_stages_run(target("conflict", 20, seed), n, fine_tune=False,
                                                  pretrained=pretrained, seed=seed, lr=0.05, **RUN)["accuracy"]
                    for seed in SEEDS] for n in (1, 5)}
    loss = paired_difference(accuracy[1], accuracy[5])
    assert loss["low"] > 0.3 and max(accuracy[5]) < 0.4, accuracy


# --- lesson 03 -----------------------------------------------------------------------------------------------------

def test_on_the_related_target_fine_tuning_chooses_a_lower_rate_than_scratch(pretrained, tuning_cache):
    rates = {method: [tuned(target("related", 20, seed), method, seed, tuning_cache, pretrained=pretrained)["lr"]
                      for seed in SEEDS] for method in ("scratch", "finetune")}
    log_ratio = paired_difference(np.log10(rates["scratch"]), np.log10(rates["finetune"]))
    assert log_ratio["mean"] > 0, rates  # geometric mean of the chosen rates: fine-tuning's is lower


# --- lesson 04 -----------------------------------------------------------------------------------------------------

def test_negative_transfer_on_the_conflicting_target_is_the_conventional_rate_not_the_source(pretrained,
                                                                                             tuning_cache):
    """Lesson 04's central claim at r = 0: with 5 labels per class, fine-tuning at the conventional rate (0.01,
    reported on purpose next to the tuning) makes more errors than tuned scratch, seed by seed; with 20, fine-tuning
    at its tuned rate is within 5 points of tuned scratch. (With 20 labels the conventional gap is positive on average
    on these seeds too, but one seed's is 0.03 and three seeds do not settle it.)"""
    usual = experiments.DEFAULT_LR["finetune"]
    errors = {}
    for shots in (5, 20):
        for seed in SEEDS:
            task = target("mixed", shots, seed, relatedness=0.0)
            result = tuned(task, "finetune", seed, tuning_cache, pretrained=pretrained, report=[usual])
            errors.setdefault((shots, "scratch"), []).append(
                tuned(task, "scratch", seed, tuning_cache, pretrained=pretrained)["error"])
            errors.setdefault((shots, "tuned"), []).append(result["error"])
            errors.setdefault((shots, "conventional"), []).append(1 - result["reported"][usual]["accuracy"])
    assert paired_difference(errors[5, "conventional"], errors[5, "scratch"])["low"] > 0, errors
    gap = paired_difference(errors[20, "tuned"], errors[20, "scratch"])
    assert -0.05 < gap["low"] and gap["high"] < 0.05, gap


# --- lesson 05 -----------------------------------------------------------------------------------------------------

def test_logme_ranks_the_sources_like_tuned_fine_tuning_on_the_related_target(tuning_cache):
    sources = ["lab", "lab-early", "lab-textures", "lab-colours", "random"]
    logme, accuracy = [], []
    for name in sources:
        scores, accuracies = [], []
        for seed in SEEDS:
            torch.manual_seed(0)
            model = models.resnet(**models.pretrained("lab").config) if name == "random" else models.pretrained(name)
            task = target("related", 20, seed)
            scores.append(measure.transferability(model, task.train)["logme"])
            accuracies.append(tuned(task, "finetune", seed, tuning_cache, pretrained=model)["accuracy"])
        logme.append(statistics.mean(scores))
        accuracy.append(statistics.mean(accuracies))
    assert kendalltau(logme, accuracy).statistic >= 0.6, (logme, accuracy)
    assert sources[logme.index(max(logme))] == sources[accuracy.index(max(accuracy))] == "lab", (logme, accuracy)


def test_fine_tuning_changes_the_stem_least_and_the_top_most_on_the_conflicting_target(pretrained, tuning_cache):
    similarity = {}
    for name in ("related", "conflict"):
        task = target(name, 20, 0)
        lr = tuned(task, "finetune", 0, tuning_cache, pretrained=pretrained)["lr"]
        finetuned = experiments.run(task, "finetune", pretrained=pretrained, lr=lr, **RUN)["model"]
        similarity[name] = {stage: measure.cka(measure.features(pretrained, task.test, stage),
                                               measure.features(finetuned, task.test, stage))
                            for stage in pretrained.stage_names[:-1]}
    for values in similarity.values():
        assert values["stem"] == max(values.values()), similarity
    assert similarity["conflict"]["layer4"] < similarity["related"]["layer4"] - 0.3, similarity


# --- lesson 07 -----------------------------------------------------------------------------------------------------

def test_which_stage_to_tune_depends_on_the_shift(pretrained, tuning_cache):
    """Lesson 07's central claim, Lee et al.'s (ICLR 2023) pattern: on the input-level shift (``shifted``) tuning the
    stem alone beats tuning the last stage alone, and on new classes (``related``) it is the other way round, seed by
    seed, each method at its rate chosen on validation (the lesson's protocol, 20 labels per class). Nine seeds: on
    seed 8 stem-only tuning reaches only 0.58 on ``shifted`` (0.98 on seeds 6 and 7) with one thread, and on six
    seeds with two threads the interval's low end was -0.009 (mean +0.150): one whole failure in six is too wide a
    spread for a small sample."""
    rows = experiments.efficient_comparison(["shifted", "related"], ["surgical:stem", "last stage"], shots=[20],
                                            seeds=NINE_SEEDS, pretrained=pretrained, lr_grid=(0.03, 0.1, 0.3),
                                            cache=tuning_cache, test_per_class=SIZES.test_per_class, **RUN)

    def accuracy(target, method):
        return rows[(rows["target"] == target) & (rows["method"] == method)].sort_values("seed")["accuracy"].tolist()

    stem_first = paired_difference(accuracy("shifted", "surgical:stem"), accuracy("shifted", "last stage"))
    assert stem_first["low"] > 0, (stem_first, rows)
    last_first = paired_difference(accuracy("related", "last stage"), accuracy("related", "surgical:stem"))
    assert last_first["low"] > 0, last_first


# --- lesson 08 -----------------------------------------------------------------------------------------------------

def test_pretraining_on_classification_helps_segmentation_of_new_shapes(pretrained, tuning_cache):
    """Lesson 08's central claim: with 16 labelled scenes of new shapes, an FCN on the fine-tuned lab backbone beats
    the same network trained from scratch by more than 0.05 mIoU, seed by seed, each at its rate chosen on validation
    (the lesson's protocol and budget: 80 steps of 16). Six seeds: on seed 6 every method collapses to predicting
    the background within 80 steps (its shapes cover 6% of the pixels), too wide a spread for three."""
    rows = experiments.dense_comparison("segmentation", ["related"], shots=[16], seeds=MORE_SEEDS,
                                        methods=["scratch", "finetune"], pretrained=pretrained, steps=80,
                                        batch_size=16, n_val=64, n_test=256, lr_grid=(0.03, 0.1, 0.3),
                                        cache=tuning_cache)

    def miou(method):
        return rows[rows["method"] == method].sort_values("seed")["score"].tolist()

    helps = paired_difference(miou("finetune"), miou("scratch"))
    assert helps["low"] > 0.05, helps


# --- lesson 09 -----------------------------------------------------------------------------------------------------

def test_fine_tuning_the_text_labs_bert_beats_its_linear_probe_on_negation_with_32_labels():
    """Lesson 09's central claim at its cpu sizes: on `negation`, the target built to conflict with pretraining, the
    pretrained features read by a linear probe do not carry the task, and fine-tuning the shipped BERT learns it:
    with 32 labels per class, fine-tuning beats the probe by more than 10 points, each seed at its own rate chosen
    on val, paired over 3 seeds."""
    from ftcourse import text

    rows = text.comparison(["negation"], [32], ["probe", "finetune"], seeds=SEEDS, steps=100, batch_size=32,
                           test_per_class=50)
    accuracy = {m: rows[rows["method"] == m].sort_values("seed")["accuracy"].to_numpy() for m in ("probe",
                                                                                                 "finetune")}
    assert paired_difference(accuracy["finetune"], accuracy["probe"])["low"] > 0.1, rows
