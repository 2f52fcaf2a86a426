"""The training engine: :func:`fit`, :func:`evaluate`, :func:`predict`, and the pieces every training loop needs.

Every experiment in the course goes through :func:`fit`. It is an ordinary PyTorch loop -- forward, loss, backward,
optimiser step -- plus the few decisions that make it fast and safe, each made once here:

1. **Data on the device.** The dataset is one ``uint8`` tensor on the GPU; a batch is an index into it from a
   device-side random permutation (:class:`BatchStream`), and augmentation is a few batched tensor ops
   (:func:`ftcourse.data.augment`). Nothing is copied from the host per step. (A ``DataLoader`` works too, for
   data that does not fit.)
2. **Mixed precision.** On GPUs with bfloat16 the forward pass runs in bf16 (about 2x the fp32 throughput of the
   tensor cores); on older GPUs such as Colab's T4 in fp16 with a gradient scaler; on the CPU in fp32.
3. **No host syncs per step.** ``loss.item()`` makes the CPU wait for the GPU. Losses and correct counts are kept
   on the device and read every ``sync_every`` steps and at the end: that is when the run is logged, checked for
   divergence, validated and checkpointed. With the course's 25-400 training images an epoch is only 1-12 steps,
   so the budget is counted in optimiser **steps**, not epochs.
4. **Fused optimiser steps.** One kernel updates all parameters instead of one small kernel per tensor (on the
   CPU, batched "foreach" updates instead of a Python loop over the tensors).

The loop is built from public pieces, which the range test (:mod:`ftcourse.rangetest`) and feature extraction
(:mod:`ftcourse.measure`) use too: :func:`as_data` (check the data and put it on the device), :class:`BatchStream`
(endless shuffled batches), :class:`Stepper` (optimiser, gradient scaler, autocast: one training step) and
:func:`predict` (outputs in batches, without gradients).

A run can be stopped and continued: ``checkpoint=path`` writes everything needed (model, optimiser, scaler, step,
batch order, random state, history) atomically before the first step and every ``checkpoint_every`` steps, and
``resume=True`` continues to exactly the result an uninterrupted run would have reached. Ctrl-C returns the
history so far and leaves the model with what it learned. A loss that becomes NaN or infinite stops the run with
``history.diverged`` set, so learning-rate sweeps can show divergence rather than crash.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageData, Task, augment as augment_batch, check_images, check_labels
from .env import active_profile, channels_last_for, in_notebook, precision_for
from .files import save_state, save_json
from .lr import get_schedule
from .models import read_torch_file, state_dict_mismatch

CHECKPOINT_FORMAT = 2


@dataclass
class History:
    """What happened during :func:`fit`: per step, per log point (every ``sync_every`` steps), and in total.

    ``log_step[i]`` is the number of steps done at log point i; ``train_loss[i]`` and ``train_acc[i]`` are the means
    over the steps since the previous one; ``train_seconds[i]`` is the training time so far (evaluation excluded);
    ``val_loss[i]`` and ``val_acc[i]`` are measured there when :func:`fit` was given validation data.
    """

    step_lr: list[float] = field(default_factory=list)  # learning rate of the first parameter group
    step_loss: list[float] = field(default_factory=list)
    log_step: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    images_seen: int = 0
    wall_time: float = 0.0  # seconds, evaluation and checkpoints included
    diverged: dict | None = None  # {"step": ..., "lr": ...} of the first non-finite loss
    interrupted: bool = False
    best_step: int | None = None  # with fit(keep_best=True): the step whose weights the model was given back
    config: dict = field(default_factory=dict)

    @property
    def steps_done(self) -> int:
        return len(self.step_loss)

    @property
    def training_seconds(self) -> float:
        return self.train_seconds[-1] if self.train_seconds else 0.0

    @property
    def images_per_second(self) -> float:
        seconds = self.training_seconds
        return self.images_seen / seconds if seconds > 0 else 0.0

    @property
    def seconds_per_step(self) -> float:
        """The median over log intervals, so that one-off costs of a process's first steps do not count."""
        steps = [b - a for a, b in zip([0] + self.log_step, self.log_step)]
        seconds = [b - a for a, b in zip([0.0] + self.train_seconds, self.train_seconds)]
        return statistics.median(s / n for s, n in zip(seconds, steps)) if steps else 0.0

    @property
    def final_val_acc(self) -> float | None:
        return self.val_acc[-1] if self.val_acc else None

    @property
    def best_val_acc(self) -> float | None:
        return max(self.val_acc) if self.val_acc else None

    def __repr__(self) -> str:
        state = ("diverged at step {step} (lr {lr:.3g})".format(**self.diverged) if self.diverged
                 else "interrupted" if self.interrupted else "finished")
        val = f", val acc {self.final_val_acc:.3f}" if self.val_acc else ""
        return f"History({self.steps_done} steps, {state}{val}, {self.images_per_second:,.0f} images/s)"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(**d)

    def save(self, path) -> None:
        """Write the history as JSON (atomically)."""
        save_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> History:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def plot(self, axes=None):
        """Loss per step and accuracy per log point, side by side: on a new figure, or on ``axes``, a pair of
        matplotlib axes ``(loss, accuracy)``. Returns the figure."""
        from .plots import plot_history

        return plot_history(self, axes=axes)


