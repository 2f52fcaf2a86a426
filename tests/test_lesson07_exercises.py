"""Lesson 07's exercises: a hand-written LoRA layer judged against peft's, and the cheapest method within a margin."""

import random

import pytest
import torch
from torch import nn

from ftcourse import checks

pytest.importorskip("peft")


def make(scale=lambda alpha, r: alpha / r, b_init=torch.zeros, freeze=True, a_transposed=False):
    class LoRALinear(nn.Module):
        def __init__(self, base, r, alpha):
            super().__init__()
            self.base = base.requires_grad_(not freeze)
            shape = (base.in_features, r) if a_transposed else (r, base.in_features)
            self.lora_A = nn.Parameter(torch.randn(*shape) * 0.01)
            self.a_transposed = a_transposed
            self.lora_B = nn.Parameter(b_init(base.out_features, r))
            self.scaling = scale(alpha, r)

        def forward(self, x):
            a = self.lora_A if self.a_transposed else self.lora_A.T
            return self.base(x) + self.scaling * (x @ a @ self.lora_B.T)
    return LoRALinear


def verdict(exercise_id, fn, seed=3):
    exercise = checks.GRADED[exercise_id]
    inputs = exercise.ask(random.Random(seed))
    return exercise.judge(checks.plain(exercise.answer(fn, inputs)), inputs)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_right_lora_layer_passes_on_any_inputs(seed):
    assert "matches peft" in verdict("07.1", make(), seed)


@pytest.mark.parametrize("wrong, message", [
    (make(scale=lambda alpha, r: alpha), "scale the correction"),
    (make(b_init=torch.ones), "does not start at zero"),
    (make(freeze=False), "freeze the base layer"),
    (make(a_transposed=True), "have shapes"),
])
def test_the_usual_lora_mistakes_fail_with_their_hint(wrong, message):
    with pytest.raises(checks.ExerciseFailed, match=message):
        verdict("07.1", wrong, seed=5)  # r = 2 on these inputs, so a missing alpha / r shows


def test_the_reference_is_peft_and_differs_from_the_frozen_layer_once_b_is_set():
    inputs = checks.GRADED["07.1"].ask(random.Random(0))
    frozen = checks._linear(inputs)(inputs["x"])
    by_hand = frozen + inputs["alpha"] / inputs["r"] * inputs["x"] @ inputs["A"].T @ inputs["B"].T
    assert torch.allclose(checks.peft_lora_output(inputs), by_hand, atol=1e-5)
    assert not torch.allclose(by_hand, frozen, atol=1e-3)


def mean_then_cheapest(rows, margin):
    return checks.cheapest_within(rows, margin)


def best_single_seed(rows, margin):  # looks at seed 0 only
    return checks.cheapest_within([r for r in rows if r["seed"] == 0], margin)


def most_accurate(rows, margin):  # ignores the cost
    means = {}
    for r in rows:
        means.setdefault((r["target"], r["method"]), []).append(r["accuracy"])
    best = {}
    for (target, method), values in means.items():
        if target not in best or sum(values) > sum(means[target, best[target]]):
            best[target] = method
    return best


def test_the_cheapest_method_check_passes_the_right_answer_and_fails_others():
    assert "cheapest method within" in verdict("07.2", mean_then_cheapest)
    failed = 0
    for seed in range(5):  # over several draws, each wrong recipe is caught at least once
        for wrong in (best_single_seed, most_accurate, lambda rows, margin: {"related": "finetune"}):
            try:
                verdict("07.2", wrong, seed)
            except checks.ExerciseFailed:
                failed += 1
    assert failed >= 5 + 5 + 5 - 2, failed


def test_the_cheapest_method_reference_on_a_hand_made_table():
    rows = [{"target": "t", "method": m, "seed": s, "trainable": n, "accuracy": a}
            for m, n, accs in (("finetune", 100, (0.90, 0.92)), ("bitfit", 2, (0.88, 0.89)), ("lora", 5, (0.90, 0.91)),
                               ("probe", 1, (0.50, 0.52)))
            for s, a in enumerate(accs)]
    assert checks.cheapest_within(rows, 0.01) == {"t": "lora"}  # bitfit is 2.5 points below full's 0.91
    assert checks.cheapest_within(rows, 0.03) == {"t": "bitfit"}
    assert checks.cheapest_within(rows, 0.0) == {"t": "finetune"}
