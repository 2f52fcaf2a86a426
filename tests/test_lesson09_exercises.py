"""Lesson 09's exercises: BERT's masking by hand, judged against DataCollatorForLanguageModeling's statistics; LoRA
on a classifier with peft, judged against the course's own recipe (text.lora)."""

import random

import pytest
import torch

from ftcourse import checks, text


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


def right_lora(model, rank, alpha, *, targets=("query", "value"), head=True, everything=False):
    """Exercise 09.2's answer; the keywords give its usual slips."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0,
                        modules_to_save=text.head_names(model) if head else None)
    wrapped = get_peft_model(model, config)
    if everything:
        wrapped.requires_grad_(True)
    return wrapped


def test_a_right_lora_classifier_passes(capsys):
    checks.check_lora_classifier(right_lora)
    assert "PASSED exercise 09.2" in capsys.readouterr().out


@pytest.mark.parametrize("slip, hint", [
    (dict(head=False), "modules_to_save=\\['classifier', 'pooler'\\]"),
    (dict(targets=("query", "key", "value")), "query and value projections"),
    (dict(everything=True), "do not set requires_grad yourself"),
])
def test_each_usual_lora_slip_gets_its_own_hint(slip, hint):
    with pytest.raises(checks.ExerciseFailed, match=hint):
        checks.check_lora_classifier(lambda model, rank, alpha: right_lora(model, rank, alpha, **slip))


def test_a_lora_of_another_rank_or_no_peft_model_is_named():
    with pytest.raises(checks.ExerciseFailed, match="LoraConfig\\(r=rank, lora_alpha=alpha"):
        checks.check_lora_classifier(lambda model, rank, alpha: right_lora(model, 2 * rank, alpha))
    with pytest.raises(checks.ExerciseFailed, match="wrap the classifier with peft"):
        checks.check_lora_classifier(lambda model, rank, alpha: model)


def test_the_reference_trains_what_text_lora_trains():
    """09.2 teaches the course's own recipe: the learner's LoRA trains exactly text.lora's parameters."""
    mine = right_lora(text.classifier("finetune", 3), 4, 8)
    course = text.lora(text.classifier("finetune", 3), 4, 8)
    assert ({n for n, p in mine.named_parameters() if p.requires_grad}
            == {n for n, p in course.named_parameters() if p.requires_grad})