def fit(model: nn.Module, train, val=None, *, steps: int | None = None, epochs: int | None = None,
        lr: float = 0.05, optimizer: str = "sgd", schedule="cosine", weight_decay: float = 5e-4,
        momentum: float = 0.9, batch_size: int = 128, params=None, layer_decay: float | None = None,
        augment: bool | str = False, keep_best: bool = False,
        label_smoothing: float = 0.0, penalty=None, before_step=None, precision: str = "auto",
        channels_last: bool | None = None, seed: int = 0, checkpoint=None, resume: bool = False,
        checkpoint_every: int = 200, stop_at: int | None = None, progress: bool | None = None,
        live_plot: bool | None = None, sync_every: int = 25, compile: bool = False, loss=None) -> History:
    """Train ``model`` on ``train`` for ``steps`` optimiser steps (or ``epochs`` passes) and return a :class:`History`.

    Parameters
    ----------
    train, val : an :class:`~ftcourse.data.ImageData`, a pair ``(images, labels)``, or a ``DataLoader``. A
        :class:`~ftcourse.data.Task` as ``train`` means: train on ``task.train`` and validate on ``task.val`` (never
        on ``task.test``: what you watch while training is what you choose on).
    steps, epochs : the budget; give one. An epoch is ``len(train) // batch_size`` steps, or one step when the
        dataset is smaller than a batch (see :func:`steps_per_epoch`); a fresh permutation starts each pass, and the
        last partial batch of a pass is dropped.
    lr, batch_size : the usual.
    optimizer : ``"sgd"`` (with Nesterov ``momentum``) or ``"adamw"``.
    schedule : a name from :mod:`ftcourse.lr` (``"constant"``, ``"cosine"``, ``"onecycle"``, ``"slanted"``) or a
        function ``f(step, total_steps) -> factor`` multiplying each group's base rate.
    params : ``None`` trains every parameter with ``requires_grad``; or a list of parameter groups
        ``[{"params": [...], "lr": ...}, ...]`` (layer-wise rates, see :mod:`ftcourse.transfer`).
    layer_decay : discriminative rates by stage, given as a factor instead of as groups: the head learns at ``lr``
        and each stage below ``layer_decay`` times slower (:func:`stage_rate_groups`). Because the groups are built
        from ``lr`` here, the rate can be tuned like any other (``timm`` calls the same knob ``layer_decay``).
    augment : ``True`` for random crops (4 pixels) and horizontal flips on the device; ``"crop"`` for crops alone,
        for images whose mirror image is another class (a mirrored 2 is no 2).
    keep_best : give the model back the weights of its best validation check (the highest ``val_acc``, ties to the
        lower ``val_loss``; with your own ``loss``, the lowest ``val_loss``) at the end of the run: early stopping
        without stopping, as fastai's ``SaveModelCallback`` and Keras's ``ModelCheckpoint(save_best_only=True)``
        do. Needs ``val``. Checks happen every ``sync_every`` steps and at the last step; ``history.best_step``
        says which one won. The validation split then chooses the checkpoint as well as any rate tuned on it, so
        report the test split, never the validation score.
    penalty : a function ``penalty(model) -> scalar tensor`` added to the loss (for example L2-SP).
    before_step : a function ``before_step(model, step)`` called before each step (for example gradual
        unfreezing); the model's train/eval modes are refreshed after it, so BatchNorm follows what it froze.
    precision : ``"auto"`` (bf16 / fp16 / fp32 by device, see :func:`ftcourse.env.precision_for`) or one of those.
    channels_last : keep weights and images in the channels_last memory layout; ``None`` decides by device type
        (:func:`ftcourse.env.channels_last_for`). The weights stay in that layout after training.
    seed : seeds the order of batches and the augmentation (the model's initialisation is up to you).
    checkpoint, resume, checkpoint_every : a file to save the run to, before the first step, every
        ``checkpoint_every`` steps and at the end; ``resume=True`` continues from it if it exists (see below).
    progress, live_plot : a progress bar and a live loss plot; by default on in interactive sessions outside the
        ``quick`` profile.
    sync_every : how often (in steps) the device is asked for the losses: the run is then logged, checked for
        divergence and, with ``val``, validated.
    compile : run the model through ``torch.compile`` (worth it on a GPU for long runs).
    loss : a function ``loss(outputs, targets) -> scalar tensor`` used instead of cross-entropy, for tasks that are
        not classification (segmentation and detection, see :mod:`ftcourse.dense`). ``train`` and ``val`` are then
        pairs ``(images, targets)`` whose targets may have any shape, one entry per image (a mask ``(N, H, W)``, a
        set of boxes ``(N, K, 5)``); batches index them like labels. Accuracy means nothing there: ``train_acc``
        holds NaN, and validation records ``val_loss`` only.

    Resuming. The checkpoint holds the model, the optimiser, the step, the batch order and the random states, so a
    resumed run reaches exactly the weights of an uninterrupted one on the same device and precision. Settings that
    decide the result must be the same (a ``ValueError`` lists any that differ). Resuming on another kind of device
    or at another precision (Colab may reconnect you to another GPU) works, with a warning: the model and optimiser
    are moved, the fp16 gradient scaler's state is used only when both runs use fp16, and the data order's random
    generator, which cannot move between devices, is re-seeded from ``seed`` and the step, so the rest of the run
    is a valid continuation but no longer bit-identical. A ``DataLoader``'s own shuffling is not saved.
    """
    started = time.perf_counter()
    device = model_device(model)
    if isinstance(train, Task):
        train, val = train.train, train.val if val is None else val
    if loss is not None and label_smoothing:
        raise ValueError("label_smoothing belongs to the default cross-entropy; with your own loss, smooth inside it.")
    targets = "labels" if loss is None else "any"
    train = as_data(train, "train", model, device, targets=targets)
    val = as_data(val, "val", model, device, targets=targets) if val is not None else None
    total_steps = _budget(steps, epochs, train, batch_size)
    _check_augment(augment)
    if keep_best and val is None:
        raise ValueError("keep_best=True keeps the weights of the best validation check, so it needs validation data: "
                         "fit(model, train, val, ...) or a Task as train.")
    if layer_decay is not None:
        if params is not None:
            raise ValueError("Give either params (your own groups) or layer_decay (groups by stage), not both.")
        params = stage_rate_groups(model, lr, layer_decay)
    for name, value in (("sync_every", sync_every), ("checkpoint_every", checkpoint_every)):
        _check_count(name, value)
    if stop_at is not None:
        _check_count("stop_at", stop_at)
        if checkpoint is None:
            raise ValueError("stop_at pauses a run to be finished later, which needs checkpoint=PATH to keep it in.")
    end = total_steps if stop_at is None else min(stop_at, total_steps)
    stepper = Stepper(model, lr=lr, optimizer=optimizer, weight_decay=weight_decay, momentum=momentum,
                      params=params, precision=precision, label_smoothing=label_smoothing, penalty=penalty,
                      channels_last=channels_last, compile=compile, loss=loss)
    schedule_fn = get_schedule(schedule)
    generator = torch.Generator(device=device).manual_seed(seed)
    stream = BatchStream(train, batch_size, generator, device,
                         num_classes=getattr(model, "num_classes", None) if loss is None else None)
    config = {"steps": total_steps, "lr": lr, "optimizer": optimizer, "schedule": describe(schedule_fn),
              "weight_decay": weight_decay, "momentum": momentum, "batch_size": batch_size, "augment": augment,
              "label_smoothing": label_smoothing, "penalty": describe(penalty), "before_step": describe(before_step),
              "param_groups": stepper.group_sizes(), "layer_decay": layer_decay, "keep_best": keep_best,
              "seed": seed, "train_size": stream.dataset_size,
              "precision": stepper.precision, "device": device.type, "loss": describe(loss)}
    history = History(config=config)
    best = {} if keep_best else None  # {"step", "score", "state"} of the best validation check so far
    step = saved_step = 0
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if checkpoint.exists() and not resume:
            raise FileExistsError(f"Checkpoint {checkpoint} already exists. Pass resume=True to continue that run, "
                                  f"or choose another path (or delete the file) to start afresh.")
        if checkpoint.exists():
            history, step = _restore(checkpoint, model, stepper, stream, config, best)
            history.config = config  # where and how the run goes on from here
        else:  # step 0 is saved too: an interrupted first stretch resumes from the true start, not half-trained
            _save_checkpoint(checkpoint, model, stepper, stream, history, 0, best)
        saved_step = step
    if progress is None:
        progress = (in_notebook() or sys.stderr.isatty()) and active_profile() != "quick"
    if live_plot is None:
        live_plot = progress and in_notebook()
    bar = _progress_bar(total_steps, step) if progress else None
    plot = _live_plot() if live_plot else None

    modes = [m.training for m in model.modules()]
    step_losses = torch.zeros(total_steps, device=device)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    model.train()
    _sync(device)
    segment_start = time.perf_counter()
    seconds_before = history.training_seconds
    try:
        while step < end:
            if before_step is not None:
                before_step(model, step)
                model.train()  # BatchNorm of stages frozen or unfrozen by the hook follows suit
            x, y = stream.next()
            if augment:
                x = augment_batch(x, generator, flip=augment != "crop")
            stepper.set_lr(schedule_fn(step, total_steps))
            batch_loss, logits = stepper.step(x, y)
            # Bookkeeping stays on the device: no .item() here.
            step_losses[step] = batch_loss
            loss_sum += batch_loss * len(y)
            if loss is None:  # accuracy is a classifier's measure; a dense task's own loss has none
                correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            history.step_lr.append(stepper.lr)
            step += 1
            due_checkpoint = checkpoint is not None and step - saved_step >= checkpoint_every
            if step % sync_every and step < end and not due_checkpoint:
                continue
            # A log point: read the losses back, look for divergence, validate, checkpoint.
            _sync(device)
            seconds = seconds_before + time.perf_counter() - segment_start
            logged = len(history.step_loss)
            history.step_loss += step_losses[logged:step].tolist()
            if _found_divergence(history, logged):
                break
            history.log_step.append(step)
            history.train_loss.append(loss_sum.item() / seen)
            history.train_acc.append(correct.item() / seen if loss is None else math.nan)
            history.train_seconds.append(seconds)
            history.images_seen += seen
            loss_sum.zero_()
            correct.zero_()
            seen = 0
            if val is not None and loss is None:
                metrics = evaluate(model, val, precision=stepper.precision)
                history.val_loss.append(metrics["loss"])
                history.val_acc.append(metrics["accuracy"])
            elif val is not None:
                outputs = predict(model, val.images, precision=stepper.precision)
                history.val_loss.append(float(loss(outputs, val.targets)))
                model.train()
            if best is not None and (step % sync_every == 0 or step == total_steps):
                # Only the regular checks compete, so that a run paused at any step keeps the same best.
                _remember_if_best(best, model, history, step, classification=loss is None)
            if bar is not None:
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}",
                                **({"val_acc": f"{history.val_acc[-1]:.3f}"} if history.val_acc else {}))
            if plot is not None:
                plot(history)
            if checkpoint is not None and (due_checkpoint or step == end):
                history.wall_time += time.perf_counter() - started
                started = time.perf_counter()
                _save_checkpoint(checkpoint, model, stepper, stream, history, step, best)
                saved_step = step
            seconds_before = seconds
            segment_start = time.perf_counter()
    except KeyboardInterrupt:
        history.interrupted = True
        history.step_loss += step_losses[len(history.step_loss):len(history.step_lr)].tolist()
        where = f"; the checkpoint {checkpoint} holds step {saved_step}" if checkpoint else ""
        warnings.warn(f"Training interrupted at step {step} of {total_steps}. The model keeps what it learned{where}."
                      f" Call fit(..., checkpoint=..., resume=True) to continue.", stacklevel=2)
    finally:
        history.wall_time += time.perf_counter() - started
        if best and not history.interrupted and (step == total_steps or history.diverged):
            model.load_state_dict(best["state"])  # the run is over: back to its best validation check
            history.best_step = best["step"]
        for module, mode in zip(model.modules(), modes):
            module.training = mode
        if bar is not None:
            bar.close()
    return history


