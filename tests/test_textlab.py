"""The text lab: sentences follow the grammar, factors are what the grammar says, tasks are balanced, deterministic
and split apart, and the tokenizer round-trips."""

import pytest

from ftcourse import textlab


def test_the_corpus_is_deterministic_from_its_seed():
    assert textlab.corpus(50, seed=3) == textlab.corpus(50, seed=3)
    assert textlab.corpus(50, seed=3) != textlab.corpus(50, seed=4)


def test_the_corpus_uses_exactly_the_grammars_vocabulary():
    words = {w for text in textlab.corpus(5000) for w in text.split()}
    assert words == set(textlab.vocabulary())


def test_the_verb_agrees_with_the_subject_in_the_corpus():
    singular = {s for s, _ in textlab.VERBS}
    for text in textlab.corpus(500):
        noun, verb = text.split()[1:3]
        assert (verb in singular) == (not noun.endswith("s") or noun in {"bus"})


def test_negation_is_independent_of_topic_and_sentiment_in_the_corpus():
    import random

    rng = random.Random(0)
    drawn = [textlab.sentence(rng) for _ in range(4000)]
    for positive in (False, True):
        share = sum(s.negated for s in drawn if s.positive == positive) / sum(s.positive == positive for s in drawn)
        assert 0.45 < share < 0.55


@pytest.mark.parametrize("name", list(textlab.TARGETS))
def test_every_target_is_balanced_and_its_labels_follow_the_factors(name):
    task = textlab.target(name, 7, test_per_class=11)
    for split, per_class in ((task.train, 7), (task.val, 10), (task.test, 11)):
        assert [split.labels.count(k) for k in range(task.num_classes)] == [per_class] * task.num_classes
        assert all(textlab.label_of(name, s) == y for s, y in zip(split.factors, split.labels))


def test_the_negation_label_flips_with_not():
    task = textlab.target("negation", 50)
    for s, y in zip(task.train.factors, task.train.labels):
        assert y == (s.positive != ("not" in s.text.split()))


def test_splits_are_disjoint_and_a_bigger_train_set_keeps_val_and_test():
    small, big = textlab.target("topic", 5), textlab.target("topic", 40, val_per_class=10)
    assert small.val.texts == big.val.texts and small.test.texts == big.test.texts
    shared = set(big.train.texts) & set(big.test.texts)  # drawn apart; the language is small, so a few repeat
    assert len(shared) < 0.05 * len(set(big.test.texts))
    assert textlab.target("topic", 5, seed=1).train.texts != small.train.texts


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="Unknown text-lab target 'colour'; choose one of"):
        textlab.target("colour", 5)
    with pytest.raises(ValueError, match="shots must be a whole number of sentences"):
        textlab.target("topic", 0)


def test_the_tokenizer_round_trips_and_pads_with_cls_and_sep():
    texts = textlab.corpus(300)
    tokenizer = textlab.train_tokenizer(texts)
    assert len(tokenizer) == len(textlab.vocabulary()) + len(textlab.SPECIAL_TOKENS)
    batch = tokenizer(texts[:2], padding="max_length")
    ids = batch["input_ids"][0]
    assert len(ids) == textlab.MAX_LENGTH and ids[0] == tokenizer.cls_token_id
    words = texts[0].split()
    assert tokenizer.convert_ids_to_tokens(ids[1:len(words) + 1]) == words
    assert ids[len(words) + 1] == tokenizer.sep_token_id and ids[-1] == tokenizer.pad_token_id
    assert tokenizer("the soup is purple")["input_ids"][4] == tokenizer.unk_token_id
