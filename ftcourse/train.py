"""The training loop: :func:`fit`, :func:`evaluate` and the :class:`History` a run returns.

Every experiment in the course goes through :func:`fit`. It is an ordinary PyTorch loop -- forward, loss, backward,
optimiser step -- plus the few decisions that make it fast and safe, each made once here:

1. **Data on the device.** The dataset is one ``uint8`` tensor on the GPU; a batch is an index into it from a
   device-side random permutation, and augmentation is a few batched tensor ops (:func:`ftcourse.data.augment`).
   Nothing is copied from the host per step. (A ``DataLoader`` works too, for data that does not fit.)
2. **Mixed precision.** On GPUs with bfloat16 the forward pass runs in bf16 (about 2x the fp32 throughput of the
   tensor cores); on older GPUs such as Colab's T4 in fp16 with a gradient scaler; on the CPU in fp32.
3. **No host syncs per step.** ``loss.item()`` makes the CPU wait for the GPU. Losses and correct counts are summed
   on the device and read at logging points (every ``sync_every`` steps and at the end of each epoch).
4. **Fused optimiser steps.** One kernel updates all parameters instead of one small kernel per tensor.

A run can be stopped and continued: ``checkpoint=path`` writes everything needed (model, optimiser, scaler,
step, random state, history) atomically after every epoch, and ``resume=True`` continues to exactly the result an
uninterrupted run would have reached. Ctrl-C returns the history so far and leaves the model with what it learned.
A loss that becomes NaN or infinite stops the run with ``history.diverged`` set, so learning-rate sweeps can show
divergence rather than crash.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageData, Task, augment as augment_batch, check_images
from .env import active_profile, precision_for
from .files import save_state, save_json
from .lr import get_schedule

CHECKPOINT_FORMAT = 1


@dataclass
class History:
    """What happened during :func:`fit`: per step, per epoch, and in total."""

    step_lr: list[float] = field(default_factory=list)  # learning rate of the first parameter group
    step_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)  # per epoch (mean over its steps)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)  # seconds of training per epoch (evaluation excluded)
    images_seen: int = 0
    wall_time: float = 0.0  # seconds, evaluation included
    diverged: dict | None = None  # {"step": ..., "lr": ...} of the first non-finite loss
    interrupted: bool = False
    config: dict = field(default_factory=dict)

    @property
    def epochs_done(self) -> int:
        return len(self.train_loss)

    @property
    def images_per_second(self) -> float:
        seconds = sum(self.epoch_time)
        return self.images_seen / seconds if seconds > 0 else 0.0

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
        return (f"History({self.epochs_done} epochs, {len(self.step_loss)} steps, {state}{val}, "
                f"{self.images_per_second:,.0f} images/s)")

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

    def plot(self, ax=None):
        """Loss per step and accuracy per epoch. Returns the figure."""
        from .plots import plot_history

        return plot_history(self, axes=ax)


def fit(model: nn.Module, train, val=None, *, epochs: int = 10, lr: float = 0.05, optimizer: str = "sgd",
        schedule="cosine", weight_decay: float = 5e-4, momentum: float = 0.9, batch_size: int = 128,
        params=None, augment: bool = False, label_smoothing: float = 0.0, penalty=None, before_epoch=None,
        precision: str = "auto", seed: int = 0, checkpoint=None, resume: bool = False, progress: bool | None = None,
        live_plot: bool | None = None, sync_every: int = 25, compile: bool = False) -> History:
    """Train ``model`` on ``train`` and return a :class:`History`.

    Parameters
    ----------
    train, val : an :class:`~ftcourse.data.ImageData`, a pair ``(images, labels)``, or a ``DataLoader``. A
        :class:`~ftcourse.data.Task` as ``train`` means: train on ``task.train`` and validate on ``task.test``.
    epochs, lr, batch_size : the usual. An epoch is ``len(train) // batch_size`` steps (the last partial batch is
        dropped; a fresh permutation each epoch means every image is still used), or one step when the dataset is
        smaller than a batch.
    optimizer : ``"sgd"`` (with Nesterov ``momentum``) or ``"adamw"``.
    schedule : a name from :mod:`ftcourse.lr` (``"constant"``, ``"cosine"``, ``"onecycle"``, ``"slanted"``) or a
        function ``f(step, total_steps) -> factor`` multiplying each group's base rate.
    params : ``None`` trains every parameter with ``requires_grad``; or a list of parameter groups
        ``[{"params": [...], "lr": ...}, ...]`` (layer-wise rates, see :mod:`ftcourse.transfer`).
    augment : random crops (4 pixels) and horizontal flips on the device.
    penalty : a function ``penalty(model) -> scalar tensor`` added to the loss (for example L2-SP).
    before_epoch : a function ``before_epoch(model, epoch)`` called before each epoch (for example gradual
        unfreezing).
    precision : ``"auto"`` (bf16 / fp16 / fp32 by device, see :func:`ftcourse.env.precision_for`) or one of those.
    seed : seeds the order of batches and the augmentation (the model's initialisation is up to you).
    checkpoint, resume : a file to save to after every epoch; ``resume=True`` continues from it if it exists.
    progress, live_plot : a progress bar and a live loss plot; by default on in interactive sessions outside the
        ``quick`` profile.
    sync_every : how often (in steps) the GPU is asked for the running loss, to check for divergence.
    compile : run the model through ``torch.compile`` (worth it on a GPU for long runs).
    """
    started = time.perf_counter()
    device = _model_device(model)
    if isinstance(train, Task):
        train, val = train.train, train.test if val is None else val
    train = _as_data(train, "train", model, device)
    val = _as_data(val, "val", model, device) if val is not None else None
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"fit needs epochs >= 1, batch_size >= 1 and lr > 0; got epochs={epochs}, "
                         f"batch_size={batch_size}, lr={lr}.")
    _check_trainable(model)
    precision = _resolve_precision(device, precision)
    schedule_fn = get_schedule(schedule)

    # Every parameter goes into the optimiser; frozen ones get no gradient and so are never updated. This way a
    # stage unfrozen later (gradual unfreezing) starts training without rebuilding the optimiser.
    groups = _param_groups(model, params, lr)
    opt = _make_optimizer(optimizer, groups, lr, weight_decay, momentum, device)
    scaler = torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))
    autocast = _autocast(device, precision)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)  # the layout tensor-core convolutions want
    step_model = torch.compile(model) if compile else model

    n_batches = len(train) if _is_loader(train) else max(1, len(train) // batch_size)
    total_steps = epochs * n_batches
    generator = torch.Generator(device=device).manual_seed(seed)
    config = {"epochs": epochs, "lr": lr, "optimizer": optimizer, "schedule": repr(schedule_fn),
              "weight_decay": weight_decay, "batch_size": batch_size, "augment": augment, "precision": precision,
              "seed": seed, "train_size": len(train) if not _is_loader(train) else len(train.dataset)}
    history = History(config=config)
    start_epoch = 0
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if checkpoint.exists() and not resume:
            raise FileExistsError(f"Checkpoint {checkpoint} already exists. Pass resume=True to continue that run, "
                                  f"or choose another path (or delete the file) to start afresh.")
        if checkpoint.exists():
            history, start_epoch = _restore(checkpoint, model, opt, scaler, generator, config)
    if progress is None:
        progress = _interactive() and active_profile() != "quick"
    if live_plot is None:
        live_plot = progress and _in_notebook()
    bar = _progress_bar(total_steps, start_epoch * n_batches) if progress else None
    plot = _live_plot() if live_plot else None

    was_training = model.training
    step = start_epoch * n_batches
    step_losses = torch.zeros(n_batches, device=device)
    try:
        for epoch in range(start_epoch, epochs):
            if before_epoch is not None:
                before_epoch(model, epoch)
            model.train()
            _sync(device)
            epoch_start = time.perf_counter()
            first_step = step
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            step_losses.zero_()
            seen = checked = 0
            for i, (x, y) in enumerate(_batches(train, batch_size, n_batches, generator, device)):
                if augment:
                    x = augment_batch(x, generator)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                factor = schedule_fn(step, total_steps)
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * factor
                with autocast:
                    logits = step_model(x)
                    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
                    if penalty is not None:
                        loss = loss + penalty(model)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()

                # Bookkeeping stays on the device: no .item() here.
                step_losses[i] = loss.detach()
                loss_sum += loss.detach() * len(y)
                correct += (logits.argmax(1) == y).sum()
                seen += len(y)
                history.step_lr.append(opt.param_groups[0]["lr"])
                step += 1
                if device.type == "cpu" or (i + 1) % sync_every == 0:  # on the CPU a sync costs nothing
                    if _found_divergence(history, step_losses, checked, i + 1, first_step):
                        break
                    checked = i + 1
                    if bar is not None:
                        bar.update(step - bar.n)
            _sync(device)
            seconds = time.perf_counter() - epoch_start
            history.step_loss += step_losses[:len(history.step_lr) - len(history.step_loss)].tolist()
            if history.diverged or _found_divergence(history, step_losses, checked, step - first_step, first_step):
                break
            history.epoch_time.append(seconds)
            history.images_seen += seen
            history.train_loss.append(loss_sum.item() / seen)
            history.train_acc.append(correct.item() / seen)
            if val is not None:
                metrics = evaluate(model, val, precision=precision)
                history.val_loss.append(metrics["loss"])
                history.val_acc.append(metrics["accuracy"])
            if bar is not None:
                bar.update(step - bar.n)
                bar.set_postfix(loss=f"{history.train_loss[-1]:.3f}",
                                **({"val_acc": f"{history.val_acc[-1]:.3f}"} if val is not None else {}))
            if plot is not None:
                plot(history)
            if checkpoint is not None:
                history.wall_time += time.perf_counter() - started
                started = time.perf_counter()
                _save_checkpoint(checkpoint, model, opt, scaler, generator, history, epoch + 1)
    except KeyboardInterrupt:
        history.interrupted = True
        done = len(history.step_lr) - len(history.step_loss)
        history.step_loss += step_losses[:done].tolist()
        del history.step_lr[len(history.step_loss):]
        where = f"; the last checkpoint ({checkpoint}) holds epoch {history.epochs_done}" if checkpoint else ""
        warnings.warn(f"Training interrupted at step {step} of {total_steps}. The model keeps what it learned{where}."
                      f" Call fit(..., checkpoint=..., resume=True) to continue.", stacklevel=2)
    finally:
        history.wall_time += time.perf_counter() - started
        model.train(was_training)
        if bar is not None:
            bar.close()
    return history


def evaluate(model: nn.Module, data, *, batch_size: int = 1024, precision: str = "auto") -> dict:
    """Mean cross-entropy loss and accuracy of ``model`` on ``data`` (in eval mode, without gradients)."""
    logits, labels = predict(model, data, batch_size=batch_size, precision=precision, return_labels=True)
    return {"loss": F.cross_entropy(logits, labels).item(),
            "accuracy": (logits.argmax(1) == labels).float().mean().item()}


@torch.no_grad()
def predict(model: nn.Module, data, *, batch_size: int = 1024, precision: str = "auto", return_labels=False):
    """The model's class scores (float32 logits) for every image of ``data``, in order."""
    device = _model_device(model)
    data = _as_data(data, "data", model, device)
    precision = _resolve_precision(device, precision)
    was_training = model.training
    model.eval()
    outputs, labels = [], []
    try:
        with _autocast(device, precision):
            if _is_loader(data):
                batches = ((x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in data)
            else:
                batches = ((data.images[i:i + batch_size], data.labels[i:i + batch_size])
                           for i in range(0, len(data), batch_size))
            for x, y in batches:
                outputs.append(model(x).float())
                labels.append(y)
    finally:
        model.train(was_training)
    logits = torch.cat(outputs)
    return (logits, torch.cat(labels)) if return_labels else logits


# ----------------------------------------------------------------------------------------------------------------
# The pieces of the loop.

def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise ValueError("The model has no parameters at all; fit and evaluate need a network with weights.")


def _check_trainable(model: nn.Module) -> None:
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("The model has no trainable parameters: every parameter has requires_grad=False. "
                         "Unfreeze some stages first, e.g. ftcourse.transfer.unfreeze(model, 'head').")


def _resolve_precision(device: torch.device, precision: str) -> str:
    """``"auto"`` becomes the device's precision (see :func:`ftcourse.env.precision_for`); others are checked."""
    precision = precision_for(device) if precision == "auto" else precision
    if precision not in ("bf16", "fp16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16', 'fp16' or 'fp32', got {precision!r}.")
    return precision


def _is_loader(data) -> bool:
    return isinstance(data, torch.utils.data.DataLoader)


def _as_data(data, name: str, model: nn.Module, device: torch.device):
    """Validate ``data`` and put it on ``device``: ImageData stays ImageData, a pair becomes one."""
    if _is_loader(data):
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
    in_channels = getattr(model, "in_channels", None)
    if in_channels is not None and data.images.shape[1] != in_channels:
        raise ValueError(f"{name}: images have {data.images.shape[1]} channels but the model expects "
                         f"{in_channels}. Grey images can be repeated to RGB with images.expand(-1, 3, -1, -1).")
    return data.to(device)


def _batches(data, batch_size: int, n_batches: int, generator: torch.Generator, device: torch.device):
    """Yield ``(images, labels)`` batches on ``device``: by device-side permutation, or from a DataLoader."""
    if _is_loader(data):
        for x, y in data:
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return
    size = min(batch_size, len(data))
    order = torch.randperm(len(data), device=device, generator=generator)
    for i in range(n_batches):
        index = order[i * size:(i + 1) * size]
        yield data.images[index], data.labels[index]


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
    fused = device.type == "cuda"  # one kernel for all parameters; on the CPU the default (foreach) is as fast
    for group in groups:
        group.setdefault("lr", group["base_lr"])
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay,
                               fused=fused or None)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused or None)
    raise ValueError(f"Unknown optimizer {name!r}; use 'sgd' or 'adamw'.")


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _found_divergence(history: History, step_losses: torch.Tensor, start: int, end: int, first_step: int) -> bool:
    """Look for a non-finite loss among this epoch's steps ``start..end-1``; if there is one, mark the run diverged.

    ``history.step_lr`` (and ``step_loss``, when already filled in) are cut to end at the first bad step.
    """
    if end <= start:
        return False
    finite = torch.isfinite(step_losses[start:end])
    if bool(finite.all()):
        return False
    bad = start + int((~finite).nonzero()[0])
    step = first_step + bad
    lr = history.step_lr[step]
    history.diverged = {"step": step, "lr": lr}
    warnings.warn(f"The loss became {step_losses[bad].item()} at step {step} (learning rate {lr:.3g}): training "
                  f"diverged and was stopped. Try a smaller learning rate or a warm-up.", stacklevel=3)
    del history.step_lr[step + 1:]
    del history.step_loss[step + 1:]
    return True


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints: written atomically (see ftcourse.files), so a crash mid-write never leaves a broken one.