def evaluate(model: nn.Module, data, *, batch_size: int = 1024, precision: str = "auto") -> dict:
    """Mean cross-entropy loss and accuracy of ``model`` on ``data`` (in eval mode, without gradients)."""
    logits, labels = predict(model, data, batch_size=batch_size, precision=precision, return_labels=True)
    return {"loss": F.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(1) == labels).float().mean().item()}


@torch.no_grad()
def predict(model: nn.Module, data, *, batch_size: int = 1024, precision: str = "auto", return_labels=False,
            forward=None):
    """The model's outputs (float32) for every image of ``data``, in order, computed in batches.

    By default the outputs are ``model(images)``, the class scores; ``forward(images)`` computes something else
    with the same machinery (for example ``lambda x: model.features(x, upto="layer2")``, see
    :func:`ftcourse.measure.features`), and then labels are not checked against the model's head. Images go in
    in the memory layout of the model's weights (channels_last after :func:`fit`). The model runs in evaluation
    mode (BatchNorm uses its running statistics, so an image's output does not depend on the rest of its batch)
    and every module's mode is restored afterwards. ``data`` is an ImageData, a pair ``(images, labels)``, a
    DataLoader, or a plain tensor of images; a Task means its test split.
    """
    device = model_device(model)
    if torch.is_tensor(data):
        check_images(data, None, name="images")
        data = ImageData(data, torch.zeros(len(data), dtype=torch.long, device=data.device))
    data = as_data(data, "data", model if forward is None else None, device)
    precision = resolve_precision(device, precision)
    forward = forward or model
    layout = torch.channels_last if _stored_channels_last(model) else torch.contiguous_format
    modes = [m.training for m in model.modules()]
    model.eval()
    outputs, labels = [], []
    try:
        with autocast_for(device, precision):
            for x, y in _batches_once(data, batch_size, device):
                outputs.append(forward(x.contiguous(memory_format=layout)).float())
                labels.append(y)
    finally:
        for module, mode in zip(model.modules(), modes):
            module.training = mode
    result = torch.cat(outputs)
    return (result, torch.cat(labels)) if return_labels else result


