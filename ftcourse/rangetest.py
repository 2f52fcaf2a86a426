"""The learning-rate range test: a short run whose rate grows from tiny to huge, to find a rate to start from.

Smith 2017 ("Cyclical learning rates for training neural networks", WACV) raises the rate linearly over a few epochs
and watches the accuracy; fastai's ``lr_find``, followed here, raises it exponentially over about a hundred
mini-batches and reads the loss. :func:`lr_find` runs the test with the training engine's own pieces
(:mod:`ftcourse.train`), so it sees exactly the steps :func:`ftcourse.train.fit` would take, and
:class:`LRFinderResult` reads the curve and plots it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from .train import BatchStream, Stepper, as_data, model_device


@dataclass
class LRFinderResult:
    """What :func:`lr_find` saw, step by step, and the rates read off its curve.

    ``lrs`` are the first parameter group's rates, ``losses`` the raw mini-batch losses and ``smoothed`` their
    bias-corrected moving average. Three readings of the curve: ``suggestion``, the rate where the smoothed loss falls
    fastest (the most negative slope against log lr, before the minimum); ``lr_at_min``, where it is lowest; and
    ``min_over_10``, a tenth of that, the other common rule of thumb. ``diverged`` says the loss blew up, which
    stopped the test (usually before ``end_lr``).
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    lr_at_min: float
    min_over_10: float
    diverged: bool = False

    def __repr__(self) -> str:
        end = "stopped when the loss blew up" if self.diverged else "no blow-up"
        return (f"LRFinderResult({len(self.lrs)} steps, lr {self.lrs[0]:.2g} to {self.lrs[-1]:.2g}, {end}; "
                f"suggestion {self.suggestion:.2g} (steepest descent), minimum at {self.lr_at_min:.2g}, "
                f"min/10 {self.min_over_10:.2g})")

    def plot(self, ax=None):
        """Loss against learning rate (log scale), with the suggestion marked. Returns the figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(figsize=(6, 3.5))
        else:
            fig = ax.figure
        at = self.lrs.index(self.suggestion)
        ax.plot(self.lrs, self.losses, alpha=0.3, label="loss per step")
        ax.plot(self.lrs, self.smoothed, label="smoothed")
        ax.plot(self.suggestion, self.smoothed[at], "o", color="red",
                label=f"steepest descent: {self.suggestion:.2g}")
        ax.axvline(self.min_over_10, color="grey", ls=":", label=f"minimum / 10: {self.min_over_10:.2g}")
        ax.set_xscale("log")
        ax.set(xlabel="learning rate (log scale)", ylabel="training loss (cross-entropy)", title="LR range test")
        # The loss explodes at the end; keep the y-axis on the part of the curve up to the minimum.
        upto = self.lrs.index(self.lr_at_min) + 1
        low = min(min(self.smoothed[:upto]), *(loss for loss in self.losses[:upto] if math.isfinite(loss)))
        high = max(self.smoothed[:upto])
        span = (high - low) or 1.0
        ax.set_ylim(low - 0.1 * span, high + 0.3 * span)
        ax.legend()
        fig.tight_layout()
        return fig


def lr_find(model, data, *, start_lr: float = 1e-5, end_lr: float = 10.0, steps: int = 100, batch_size: int = 64,
            optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 0.0, smoothing: float = 0.98,
            diverge_factor: float = 4.0, params=None, precision: str = "auto", seed: int = 0) -> LRFinderResult:
    """The LR range test (Smith 2017, "Cyclical learning rates for training neural networks").

    Train for ``steps`` mini-batches while the learning rate grows exponentially from ``start_lr`` to ``end_lr``,

        lr_i = start_lr * (end_lr / start_lr) ** (i / (steps - 1)),     i = 0 .. steps - 1,

    and record the loss of each step. At first the rate is too small to change anything and the loss stays flat;
    then it falls, faster and faster; then the rate gets too large, the steps overshoot and the loss shoots up.
    A good rate to train with lies where the loss is still falling steeply, well before the minimum. (Smith raises
    the rate linearly over a few epochs; fastai's ``lr_find``, followed here, raises it exponentially over about a
    hundred mini-batches, so that every factor of ten gets the same number of steps.)

    The raw losses are noisy (each is one mini-batch), so they are smoothed as in fastai: an exponential moving
    average a_i = smoothing * a_(i-1) + (1 - smoothing) * loss_i from a_(-1) = 0, divided by 1 - smoothing**(i+1)
    to undo its pull towards that 0 at the start (the "bias correction" of Adam). The test stops once the smoothed
    loss exceeds ``diverge_factor`` times the best seen so far, or stops being finite: the rest would be noise.

    The model is trained in place and then put back exactly as it was: weights, buffers (BatchNorm running
    statistics), ``requires_grad`` flags, gradients and train/eval modes. ``data``, ``batch_size``, ``optimizer``,
    ``momentum``, ``weight_decay``, ``params`` and ``precision`` mean what they mean for
    :func:`ftcourse.train.fit` (a Task means its training split); with parameter groups the ramp sets the first
    group's rate and scales the others with it, so layer-wise ratios are kept. ``seed`` seeds the order of batches.
    Datasets smaller than ``steps * batch_size`` are gone through several times.

    >>> result = lr_find(model, task)           # doctest: +SKIP
    >>> result.plot()                           # doctest: +SKIP
    >>> fit(model, task, lr=result.suggestion)  # doctest: +SKIP
    """
    if not (start_lr > 0 and end_lr > 0):
        raise ValueError(f"start_lr and end_lr must be positive learning rates, got start_lr={start_lr} and "
                         f"end_lr={end_lr}. The usual range is start_lr=1e-5 to end_lr=10.")
    if start_lr >= end_lr:
        raise ValueError(f"start_lr must be smaller than end_lr (the test sweeps the rate upwards), got "
                         f"start_lr={start_lr} and end_lr={end_lr}.")
    if steps < 10:
        raise ValueError(f"steps must be at least 10 to draw a curve worth reading (100 is usual), got {steps}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must lie in [0, 1) (0 = no smoothing, 0.98 is usual), got {smoothing}.")
    if not diverge_factor > 1:
        raise ValueError(f"diverge_factor must be greater than 1 (the test stops when the smoothed loss exceeds "
                         f"diverge_factor x its best so far; 4 is usual), got {diverge_factor}.")
    device = model_device(model)
    data = as_data(data, "train", model, device)
    if params is not None and not all(group.get("lr", start_lr) > 0 for group in params):
        raise ValueError(f"Every parameter group needs a positive 'lr' (the ramp keeps their ratios), got "
                         f"{[group.get('lr') for group in params]}.")
    stepper = Stepper(model, lr=start_lr, optimizer=optimizer, weight_decay=weight_decay, momentum=momentum,
                      params=params, precision=precision)
    groups = stepper.optimizer.param_groups
    ratios = [group["base_lr"] / groups[0]["base_lr"] for group in groups]
    batches = BatchStream(data, batch_size, torch.Generator(device=device).manual_seed(seed), device,
                          num_classes=getattr(model, "num_classes", None))

    # Everything the test changes, to be put back afterwards. (On a GPU the Stepper has put the weights in the
    # channels_last layout, as fit does: that changes how they are stored, not their values.)
    saved = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]

    lrs, losses = [], []
    curve = SmoothedLoss(smoothing, diverge_factor)
    model.train()
    try:
        for i in range(steps):
            lr = start_lr * (end_lr / start_lr) ** (i / (steps - 1))
            for group, ratio in zip(groups, ratios):
                group["lr"] = lr * ratio
            loss, _ = stepper.step(*batches.next())
            # One host sync per step (.item()): the test must see the loss to know when to stop, and a hundred
            # syncs cost nothing next to a training run.
            lrs.append(lr)
            losses.append(loss.item())
            if curve.add(losses[-1]):
                break
    finally:
        model.load_state_dict(saved)
        for p, flag, grad in zip(model.parameters(), flags, grads):
            p.requires_grad_(flag)
            p.grad = grad
        for module, mode in zip(model.modules(), modes):
            module.training = mode

    suggestion, lr_at_min = read_curve(lrs, curve.smoothed, skip=steps // 10)
    return LRFinderResult(lrs, losses, curve.smoothed, suggestion, lr_at_min, lr_at_min / 10, curve.blew_up)


class SmoothedLoss:
    """fastai's reading of a range test's losses, one step at a time: a bias-corrected moving average,

        a_i = smoothing * a_(i-1) + (1 - smoothing) * loss_i  (a_(-1) = 0),   smoothed_i = a_i / (1 - smoothing**(i+1)),

    and the blow-up rule: :meth:`add` returns True (and sets ``blew_up``) once the smoothed loss is not finite or
    exceeds ``diverge_factor`` times the lowest smoothed loss before it. ``smoothed`` holds every value added,
    the one that blew up included.
    """

    def __init__(self, smoothing: float = 0.98, diverge_factor: float = 4.0):
        self.smoothing, self.diverge_factor = smoothing, diverge_factor
        self.smoothed: list[float] = []
        self.blew_up = False
        self._average, self._best = 0.0, math.inf

    def add(self, loss: float) -> bool:
        self._average = self.smoothing * self._average + (1 - self.smoothing) * loss
        smooth = self._average / (1 - self.smoothing ** (len(self.smoothed) + 1))
        self.smoothed.append(smooth)
        self.blew_up = not math.isfinite(smooth) or smooth > self.diverge_factor * self._best
        self._best = min(self._best, smooth)
        return self.blew_up


def read_losses(lrs: list[float], losses: list[float], smoothing: float = 0.98, diverge_factor: float = 4.0,
                steps: int | None = None) -> tuple[float, float]:
    """(the suggestion, the rate at the minimum) of a range test recorded elsewhere: ``losses[i]`` at ``lrs[i]``,
    read exactly as :func:`lr_find` reads its own (:class:`SmoothedLoss`, then the steepest descent before the
    minimum, the first tenth of the ``steps`` planned left out; default: as many as there are losses). Steps after
    the blow-up are ignored."""
    curve = SmoothedLoss(smoothing, diverge_factor)
    for loss in losses:
        if curve.add(loss):
            break
    return read_curve(lrs[:len(curve.smoothed)], curve.smoothed, skip=(steps or len(losses)) // 10)


def read_curve(lrs: list[float], smoothed: list[float], skip: int = 1) -> tuple[float, float]:
    """(the rate of steepest descent before the minimum, the rate at the minimum) of a range test's curve.

    The slope at step i is a central difference in log lr, (s_(i+1) - s_(i-1)) / log(lr_(i+1) / lr_(i-1)), read
    from step ``skip`` up to the minimum. The callers skip the first tenth of the planned steps, as fastai's
    ``lr_find`` does: the moving average's first values rest on a few mini-batches, so their slopes are noise.
    """
    finite = [i for i, s in enumerate(smoothed) if math.isfinite(s)]
    if not finite:
        raise ValueError(f"The loss was {smoothed[0]} from the very first step (lr {lrs[0]:.2g}), so the test has "
                         f"nothing to show. Check that the model gives finite outputs on this data.")
    lowest = min(finite, key=lambda i: smoothed[i])
    slopes = {i: (smoothed[i + 1] - smoothed[i - 1]) / math.log(lrs[i + 1] / lrs[i - 1])
              for i in range(max(1, skip), lowest)}
    if not slopes:
        warnings.warn(f"The loss did not fall during the range test (it was lowest at step {lowest}, lr "
                      f"{lrs[lowest]:.2g}), so there is no descent to read. Try a smaller start_lr, more steps, or "
                      f"check that the model can learn this data; the suggestion is the rate at the minimum.",
                      stacklevel=3)
        return lrs[lowest], lrs[lowest]
    return lrs[min(slopes, key=slopes.get)], lrs[lowest]
