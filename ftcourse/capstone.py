"""The capstone's target: a new task from the lab whose exact definition, and test set, come from a secret.

Like a Kaggle competition, the capstone has a public *practice* variant and a private one. Both are the same kind of
task: 5 classes, 5 labelled training images per class, each class shown either by a new shape (colour random) or by
a colour (shape random). The secret decides the target's **kind** (:data:`KINDS`): a *shape* target shows 80% of each
class's images by its shape, a *colour* target 80% by its colour -- so which shipped source fits changes from one
secret to the next, and a recipe must find out from the 25 training images. It also decides which shape and which
colour stand for which class, where the 5 class colours sit on the colour wheel, and which images are drawn. The
notebook develops on two public practice targets, one of each kind (:func:`practice`); ``ftcourse grade`` uses the
course secret and hands the recipe only the training images of :func:`target`. Nobody can rebuild the test
set, and a model trained on the practice data learns the wrong pairings.

The grade is a score, not only a pass (:func:`score`): nothing below the kind's pass mark, half the points at it,
all of them at its full mark (:data:`MARKS`). Both were calibrated on a 2-core CPU over 8 secrets of each kind x 3
seeds (:data:`CALIBRATION`, ``benchmarks/capstone.py``): the source that does not fit the kind fails it (``lab`` on a
colour target passed 1 run of 24, ``lab-colours`` on a shape one none); training from scratch fails the shape targets
and earns most of the points on colour ones (colour is easy to learn from 25 images); always fine-tuning ``lab``, the
obvious default, gets full marks on shape targets and fails colour ones; choosing the source on the 25 training
images by LogME (lesson 05) among every shipped lab checkpoint and fine-tuning it gets full marks on all 48 runs
(the full marks sit just below its lowest accuracy on each kind). The self-supervised ``lab-simclr`` passes every
shape target and fails every colour one, like ``lab``. Packing a colour target's class colours closer together
(hues 0.1 apart) was tried to make scratch fail: it lowered scratch (mean 0.645, up to 0.764) and the careful recipe
(0.773, down to 0.654) alike, and no mark separated them, so the colour kind keeps its colours round the wheel.
"""

from __future__ import annotations

import hashlib
import math
import random

import torch

from . import lab
from .data import ImageData

CLASSES = 5
SHOTS = 5  # labelled training images per class
TEST_PER_CLASS = 100
KINDS = {"shape": 0.8, "colour": 0.2}  # per kind of target: the share of a class's images that show it by its shape
BUDGET = 3200  # training images a recipe may use: 100 steps of 32
PRACTICE_SECRETS = {"shape": 2027, "colour": 2026}  # public: one practice target of each kind
MARKS = {  # per kind of target: (the pass mark, half the points; the full mark, all of them) in test accuracy
    "shape": (0.50, 0.62),
    "colour": (0.60, 0.77),
}
JUSTIFICATION_TEMPLATE = (  # the capstone notebook's justification cell as handed out (tests/test_capstone.py)
    "## Your justification\n\n*Replace this text with a few sentences: which source and method your recipe uses, what "
    "in your exploration\nmade you choose them, how it copes with a target of either kind, and how you chose the "
    "rate and the steps.\nYour teacher reads it against the rubric in `capstone.RUBRIC`, which the grade table "
    "shows beside it.*")
RUBRIC = {  # what the teacher reads the justification for; the grade table shows it beside the justification
    "source": "says which source it fine-tunes and why, from evidence on the 25 training images (a transferability "
              "score, or accuracy on held-out training images), not from the practice target's test set",
    "kinds": "says how the recipe copes with a target of either kind (shape or colour), and what it does when the "
             "evidence is unclear",
    "rate and budget": "says how the rate and the steps were chosen within the budget (a split of the training "
                       "images, a range test, a lesson's finding), and what it did not try",
}
ASSIGNMENT = "10"  # the capstone comes after the lessons; its one exercise is 10.1
EXERCISE = ASSIGNMENT + ".1"
CALIBRATION = {  # test accuracy (mean, lowest, highest), 8 secrets of the kind x seeds 0-2: benchmarks/capstone.py
    ("shape", "scratch"): (0.310, 0.244, 0.374),
    ("shape", "fine-tune lab"): (0.712, 0.642, 0.776),
    ("shape", "fine-tune lab-colours"): (0.274, 0.208, 0.352),
    ("shape", "fine-tune lab-simclr"): (0.697, 0.600, 0.820),
    ("shape", "chosen by LogME"): (0.681, 0.624, 0.744),  # the solution's recipe: it chose lab, lab-early or lab-simclr
    ("shape", "chosen by LEEP"): (0.647, 0.322, 0.744),  # chose lab-colours on one secret
    ("colour", "scratch"): (0.730, 0.660, 0.822),
    ("colour", "fine-tune lab"): (0.487, 0.364, 0.614),
    ("colour", "fine-tune lab-colours"): (0.815, 0.770, 0.848),
    ("colour", "fine-tune lab-simclr"): (0.332, 0.272, 0.420),
    ("colour", "chosen by LogME"): (0.815, 0.770, 0.848),  # chose lab-colours on every secret
}