# ----------------------------------------------------------------------------------------------------------------
# The public pieces of a loop: data, batches, one step.

def model_device(model: nn.Module) -> torch.device:
    """The device of the model's parameters."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise ValueError("The model has no parameters at all; fit and evaluate need a network with weights.")


def resolve_precision(device: torch.device, precision: str) -> str:
    """``"auto"`` becomes the device's precision (see :func:`ftcourse.env.precision_for`); others are checked."""
    precision = precision_for(device) if precision == "auto" else precision
    if precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16', 'fp16' or 'fp32', got {precision!r}.")
    return precision


def autocast_for(device: torch.device, precision: str):
    """The context the forward pass runs in: ``torch.autocast`` for bf16 and fp16, nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def is_loader(data) -> bool:
    return isinstance(data, torch.utils.data.DataLoader)


def as_data(data, name: str, model: nn.Module | None, device: torch.device, *, targets: str = "labels"):
    """Check ``data`` and put it on ``device``: ImageData stays ImageData, a pair becomes one, a Task gives a split.

    With a ``model``, labels are checked against its number of classes and images against its input channels.
    A DataLoader is passed through; its batches are checked as they come (see :class:`BatchStream`).
    ``targets="any"`` accepts a pair ``(images, targets)`` whose targets have any shape, one per image (dense
    tasks, trained with their own ``loss``): it becomes :class:`Examples`.
    """
    if targets not in ("labels", "any"):
        raise ValueError(f"targets must be 'labels' or 'any', got {targets!r}.")
    if targets == "any" and not is_loader(data):
        if isinstance(data, Examples):
            data = (data.images, data.targets)
        if not (isinstance(data, (tuple, list)) and len(data) == 2 and torch.is_tensor(data[1])):
            raise TypeError(f"{name}: with your own loss, give a pair (images, targets) of tensors, one target per "
                            f"image; got {type(data).__name__}.")
        check_images(data[0], None, name=name)
        if len(data[1]) != len(data[0]):
            raise ValueError(f"{name}: {len(data[0])} images but {len(data[1])} targets; pass one per image.")
        _check_channels(data[0], name, model)
        return Examples(data[0], data[1]).to(device)
    if is_loader(data):
        if _loader_length(data) == 0:
            raise ValueError(f"{name}: the DataLoader yields no batches (its dataset has {len(data.dataset)} items"
                             f"{' and drop_last=True' if data.drop_last else ''}); give it data or a smaller "
                             f"batch_size.")
        return data
    if isinstance(data, Task):
        data = data.train if name == "train" else data.test
    if isinstance(data, (tuple, list)) and len(data) == 2:
        check_images(data[0], data[1], name=name)
        data = ImageData(data[0], data[1])
    if not isinstance(data, ImageData):
        raise TypeError(f"{name} must be an ImageData, a Task, a pair (images, labels) or a DataLoader; "
                        f"got {type(data).__name__}.")
    num_classes = getattr(model, "num_classes", None)
    check_images(data.images, data.labels, name=name, num_classes=num_classes)
    _check_channels(data.images, name, model)
    return data.to(device)


def steps_per_epoch(data, batch_size: int) -> int:
    """Optimiser steps in one pass over ``data``: ``len // batch_size`` (at least 1), or a DataLoader's length.

    The one place the course turns epochs into steps.
    """
    if is_loader(data):
        return _loader_length(data)
    return max(1, len(data) // batch_size)


@dataclass
class Examples:
    """Images ``(N, C, H, W)`` and one target of any shape per image, ``targets[i]`` for ``images[i]`` (a mask, a
    set of boxes): what :func:`fit` trains on when it is given its own ``loss``. Batches and predictions read
    ``images`` and ``targets`` from it and from :class:`~ftcourse.data.ImageData` alike."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)

    def to(self, device) -> Examples:
        return Examples(self.images.to(device), self.targets.to(device))


