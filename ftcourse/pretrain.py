"""The recipes behind the course's shipped checkpoints: pretraining on the lab's source tasks.

Pretraining is step one of transfer learning: min L_pre(theta) on a large source task. The course ships the result
(``ftcourse/checkpoints/lab.pt``, loaded by ``ftcourse.models.pretrained("lab")``) so that no notebook waits for it,
and this module is how that file was made: ``ftcourse pretrain`` runs :data:`RECIPE` again, deterministically.

The recipe: the course ResNet (width 16, four stages, a stride-2 stem) trained on the lab's source task (8 shapes,
random colours, plain backgrounds; 1,500 images per class) for 10 epochs of SGD with a cosine schedule and
crop/flip augmentation. It takes about 2 minutes on a 2-core CPU and a few seconds on a GPU.

Four more shipped checkpoints (:data:`RECIPES`, one per name in ``models.SHIPPED``) give lessons 04 and 05 several
sources to choose between: ``lab-early`` (the same source, 1 epoch), ``lab-textures`` (pretrained on background
textures), ``lab-colours`` (pretrained on hue bins) and ``lab-simclr`` (the source's images without their labels,
self-supervised: :mod:`ftcourse.selfsup`; about 9 minutes on one CPU thread). ``ftcourse pretrain --source all``
makes all five again (about 15 minutes on a CPU).

Where the files go. Pretraining never writes into the installed package: by default ``ftcourse pretrain`` writes to
your cache folder, :func:`user_checkpoint_dir` (``$FTCOURSE_HOME/checkpoints``, else
``~/.cache/ftcourse/checkpoints``), and ``ftcourse.models.load_checkpoint(path)`` loads what it wrote. The shipped
files change only when a maintainer asks for it by name, one file at a time:
``ftcourse pretrain --source lab --out ftcourse/checkpoints/lab.pt`` (which also records the new sha256 beside it).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from . import lab, selfsup
from .files import save_json, save_state
from .models import CHECKPOINT_DIR, SHIPPED, resnet
from .train import evaluate, fit, steps_per_epoch

RECIPE = {
    "model": {"num_classes": len(lab.SOURCE_SHAPES), "width": 16, "blocks": (1, 1, 1, 1), "stem_stride": 2},
    "data": {"n_per_class": 1500, "test_per_class": 100, "seed": 0},
    "fit": {"epochs": 10, "lr": 0.1, "batch_size": 128, "augment": True, "schedule": "cosine",
            "weight_decay": 5e-4, "seed": 0},
    "init_seed": 0,
}

# More pretrained sources, for comparing sources (lessons 04 and 05): the same network and training, on a different
# source task or for less time, or (lab-simclr) on the same images without their labels. Each is shipped as
# checkpoints/NAME.pt and loaded by models.pretrained(NAME); the names are those of models.SHIPPED, in the same order.
RECIPES = {
    "lab": RECIPE,
    # The same source, pretrained for 1 epoch instead of 10: a weaker version of the same features.
    "lab-early": {**RECIPE, "fit": {**RECIPE["fit"], "epochs": 1}},
    # Pretrained on the background's texture (5 classes; shape and colour random).
    "lab-textures": {**RECIPE, "model": {**RECIPE["model"], "num_classes": len(lab.TEXTURES)},
                     "data": {**RECIPE["data"], "task": "unrelated"}},
    # Pretrained on the shape's hue (8 hue bins; shape random): the one source that learned colour.
    "lab-colours": {**RECIPE, "model": {**RECIPE["model"], "num_classes": len(lab.HUES)},
                    "data": {**RECIPE["data"], "task": "hues"}},
    # Self-supervised (ftcourse.selfsup): the same network and the same source images, without their labels,
    # trained SimCLR-style to tell which two views come from one image. Its head is the identity on the 128
    # features (num_classes = width * 2**3, the channels of layer4), set after training: there are no classes.
    # Its settings were chosen by the source probe accuracy (a linear probe on the source's own labels, never a
    # target's split), measured at 8 epochs on one CPU thread: colour strength 0.5 (the paper's CIFAR-10 value)
    # 0.605, 1.0 0.921, 1.5 0.938; crops down to 8% of the area (the paper's ImageNet range) 0.583 where 25% gave
    # 0.921; temperature 0.2 0.920 against 0.5's 0.921. The lab's colours are random and uniform, so two views that
    # keep one hue are an easy shortcut: the colour distortion must be strong, and a crop must keep the shape. For
    # scale: an untrained network's features give 0.459, the supervised lab's 1.000 (chance is 0.125).
    "lab-simclr": {
        "model": {**RECIPE["model"], "num_classes": RECIPE["model"]["width"] * 2 ** 3},
        "data": {**RECIPE["data"]},
        "fit": {"epochs": 30, "lr": 0.3, "batch_size": 256, "weight_decay": 5e-4, "momentum": 0.9, "warmup": 0.1,
                "seed": 0},
        "contrastive": {"temperature": 0.5, "projection_dim": 128, "crop_scale": [0.25, 1.0], "colour_strength": 1.0},
        "init_seed": 0,
    },
}


def user_checkpoint_dir() -> Path:
    """Where ``ftcourse pretrain`` writes by default: ``$FTCOURSE_HOME/checkpoints`` if that variable is set, else
    ``ftcourse/checkpoints`` in your cache folder (``$XDG_CACHE_HOME``, by default ``~/.cache``)."""
    home = os.environ.get("FTCOURSE_HOME")
    if home:
        return Path(home).expanduser() / "checkpoints"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "ftcourse" / "checkpoints"


def quick_version(recipe: dict) -> dict:
    """A miniature of ``recipe`` for tests: the same code path end to end in seconds (40 images per class, 2 epochs)."""
    return {**recipe, "data": {**recipe["data"], "n_per_class": 40, "test_per_class": 10},
            "fit": {**recipe["fit"], "epochs": 2, "batch_size": 64}}


def pretrain(recipe: dict = RECIPE, *, device=None, progress: bool | None = None):
    """Run ``recipe``; returns ``(model, info)`` where ``info`` records the source accuracy and time taken.

    A recipe with a ``contrastive`` part is self-supervised and goes to :func:`ftcourse.selfsup.pretrain_contrastive`,
    whose ``info`` records ``source_probe_accuracy`` (a linear probe on its features) instead: it has no classifier.
    """
    if "contrastive" in recipe:
        return selfsup.pretrain_contrastive(recipe, device=device, progress=progress)
    start = time.perf_counter()
    device = torch.device(device or "cpu")
    data = recipe["data"]
    task = lab.target(data.get("task", "source"), data["n_per_class"], test_per_class=data["test_per_class"],
                      seed=data["seed"], device=device)
    torch.manual_seed(recipe["init_seed"])
    model = resnet(**recipe["model"]).to(device)
    history = fit(model, task, progress=progress, **recipe["fit"])
    if history.diverged or history.interrupted:
        raise RuntimeError(f"Pretraining did not finish ({history}); the checkpoint was not written.")
    info = {"source_test_accuracy": round(evaluate(model, task.test)["accuracy"], 4),
            "seconds": round(time.perf_counter() - start, 1), "device": str(device), "torch": torch.__version__}
    return model.cpu().eval(), info


def cost(name: str = "lab") -> dict:
    """What pretraining the shipped checkpoint ``name`` cost, from its recipe and the record written beside it.

    Returns ``steps`` (optimiser steps), ``images`` (images seen: steps x batch size, the unit that compares runs of
    different batch sizes), and the ``seconds`` and ``device`` of the run that made the shipped file. Pretraining is
    paid once and then reused by every target; lesson 01 asks after how many targets it has paid for itself.
    """
    if name not in SHIPPED:
        raise ValueError(f"Unknown shipped checkpoint {name!r}; the shipped ones are {list(SHIPPED)}.")
    record = json.loads((CHECKPOINT_DIR / f"{name}.json").read_text())
    recipe = record["recipe"]
    classes = lab.TASKS[recipe["data"].get("task", "source")][0]  # the source task's (not the head's: lab-simclr)
    train_size = recipe["data"]["n_per_class"] * len(classes)
    batch_size = recipe["fit"]["batch_size"]
    steps = recipe["fit"]["epochs"] * steps_per_epoch(range(train_size), batch_size)
    return {"steps": steps, "images": steps * batch_size, "seconds": record["seconds"], "device": record["device"]}


def save_checkpoint(model, recipe: dict, info: dict, path) -> str:
    """Write the model and its recipe to ``path`` and a record with its sha256 beside it; returns the sha256.

    The checkpoint holds only what the recipe determines (weights, model config, recipe), so running the same recipe
    on the same machine and torch version gives the same bytes; the time it took and where go into the record.
    """
    path = Path(path)
    save_state(path, {"format": 1, "config": dict(model.config), "state_dict": model.state_dict(),
                      "recipe": json.loads(json.dumps(recipe))})
    digest = sha256_of(path)
    save_json(path.with_suffix(".json"), {"file": path.name, "sha256": digest, "recipe": recipe, **info}, indent=2)
    return digest


def sha256_of(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
