"""Lesson 09's exercise: BERT's masking by hand, judged against DataCollatorForLanguageModeling's statistics."""

import random

import pytest
import torch

from ftcourse import checks


def make(p_choose=0.15, p_mask=0.8, p_random_of_rest=0.5, skip_special=True, labels_everywhere=False,
         change_unchosen=False):
    def mask_tokens(input_ids, special, mask_id, vocab_size, generator):
        labels = input_ids.clone()
        probability = torch.full(input_ids.shape, p_choose)
        if skip_special:
            probability[special] = 0.0
        chosen = torch.bernoulli(probability, generator=generator).bool()
        if not labels_everywhere:
            labels[~chosen] = -100
        inputs = input_ids.clone()
        masked = torch.bernoulli(torch.full(input_ids.shape, p_mask), generator=generator).bool() & chosen
        inputs[masked] = mask_id
        rest = torch.bernoulli(torch.full(input_ids.shape, p_random_of_rest), generator=generator).bool()
        replaced = rest & chosen & ~masked
        inputs[replaced] = torch.randint(vocab_size, input_ids.shape, generator=generator)[replaced]
        if change_unchosen:
            inputs[~chosen & ~special] = (inputs[~chosen & ~special] + 1) % vocab_size
        return inputs, labels
    return mask_tokens


def verdict(fn, seed=3):
    exercise = checks.GRADED["09.1"]
    inputs = exercise.ask(random.Random(seed))
    return exercise.judge(checks.plain(exercise.answer(fn, inputs)), inputs)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_bert_masking_passes_on_any_inputs(seed):
    assert "the collator" in verdict(make(), seed)


@pytest.mark.parametrize("wrong, message", [
    (make(p_choose=0.3), "share 'chosen'"),
    (make(p_mask=1.0), "share 'masked'"),
    (make(p_random_of_rest=1.0), "share 'kept'"),
    (make(skip_special=False), "special tokens"),
    (make(labels_everywhere=True), "labels are set .* at 100%"),
    (make(change_unchosen=True), "were not chosen"),
])
def test_the_usual_masking_mistakes_fail_with_their_hint(wrong, message):
    with pytest.raises(checks.ExerciseFailed, match=message):
        verdict(wrong)


def test_a_function_that_returns_one_tensor_is_told_what_to_return():
    with pytest.raises(checks.ExerciseFailed, match="should return two tensors"):
        verdict(lambda ids, special, mask_id, vocab, g: ids)