class BatchStream:
    """Endless mini-batches ``(images, labels)`` on ``device``: a fresh device-side permutation for every pass.

    ``next()`` gives the next batch. For an ImageData, batch i of a pass is ``order[i*b:(i+1)*b]`` of a
    ``torch.randperm`` drawn with ``generator`` on the device, so no index ever crosses from the host; a pass has
    :func:`steps_per_epoch` batches (the remainder is dropped, and reshuffled into the next pass). A DataLoader is
    iterated pass after pass; its labels are checked on the host before they move. ``state_dict`` holds the current
    order and position, so that a resumed run continues with the very same batches.
    """

    def __init__(self, data, batch_size: int, generator: torch.Generator, device: torch.device,
                 num_classes: int | None = None):
        _check_count("batch_size", batch_size)
        self.data, self.generator, self.device = data, generator, device
        self.batch_size = batch_size if is_loader(data) else min(batch_size, len(data))
        self.per_epoch = steps_per_epoch(data, batch_size)
        self.num_classes = num_classes
        self.order, self.position, self._iterator = None, 0, None

    @property
    def dataset_size(self) -> int:
        return len(self.data.dataset) if is_loader(self.data) else len(self.data)

    def next(self):
        if is_loader(self.data):
            return self._next_from_loader()
        if self.order is None or self.position == self.per_epoch:
            self.order = torch.randperm(len(self.data), device=self.device, generator=self.generator)
            self.position = 0
        index = self.order[self.position * self.batch_size:(self.position + 1) * self.batch_size]
        self.position += 1
        return self.data.images[index], self.data.targets[index]

    def _next_from_loader(self):
        for attempt in range(2):
            if self._iterator is None:
                self._iterator = iter(self.data)
            batch = next(self._iterator, None)
            if batch is not None:
                break
            self._iterator = None  # the pass ended: start the next one
        else:
            raise ValueError("The DataLoader yielded no batches; give it data or a smaller batch_size.")
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"Each DataLoader batch must be a pair (images, labels); got {type(batch).__name__}.")
        x, y = batch
        check_labels(y, name="DataLoader batch", num_classes=self.num_classes)
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return {"order": None if self.order is None else self.order.cpu(), "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.order = None if state["order"] is None else state["order"].to(self.device)
        self.position = state["position"]


class Stepper:
    """One training step and what it needs: the optimiser, the gradient scaler and the mixed-precision context.

    ``step(x, y)`` runs forward (under autocast), the loss (cross-entropy, or ``loss(outputs, y)`` when given, plus
    ``penalty(model)``), backward and the optimiser update, and returns the loss and logits as device tensors -- it never waits for the device.
    ``set_lr(factor)`` sets each parameter group's rate to ``factor`` x its base rate (what a schedule does).

    Every parameter goes into the optimiser, frozen ones too: they get no gradient and so are never updated, and a
    stage unfrozen later (gradual unfreezing) starts training without rebuilding the optimiser. The gradient scaler
    is enabled only for fp16, whose small range needs it; bf16 has float32's range.
    """

    def __init__(self, model: nn.Module, *, lr: float, optimizer: str = "sgd", weight_decay: float = 5e-4,
                 momentum: float = 0.9, params=None, precision: str = "auto", label_smoothing: float = 0.0,
                 penalty=None, channels_last: bool | None = None, compile: bool = False, loss=None):
        if loss is not None and not callable(loss):
            raise TypeError(f"loss must be a function loss(outputs, targets) -> scalar tensor, got {loss!r}.")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
            raise ValueError(f"lr must be a positive number, got {lr!r}.")
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError("The model has no trainable parameters: every parameter has requires_grad=False. "
                             "Unfreeze some stages first, e.g. ftcourse.transfer.unfreeze(model, 'head').")
        self.model, self.device = model, model_device(model)
        self.precision = resolve_precision(self.device, precision)
        self.optimizer = _make_optimizer(optimizer, _param_groups(model, params, lr), lr, weight_decay, momentum,
                                         self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=(self.precision == "fp16"))
        self.autocast = autocast_for(self.device, self.precision)
        self.label_smoothing, self.penalty, self.loss = label_smoothing, penalty, loss
        self.channels_last = channels_last_for(self.device) if channels_last is None else channels_last
        if self.channels_last:  # the layout fast convolution kernels want (see ftcourse.env.channels_last_for)
            model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(model) if compile else model

    @property
    def lr(self) -> float:
        """The current rate of the first parameter group."""
        return self.optimizer.param_groups[0]["lr"]

    def set_lr(self, factor: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def group_sizes(self) -> list[list]:
        """``[number of parameters, base rate]`` per group: what a checkpoint must agree on."""
        return [[sum(p.numel() for p in g["params"]), g["base_lr"]] for g in self.optimizer.param_groups]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            logits = self.forward(x)
            loss = (F.cross_entropy(logits, y, label_smoothing=self.label_smoothing) if self.loss is None
                    else self.loss(logits, y))
            if self.penalty is not None:
                loss = loss + self.penalty(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach()


def stage_rate_groups(model: nn.Module, lr: float, decay: float) -> list[dict]:
    """Discriminative (layer-wise) learning rates: one parameter group per stage, the head at ``lr`` and each stage
    below it ``decay`` times slower. For stages counted down from the head, d = 0 (head), 1, 2, ... (stem)::

        lr_d = lr / decay**d

    Lower stages hold general features that the target needs least changed, so they get the smallest steps (Howard
    & Ruder, "Universal language model fine-tuning for text classification", ACL 2018, who found ``decay=2.6``
    best). Every parameter is in exactly one group, frozen ones included, so stages unfrozen later train at their
    rate; the head's group comes first, so ``History.step_lr`` records the head's rate.
    """
    stage_names = getattr(model, "stage_names", None)
    if not stage_names:
        raise TypeError(f"Rates by stage need a model made of named stages (a ftcourse StagedNet: resnet(), "
                        f"pretrained(), from_torchvision()); got {type(model).__name__}. Give params=[...] instead.")
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not decay > 0 or not math.isfinite(decay):
        raise ValueError(f"The layer decay must be a positive number (1 gives every stage the same rate; Howard & "
                         f"Ruder use 2.6); got {decay!r}.")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}.")
    return [{"params": list(model.stage(name).parameters()), "lr": lr / decay**depth, "stage": name}
            for depth, name in enumerate(reversed(stage_names))]


def describe(thing) -> str | None:
    """A stable description of a schedule, penalty or hook, to compare two runs' settings by.

    ``repr`` when it describes the object (dataclasses, :class:`ftcourse.transfer.L2SP`), else the function's
    qualified name; never a memory address, which would differ between two runs of the same code.
    """
    if thing is None:
        return None
    text = repr(thing)
    if " at 0x" not in text:
        return text
    return getattr(thing, "__qualname__", type(thing).__qualname__)


# ----------------------------------------------------------------------------------------------------------------
# Private details of the loop.

def _stored_channels_last(model: nn.Module) -> bool:
    """Whether the model's convolution weights are stored channels_last (as :class:`Stepper` leaves them)."""
    kernel = next((p for p in model.parameters() if p.ndim == 4 and p.shape[-1] > 1), None)
    return kernel is not None and kernel.is_contiguous(memory_format=torch.channels_last) and not kernel.is_contiguous()


def _check_augment(augment) -> None:
    if augment is not True and augment is not False and augment != "crop":
        raise ValueError(f"augment must be True (crops and flips), 'crop' (crops only) or False, got {augment!r}.")


def _remember_if_best(best: dict, model: nn.Module, history: History, step: int, *, classification: bool) -> None:
    """Keep a copy of the weights (on their device) when this validation check beats every earlier one."""
    score = (history.val_acc[-1], -history.val_loss[-1]) if classification else (-history.val_loss[-1],)
    if any(math.isnan(v) for v in score) or (best and score <= best["score"]):
        return
    best.update(step=step, score=score, state={k: v.detach().clone() for k, v in model.state_dict().items()})


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        hint = f" ({name}={int(value)})" if isinstance(value, float) and value.is_integer() and value >= 1 else ""
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}{hint}.")


def _budget(steps, epochs, train, batch_size) -> int:
    """Total optimiser steps from ``steps`` or ``epochs`` (exactly one of them)."""
    _check_count("batch_size", batch_size)
    if (steps is None) == (epochs is None):
        raise ValueError(f"fit needs one budget: steps=... (optimiser steps, the course's unit) or epochs=... "
                         f"(passes over the data); got steps={steps!r}, epochs={epochs!r}.")
    if steps is not None:
        _check_count("steps", steps)
        return steps
    _check_count("epochs", epochs)
    return epochs * steps_per_epoch(train, batch_size)


def _loader_length(loader) -> int | None:
    try:
        return len(loader)
    except TypeError:  # an iterable dataset without a length
        return None


def _check_channels(images: torch.Tensor, name: str, model) -> None:
    in_channels = getattr(model, "in_channels", None)
    if in_channels is not None and images.shape[1] != in_channels:
        raise ValueError(f"{name}: images have {images.shape[1]} channels but the model expects "
                         f"{in_channels}. Grey images can be repeated to RGB with images.expand(-1, 3, -1, -1).")


def _batches_once(data, batch_size: int, device: torch.device):
    """One pass over ``data`` in order, in batches on ``device`` (for prediction: nothing is shuffled or dropped)."""
    if is_loader(data):
        for x, y in data:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return
    _check_count("batch_size", batch_size)
    for i in range(0, len(data), batch_size):
        yield data.images[i:i + batch_size], data.targets[i:i + batch_size]


def _param_groups(model: nn.Module, params, lr: float) -> list[dict]:
    if params is None:
        return [{"params": list(model.parameters()), "base_lr": lr}]
    groups = []
    for i, group in enumerate(params):
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"params must be a list of dicts like {{'params': [...], 'lr': 0.01}}; item {i} is "
                            f"{type(group).__name__}. See ftcourse.transfer.param_groups.")
        group = dict(group)
        group["params"] = list(group["params"])
        group["base_lr"] = group.get("lr", lr)
        groups.append(group)
    return groups


