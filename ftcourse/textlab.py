"""The text lab: a procedural language whose every factor is known, for transfer learning on text.

No pretrained language model can be downloaded offline, so the course does for text what :mod:`ftcourse.lab` does
for images. Every sentence is generated from latent factors,

    topic (food, sport, music, weather), number (singular, plural), sentiment (positive, negative), negation,

by one small grammar, deterministically from a seed::

    the  soups  are  not  fresh and tasty  in the kitchen .
    det  NOUN   VERB [not] ADJ   and ADJ   in the PLACE   .

The grammar ties the factors to the words in ways a masked language model (MLM, Devlin et al., NAACL 2019) must
learn to fill in a masked word, or not:

- **topic**: the noun, both adjectives and the place all come from the sentence's topic, so a masked noun is
  predicted from the place and the adjectives. Pretraining had to model topic.
- **agreement**: the verb agrees with the subject's number (``the soup is`` / ``the soups are``), so a masked verb
  is predicted from the noun. Pretraining had to model number and agreement.
- **sentiment**: the two adjectives have the same polarity, so a masked adjective is predicted from the other one.
  Pretraining had to model sentiment.
- **negation**: ``not`` is inserted with probability 1/2, independently of everything else. Nothing in the sentence
  predicts it and it predicts nothing, so for MLM it is noise, as colour is for the image lab's source.

The pretraining corpus, :func:`corpus`, holds such sentences, unlabelled. The target tasks (:func:`target`) are
classification tasks of graded relatedness to that pretraining:

- ``"topic"`` (4 classes) and ``"sentiment"`` (2: the adjectives' polarity): factors pretraining had to model.
- ``"agreement"`` (2: does the verb agree with the subject?): half of its sentences break agreement, which the
  corpus never does; telling them apart needs the agreement that MLM learned.
- ``"order"`` (2): is the place phrase at the end (as in the corpus) or moved to the front (``in the kitchen the
  soups are ...``), a construction the corpus never shows: a factor pretraining never needed.
- ``"negation"`` (2: is the sentence, *as a whole*, positive?): the adjectives' polarity flipped by ``not``. The
  label hangs on the word pretraining learned to treat as noise: the conflicting target.

:func:`train_tokenizer` trains a Hugging Face ``tokenizers`` word-level tokenizer on the corpus (the language has a
closed vocabulary of 81 words, so words are the honest unit; a real corpus needs sub-words, e.g. WordPiece or
BPE) and wraps it as a ``transformers`` tokenizer, ``[CLS] sentence [SEP]`` with padding to a fixed length.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

TOPICS = {  # topic -> (nouns, places, positive adjectives, negative adjectives); nouns take "s" in the plural
    "food": (("soup", "bread", "cake", "pie"), ("kitchen", "cafe", "market"),
             ("tasty", "fresh", "sweet"), ("stale", "bland", "burnt")),
    "sport": (("goal", "team", "race", "game"), ("stadium", "park", "arena"),
              ("thrilling", "fast", "strong"), ("dull", "slow", "sloppy")),
    "music": (("song", "band", "album", "concert"), ("hall", "club", "studio"),
              ("catchy", "lovely", "lively"), ("noisy", "boring", "harsh")),
    "weather": (("morning", "storm", "breeze", "cloud"), ("valley", "harbour", "village"),
                ("mild", "bright", "calm"), ("cold", "grim", "wild")),
}
VERBS = (("is", "are"), ("seems", "seem"), ("looks", "look"), ("feels", "feel"))  # (singular, plural)
NEGATION = "not"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_LENGTH = 16  # tokens, [CLS] and [SEP] included: the longest sentence has 12 words

TARGETS = {  # name -> (class names, what the target is)
    "topic": (tuple(TOPICS), "the sentence's topic: pretraining had to model it"),
    "sentiment": (("negative", "positive"), "the adjectives' polarity: pretraining had to model it"),
    "agreement": (("broken", "agrees"), "does the verb agree with the subject? the corpus always agrees"),
    "order": (("place last", "place first"), "where the place phrase is: the corpus never moves it"),
    "negation": (("negative", "positive"), "the meaning, the adjectives' polarity flipped by 'not': the label hangs "
                                           "on the word pretraining learned to ignore"),
}


@dataclass
class Sentence:
    """One generated sentence and the factors it was generated from."""

    text: str
    topic: int
    plural: bool
    positive: bool  # the adjectives' polarity
    negated: bool
    agrees: bool = True
    place_first: bool = False


def sentence(rng: random.Random, *, agrees: bool = True, place_first: bool = False,
             negated: bool | None = None) -> Sentence:
    """Draw one sentence from the grammar with the random stream ``rng``; the keywords fix factors the corpus never
    varies (``agrees``, ``place_first``) or one it draws at random (``negated``)."""
    topic = rng.randrange(len(TOPICS))
    nouns, places, good, bad = TOPICS[list(TOPICS)[topic]]
    plural, positive = rng.random() < 0.5, rng.random() < 0.5
    negated = rng.random() < 0.5 if negated is None else negated
    noun = rng.choice(nouns) + ("s" if plural else "")
    verb = rng.choice(VERBS)[plural if agrees else not plural]
    first, second = rng.sample(good if positive else bad, 2)
    clause = ["the", noun, verb, *([NEGATION] if negated else []), first, "and", second]
    place = ["in", "the", rng.choice(places)]
    words = [*place, *clause, "."] if place_first else [*clause, *place, "."]
    return Sentence(" ".join(words), topic, plural, positive, negated, agrees, place_first)


def corpus(n: int = 20_000, seed: int = 0) -> list[str]:
    """``n`` unlabelled sentences for masked-language-model pretraining: topic, number, sentiment and negation drawn
    at random; the verb always agrees and the place phrase always comes last."""
    _check_count(n, "n")
    rng = random.Random(f"text-lab corpus {seed}")
    return [sentence(rng).text for _ in range(n)]


@dataclass
class TextSplit:
    """Sentences and their labels (class indices); ``factors`` keeps the :class:`Sentence` records."""

    texts: list[str]
    labels: list[int]
    factors: list[Sentence] = field(repr=False, default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class TextTask:
    """A text-lab target: train / val / test splits, the class names and what the task is."""

    name: str
    classes: tuple[str, ...]
    about: str
    train: TextSplit
    val: TextSplit
    test: TextSplit

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def show(self, n: int = 6) -> None:
        """Print the first ``n`` training sentences with their labels."""
        for text, label in zip(self.train.texts[:n], self.train.labels[:n]):
            print(f"{self.classes[label]:>12}  {text}")


def target(name: str, shots: int, *, val_per_class: int | None = None, test_per_class: int = 100,
           seed: int = 0) -> TextTask:
    """The target task ``name`` (one of :data:`TARGETS`) with ``shots`` training sentences per class, and
    ``val_per_class`` (default: as many as training, at least 10) and ``test_per_class`` per class held out. Each
    split comes from its own random stream, so a bigger training set keeps the same validation and test sets. The
    language has about 9,000 distinct sentences (twice as many in ``order``, whose sentences with the place first are new),
    so a test sentence is now and then also a training one, as in real data sets; the pretraining corpus holds
    most of them, without labels."""
    if name not in TARGETS:
        raise ValueError(f"Unknown text-lab target {name!r}; choose one of {list(TARGETS)}.")
    _check_count(shots, "shots")
    _check_count(test_per_class, "test_per_class")
    val_per_class = max(10, shots) if val_per_class is None else val_per_class
    _check_count(val_per_class, "val_per_class")
    classes, about = TARGETS[name]
    splits = [_split(name, len(classes), count, f"text-lab {name} {part} {seed}")
              for part, count in (("train", shots), ("val", val_per_class), ("test", test_per_class))]
    return TextTask(name, classes, about, *splits)


def label_of(name: str, s: Sentence) -> int:
    """The class index of sentence ``s`` in target ``name``."""
    return {"topic": s.topic, "sentiment": int(s.positive), "agreement": int(s.agrees),
            "order": int(s.place_first), "negation": int(s.positive != s.negated)}[name]


def _split(name: str, num_classes: int, per_class: int, stream: str) -> TextSplit:
    """``per_class`` sentences of each class, drawn until every class is full, in a shuffled order."""
    rng = random.Random(stream)
    wanted = {label: per_class for label in range(num_classes)}
    drawn = []
    while any(wanted.values()):
        forced = {"agreement": {"agrees": rng.random() < 0.5}, "order": {"place_first": rng.random() < 0.5}}
        s = sentence(rng, **forced.get(name, {}))
        label = label_of(name, s)
        if wanted[label]:
            wanted[label] -= 1
            drawn.append((s, label))
    rng.shuffle(drawn)
    return TextSplit([s.text for s, _ in drawn], [label for _, label in drawn], [s for s, _ in drawn])


def _check_count(value, what: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a whole number of sentences, at least 1 (got {value!r}).")


def vocabulary() -> list[str]:
    """Every word the grammar can produce (sorted): the corpus uses each of them."""
    words = {"the", "and", "in", ".", NEGATION, *(w for pair in VERBS for w in pair)}
    for nouns, places, good, bad in TOPICS.values():
        words.update(nouns, (noun + "s" for noun in nouns), places, good, bad)
    return sorted(words)


def train_tokenizer(texts: list[str], max_length: int = MAX_LENGTH):
    """A word-level tokenizer trained on ``texts`` with Hugging Face ``tokenizers``, wrapped as a ``transformers``
    ``PreTrainedTokenizerFast``: splits on spaces, adds ``[CLS]`` and ``[SEP]``, maps unseen words to ``[UNK]``.
    Ids are given in order of frequency (specials first), so the same texts give the same ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise ValueError("train_tokenizer needs some texts to learn the vocabulary from (got none).")
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=max_length)