def _save_checkpoint(path, model, opt, scaler, generator, history, epoch) -> None:
    state = {"format": CHECKPOINT_FORMAT, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "scaler": scaler.state_dict(), "history": history.to_dict(),
             "rng": {"data": generator.get_state(), "torch": torch.get_rng_state()}}
    save_state(path, state)


_MUST_MATCH = ("epochs", "lr", "optimizer", "schedule", "weight_decay", "batch_size", "augment", "train_size")


def _restore(path, model, opt, scaler, generator, config) -> tuple[History, int]:
    state = torch.load(path, map_location=_model_device(model), weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by ftcourse.train.fit (format "
                         f"{state.get('format')!r}). Choose another checkpoint path.")
    saved = state["history"]["config"]
    different = {k: (saved.get(k), config[k]) for k in _MUST_MATCH if saved.get(k) != config[k]}
    if different:
        listing = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in different.items())
        raise ValueError(f"Cannot resume from {path}: it was written by a run with other settings ({listing}). "
                         f"Call fit with the same settings, or use a new checkpoint path to start afresh.")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    scaler.load_state_dict(state["scaler"])
    generator.set_state(state["rng"]["data"].cpu())
    torch.set_rng_state(state["rng"]["torch"].cpu())
    return History.from_dict(state["history"]), state["epoch"]


# ----------------------------------------------------------------------------------------------------------------
# Progress display.

def _interactive() -> bool:
    return _in_notebook() or sys.stderr.isatty()


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "Shell")


def _progress_bar(total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", leave=False)


def _live_plot():
    from .plots import LiveLossPlot

    return LiveLossPlot()