def _make_optimizer(name: str, groups, lr, weight_decay, momentum, device) -> torch.optim.Optimizer:
    # How the update runs over the parameter tensors: on a GPU one fused kernel for all of them; elsewhere "foreach",
    # a few batched ops over all tensors instead of a Python loop over each (torch's default on the CPU), measured
    # 1.09x the whole training step of the lab ResNet at batch 32 on a 2-core CPU.
    how = {"fused": True} if device.type == "cuda" else {"foreach": True}
    for group in groups:
        group.setdefault("lr", group["base_lr"])
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay,
                               **how)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **how)
    raise ValueError(f"Unknown optimizer {name!r}; use 'sgd' or 'adamw'.")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _found_divergence(history: History, start: int) -> bool:
    """Look for a non-finite loss among the steps from ``start`` on; if there is one, mark the run diverged.

    ``history.step_lr`` and ``step_loss`` are cut to end at the first bad step.
    """
    bad = next((i for i in range(start, len(history.step_loss)) if not math.isfinite(history.step_loss[i])), None)
    if bad is None:
        return False
    lr = history.step_lr[bad]
    history.diverged = {"step": bad, "lr": lr}
    warnings.warn(f"The loss became {history.step_loss[bad]} at step {bad} (learning rate {lr:.3g}): training "
                  f"diverged and was stopped. Try a smaller learning rate or a warm-up.", stacklevel=3)
    del history.step_lr[bad + 1:]
    del history.step_loss[bad + 1:]
    return True


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints: written atomically (see ftcourse.files), so a crash mid-write never leaves a broken one.

