"""The practitioner's recipe for fine-tuning an image classifier, one ingredient at a time.

The tutorials that teach fine-tuning first (the PyTorch transfer-learning tutorial, fastai's ``fine_tune``, the
Keras transfer-learning guide, d2l.ai's fine-tuning chapter) agree on a handful of habits beyond "copy the network,
new head, train". Each is an ingredient here, and :func:`recipe_run` fine-tunes with any set of them, through the
course's one protocol (:func:`ftcourse.experiments.run`: the rate tuned on validation, the same budget of steps,
the test split looked at once):

- **augment** -- random crops (and mirror images, where a mirror image keeps its class) during training: each
  epoch shows the network slightly different images, so that it cannot learn the few training images by heart.
  Digits are never mirrored (``flip=False``): a mirrored 2 is no 2.
- **head first** -- train the new head alone on frozen features for a quarter of the budget, then everything from
  there. A random head's large, meaningless gradients would otherwise flow into the pretrained features while the
  head is still wrong. This is fastai's ``fine_tune`` (one frozen epoch, then unfreeze) and Kumar et al.'s LP-FT
  ("Fine-tuning can distort pretrained features and underperform out-of-distribution", ICLR 2022). The head's
  quarter runs at the linear probe's conventional rate; the steps count in the budget.
- **discriminative rates** -- each stage below the head learns ``LAYER_DECAY`` = 2.6 times slower than the one
  above it (Howard & Ruder, "Universal language model fine-tuning for text classification", ACL 2018): the lower
  stages hold the general features that need changing least. The head's rate is the one that is tuned.
- **best checkpoint** -- keep the weights of the best validation check, not the last ones (``fit(keep_best=True)``,
  fastai's ``SaveModelCallback``, Keras's ``ModelCheckpoint(save_best_only=True)``): early stopping without
  stopping.

The one thing the tutorials do first, **preprocessing matched to the pretrained model**, is not an ingredient you
can leave out here: the course's networks normalise their inputs themselves, with the statistics of the data they
were pretrained on (:meth:`ftcourse.models.StagedNet.normalise`), as ``torchvision``'s ``weights.transforms()`` does
for its models. Lesson 03b measures what a mismatch costs.
"""

from __future__ import annotations

from . import experiments, models, transfer
from .data import Task

INGREDIENTS = {
    "augment": "random crops (and flips, where a mirror image keeps its class) while training",
    "head first": "the new head alone on frozen features for a quarter of the steps, then everything",
    "discriminative rates": "each stage below the head 2.6x slower than the one above",
    "best checkpoint": "the weights of the best validation check, not the last",
}
PLAIN = ()  # the course's plain fine-tuning: every stage at one tuned rate, no augmentation, the last weights
FULL = tuple(INGREDIENTS)
LAYER_DECAY = 2.6
HEAD_SHARE = 0.25  # of the budget, spent on the head alone by "head first"


def check_ingredients(ingredients) -> tuple[str, ...]:
    """``ingredients`` as a tuple in :data:`INGREDIENTS` order; an unknown name is refused with the known ones."""
    if isinstance(ingredients, str):
        ingredients = (ingredients,)
    unknown = [name for name in ingredients if name not in INGREDIENTS]
    if unknown:
        raise ValueError(f"Unknown ingredient(s) {unknown}; the recipe's ingredients are {list(INGREDIENTS)}.")
    return tuple(name for name in INGREDIENTS if name in ingredients)


def recipe_run(task: Task, ingredients=FULL, *, pretrained: models.StagedNet | None = None, seed: int = 0,
               steps: int = 100, batch_size: int = 32, flip: bool = True, lr: float | str = "tuned", cache=None,
               device=None, keep_model: bool = False) -> dict:
    """Fine-tune ``pretrained`` on ``task`` with the named ``ingredients`` of the recipe; returns what
    :func:`ftcourse.experiments.run` returns (rate, validation and test accuracy, the tuning table...).

    Every set of ingredients gets the same budget of ``steps`` optimiser steps (with "head first", a quarter of them
    train the head alone) and its own rate, chosen on validation (``lr="tuned"``), so that two sets are compared
    tuned with tuned. ``flip=False`` keeps augmentation from mirroring images (digits, text).
    """
    ingredients = check_ingredients(ingredients)
    head_steps = round(steps * HEAD_SHARE) if "head first" in ingredients else 0
    augment = ("crop" if not flip else True) if "augment" in ingredients else False

    def prepare(model):
        # the head alone, on frozen features; the run that follows trains everything from there
        transfer.fit_head_first(model, task.train, steps=head_steps, lr=experiments.DEFAULT_LR["probe"],
                                batch_size=batch_size, augment=augment, seed=seed, progress=False, cache=cache)

    extra = {}
    if "discriminative rates" in ingredients:
        extra["layer_decay"] = LAYER_DECAY
    if "best checkpoint" in ingredients:
        extra.update(val=task.val, keep_best=True)
    return experiments.run(task, "finetune", pretrained=pretrained, seed=seed, steps=steps - head_steps,
                           batch_size=batch_size, lr=lr, augment=augment, prepare=prepare if head_steps else None,
                           cache=cache, device=device, keep_model=keep_model, **extra)