def stream_seed(secret: int, stream: str) -> int:
    """A seed for one random stream of the secret (``"definition"``, ``"train"``, ``"test"``): the first 8 bytes of
    ``sha256(secret/stream)``. Every bit of the secret changes every stream, and no stream's seed tells anything
    about another's: knowing the training images' seed (torch's CPU generator keeps 32 bits of it, so a search
    could find it) does not bring the test images' any nearer."""
    digest = hashlib.sha256(f"ftcourse capstone/{int(secret)}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def definition(secret: int) -> dict:
    """What the secret decides: the target's kind (:data:`KINDS`), and for each class its shape (one of the lab's
    new shapes) and its hue. Drawn with Python's ``random.Random`` seeded by the whole 64-bit stream seed (torch's
    CPU generator would keep 32 bits)."""
    rng = random.Random(stream_seed(secret, "definition"))
    shapes = rng.sample(range(len(lab.NEW_SHAPES)), CLASSES)
    offset = rng.random() / CLASSES  # the class colours turn round the wheel together
    hues = [(k / CLASSES + offset) % 1.0 for k in rng.sample(range(CLASSES), CLASSES)]
    kind = sorted(KINDS)[rng.randrange(len(KINDS))]
    return {"kind": kind, "shapes": [len(lab.SOURCE_SHAPES) + s for s in shapes], "hues": [round(h, 4) for h in hues]}


def images(secret: int, n_per_class: int, split: str) -> ImageData:
    """``n_per_class`` images per class of the secret's target, from the split's own random stream.

    The classes are named ``class 0`` ... ``class 4``: a name that said the shape and hue would hand the secret
    definition to the recipe, which could then draw as many correctly labelled images as it liked."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    rule = definition(secret)
    g = torch.Generator().manual_seed(stream_seed(secret, split))
    n = n_per_class * CLASSES
    labels = torch.arange(n) % CLASSES
    f = lab.sample_factors(n, g)
    by_shape = torch.rand(n, generator=g) < KINDS[rule["kind"]]
    shapes, hues = torch.tensor(rule["shapes"]), torch.tensor(rule["hues"])
    f["shape"] = torch.where(by_shape, shapes[labels], f["shape"])
    hue = (hues[labels] + (torch.rand(n, generator=g) - 0.5) * 0.08) % 1.0
    f["hue"] = torch.where(by_shape, f["hue"], hue)
    f["saturation"] = torch.where(by_shape, f["saturation"], 0.75 + 0.25 * torch.rand(n, generator=g))
    parts = [lab.render({k: t[i:i + lab.BLOCK] for k, t in f.items()}) for i in range(0, n, lab.BLOCK)]
    return ImageData(torch.cat(parts), labels, [f"class {k}" for k in range(CLASSES)])


NETWORK = {"num_classes": CLASSES, "width": 16, "blocks": (1, 1, 1, 1), "stem_stride": 2}  # every lab checkpoint's


def network():
    """The network a recipe must return, untrained: the lab checkpoints' architecture (:func:`models.resnet` with
    :data:`NETWORK`) with a head of :data:`CLASSES` outputs. The grader builds this one network and loads a recipe's
    weights into it; it never builds a network that a returned checkpoint describes (which could ask for any size)."""
    from . import models

    return models.resnet(**NETWORK)


def target(secret: int) -> tuple[ImageData, ImageData]:
    """The secret's training images (all a recipe may learn from) and its test set (only the grader sees it)."""
    return images(secret, SHOTS, "train"), images(secret, TEST_PER_CLASS, "test")


def practice(kind: str = "shape") -> tuple[ImageData, ImageData]:
    """A public practice target of ``kind`` ("shape" or "colour"; :data:`PRACTICE_SECRETS`): the same task as the
    secret one, with other pairings and images."""
    if kind not in PRACTICE_SECRETS:
        raise ValueError(f"kind must be one of {sorted(PRACTICE_SECRETS)}, got {kind!r}.")
    return target(PRACTICE_SECRETS[kind])


def score(accuracy: float, kind: str) -> float:
    """The capstone's share of its points for a test accuracy on a target of ``kind``: 0 below the kind's pass mark,
    one half at it, then linear up to 1 at its full mark and above (:data:`MARKS`). Passing is half the grade; the
    rest rewards a recipe that found what this target needs."""
    passing, full = MARKS[kind]
    if not accuracy >= passing:  # NaN scores nothing too
        return 0.0
    return min(1.0, 0.5 + 0.5 * (accuracy - passing) / (full - passing))


def marks_text() -> str:
    """The marks in words, as the notebook, the grader's messages and the feedback say them."""
    return "; ".join(f"a {kind} target passes at {passing:.0%} test accuracy (half the points), full marks at "
                     f"{full:.0%}" for kind, (passing, full) in MARKS.items())


def rubric_text() -> str:
    """The rubric in one line, as the grade table shows it: ``source: ... / kinds: ... / rate and budget: ...``."""
    return " / ".join(f"{name}: {what}" for name, what in RUBRIC.items())


def new_secret() -> int:
    """A secret for one grading run, from the operating system's random source."""
    import secrets

    return secrets.randbits(62)


def time_limit(reference_seconds: float) -> float:
    """Seconds a recipe may run: 3 times what a plain ``BUDGET``-image fine-tuning took on the grading machine, plus
    10 s for scoring sources and loading checkpoints. Slower machines get more, faster ones less."""
    return 3 * reference_seconds + 10


def reference_seconds() -> float:
    """Time a plain fine-tuning with the whole budget on this machine (the unit of :func:`time_limit`)."""
    import time

    from . import models
    from .train import fit

    train, _ = practice()
    model = models.replace_head(models.pretrained("lab"), CLASSES)
    start = time.perf_counter()
    fit(model, train, steps=math.ceil(BUDGET / 32), lr=0.01, batch_size=32, augment=True, progress=False)
    return time.perf_counter() - start