def _save_checkpoint(path: Path, model, stepper: Stepper, stream: BatchStream, history: History, step: int,
                     best: dict | None = None) -> None:
    rng = {"data": stream.generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    state = {"format": CHECKPOINT_FORMAT, "step": step, "model": model.state_dict(),
             "optimizer": stepper.optimizer.state_dict(), "scaler": stepper.scaler.state_dict(),
             "stream": stream.state_dict(), "history": history.to_dict(), "rng": rng}
    if best:
        state["best"] = {"step": best["step"], "score": list(best["score"]), "state": best["state"]}
    try:
        save_state(path, state)
    except OSError as error:
        raise OSError(f"Could not write the checkpoint {path}: {error.strerror or error}. Choose a folder you can "
                      f"write to (checkpoint=...), or free some disk space.") from error


# Settings that decide the result: a run resumed with any of them changed would be neither run.
_MUST_MATCH = ("steps", "lr", "optimizer", "schedule", "weight_decay", "momentum", "batch_size", "augment",
               "label_smoothing", "penalty", "before_step", "param_groups", "layer_decay", "keep_best", "seed",
               "train_size")
_ADDED_LATER = {"layer_decay": None, "keep_best": False}  # settings that older checkpoints do not record


def _restore(path: Path, model, stepper: Stepper, stream: BatchStream, config: dict,
             best: dict | None) -> tuple[History, int]:
    """Load a checkpoint into the run, after checking all of it: nothing is changed unless everything fits."""
    state = read_torch_file(path, "fit checkpoint", fix="Delete it to start the run afresh, or choose another "
                                                            "checkpoint path.")
    fix = "Use a new checkpoint path to start afresh, or delete the file."
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by this version of ftcourse.train.fit (format "
                         f"{state.get('format')!r}, expected {CHECKPOINT_FORMAT}). {fix}")
    missing = [k for k in ("step", "model", "optimizer", "scaler", "stream", "history", "rng") if k not in state]
    if missing:
        raise ValueError(f"{path} is an incomplete fit checkpoint (no {missing}). {fix}")
    _check_state_dict(path, state["model"], model.state_dict())
    saved = state["history"].get("config", {})
    saved = {**_ADDED_LATER, **saved}
    different = {k: (saved.get(k), config[k]) for k in _MUST_MATCH if saved.get(k) != config[k]}
    if different:
        listing = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in different.items())
        raise ValueError(f"Cannot resume from {path}: it was written by a run with other settings ({listing}). "
                         f"Call fit with the same settings, or use a new checkpoint path to start afresh.")
    groups = state["optimizer"].get("param_groups", [])
    if [len(g["params"]) for g in groups] != [len(g["params"]) for g in stepper.optimizer.param_groups]:
        raise ValueError(f"{path}: the optimiser state does not fit this model's parameter groups. {fix}")

    same_device = saved.get("device") == config["device"]
    same_precision = saved.get("precision") == config["precision"]
    if not (same_device and same_precision):
        warnings.warn(f"Resuming {path}, written on {saved.get('device')} in {saved.get('precision')}, on "
                      f"{config['device']} in {config['precision']}: the run continues correctly, but not "
                      f"bit-identically to an uninterrupted run (the data order's generator is re-seeded).",
                      stacklevel=3)
    kept = state.get("best")
    if best is not None and kept is not None:
        _check_state_dict(path, kept["state"], model.state_dict())
    model.load_state_dict(state["model"])
    if best is not None and kept is not None:
        device = model_device(model)
        best.update(step=kept["step"], score=tuple(kept["score"]),
                    state={k: v.to(device) for k, v in kept["state"].items()})
    stepper.optimizer.load_state_dict(state["optimizer"])  # moves the optimiser's state to the parameters' device
    if stepper.precision == "fp16" and saved.get("precision") == "fp16":
        stepper.scaler.load_state_dict(state["scaler"])
    stream.load_state_dict(state["stream"])
    torch.set_rng_state(state["rng"]["torch"].cpu())
    if same_device:
        stream.generator.set_state(state["rng"]["data"].cpu())
        cuda = state["rng"].get("cuda")
        if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    else:  # a generator's state cannot move between device types
        stream.generator.manual_seed(config["seed"] * 1_000_003 + state["step"])
    return History.from_dict(state["history"]), state["step"]


def _check_state_dict(path, saved: dict, expected: dict) -> None:
    """Raise before loading anything when ``saved`` does not have exactly the tensors (names and shapes) expected."""
    problem = state_dict_mismatch(saved, expected)
    if problem:
        raise ValueError(f"{path} holds the weights of another architecture ({problem}); nothing was loaded. Resume "
                         f"with the model that wrote it, or use a new checkpoint path.")


# ----------------------------------------------------------------------------------------------------------------
# Progress display.

def _progress_bar(total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", leave=False)


def _live_plot():
    from .plots import LiveLossPlot

    return LiveLossPlot()
