"""The capstone's target: a new task from the lab whose exact definition, and test set, come from a secret.

Like a Kaggle competition, the capstone has a public *practice* variant and a private one. Both are the same kind of
task: 5 classes, class k shown either by a new shape (80% of its images, colour random) or by a colour (20%, shape
random), 5 labelled training images per class. The secret decides which shape and which colour stand for which
class, where the 5 class colours sit on the colour wheel, and which images are drawn. The notebook develops on
``practice()`` (secret :data:`PRACTICE_SECRET`, public); ``ftcourse grade`` draws a secret of its own per grading run
and hands the recipe only the training images of :func:`target`. Nobody can rebuild the test set, and a model
trained on the practice data learns the wrong pairings.

The pass mark (:data:`PASS_MARK`) was calibrated on a 2-core CPU with 3 secrets x 3 seeds (see :data:`CALIBRATION`):
training from scratch fails it by a wide margin, even with 4 times the steps (5 images per class are too few to
learn new shapes from nothing); so does fine-tuning the wrong source (``lab-colours``, which learned colour, not
shape); fine-tuning the source whose features fit (``lab``, pretrained on shapes) passes on every secret tried.
Choosing the source again on each target's 25 images by a transferability score is not reliable: with the random
streams of an earlier version, LEEP picked ``lab-colours`` on one secret of 13, and fine-tuning it there got 0.28.
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
BY_SHAPE = 0.8  # the fraction of each class's images that show it by its shape; the rest show it by its colour
BUDGET = 3200  # training images a recipe may use: 100 steps of 32
PRACTICE_SECRET = 2026
PASS_MARK = 0.5
JUSTIFICATION_TEMPLATE = (  # the capstone notebook's justification cell as handed out (tests/test_capstone.py)
    "## Your justification\n\n*Replace this text with a few sentences: which source and method your recipe uses, and "
    "what in your exploration\nmade you choose them. The grade table shows this cell to your teacher.*")
ASSIGNMENT = "10"  # the capstone comes after the lessons; its one exercise is 10.1
EXERCISE = ASSIGNMENT + ".1"
CALIBRATION = {  # test accuracy (mean, lowest, highest) over secrets 1, 2, 3 x seeds 0, 1, 2: benchmarks/capstone.py
    "scratch": (0.306, 0.268, 0.346),
    "scratch, 4x the steps": (0.288, 0.256, 0.334),
    "fine-tune lab": (0.720, 0.696, 0.744),  # the solution's recipe
    "fine-tune lab-colours": (0.270, 0.208, 0.360),
}


def stream_seed(secret: int, stream: str) -> int:
    """A seed for one random stream of the secret (``"definition"``, ``"train"``, ``"test"``): the first 8 bytes of
    ``sha256(secret/stream)``. Every bit of the secret changes every stream, and no stream's seed tells anything
    about another's: knowing the training images' seed (torch's CPU generator keeps 32 bits of it, so a search
    could find it) does not bring the test images' any nearer."""
    digest = hashlib.sha256(f"ftcourse capstone/{int(secret)}/{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def definition(secret: int) -> dict:
    """What the secret decides: for each class its shape (one of the lab's new shapes) and its hue. Drawn with
    Python's ``random.Random`` seeded by the whole 64-bit stream seed (torch's CPU generator would keep 32 bits)."""
    rng = random.Random(stream_seed(secret, "definition"))
    shapes = rng.sample(range(len(lab.NEW_SHAPES)), CLASSES)
    offset = rng.random() / CLASSES  # the class colours turn round the wheel together
    hues = [(k / CLASSES + offset) % 1.0 for k in rng.sample(range(CLASSES), CLASSES)]
    return {"shapes": [len(lab.SOURCE_SHAPES) + s for s in shapes], "hues": [round(h, 4) for h in hues]}


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
    by_shape = torch.rand(n, generator=g) < BY_SHAPE
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


def practice() -> tuple[ImageData, ImageData]:
    """The public practice variant: the same kind of task, with :data:`PRACTICE_SECRET`."""
    return target(PRACTICE_SECRET)


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
