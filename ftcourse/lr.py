"""Learning-rate schedules, and the range test that finds a learning rate to start from.

A schedule is a function ``factor(step, total_steps)`` that multiplies each parameter group's base learning rate.
Every step :func:`ftcourse.train.fit` sets ``group["lr"] = group["base_lr"] * schedule(step, total)``; because the
factor is a plain function of the step, resuming a run only needs the step count.

- :class:`Constant` -- the same rate throughout, optionally after a warm-up.
- :class:`Cosine` -- warm-up, then a half cosine down to ``final`` x the base rate (Loshchilov & Hutter 2017).
- :class:`OneCycle` -- up from base/``div`` to the base rate, then down to base/``final_div`` (Smith 2018).
- :class:`SlantedTriangular` -- ULMFiT's short linear rise and long linear fall (Howard & Ruder 2018).

Why warm up? At the start the new head is random and its gradients are large; a few small steps let it settle
before large steps can wreck the pretrained features below it.

Which base rate? :func:`lr_find` runs Smith's LR range test: a short run whose rate grows from tiny to huge, read
off a plot of loss against rate (Smith 2017, "Cyclical learning rates for training neural networks").
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _warmup_steps(warmup: float, total: int) -> int:
    """The first ``warmup * total`` steps ramp the factor up linearly: 1/(w+1), 2/(w+1), ..., w/(w+1), then 1."""
    return int(round(warmup * total))


@dataclass(frozen=True)
class Constant:
    """factor = 1 after a linear warm-up over the first ``warmup`` fraction of the steps."""

    warmup: float = 0.0

    def __call__(self, step: int, total: int) -> float:
        w = _warmup_steps(self.warmup, total)
        return (step + 1) / (w + 1) if step < w else 1.0


@dataclass(frozen=True)
class Cosine:
    """Linear warm-up, then factor = final + (1 - final) * (1 + cos(pi * t)) / 2 with t going from 0 to 1."""

    warmup: float = 0.05
    final: float = 0.0

    def __call__(self, step: int, total: int) -> float:
        w = _warmup_steps(self.warmup, total)
        if step < w:
            return (step + 1) / (w + 1)
        t = (step - w) / max(1, total - w)
        return self.final + (1 - self.final) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class OneCycle:
    """Linear rise from 1/``div`` to 1 over the first ``peak_at`` fraction, then a cosine fall to 1/``final_div``.

    Smith & Topin 2018 ("Super-convergence"): the high middle of the cycle explores, the long low tail settles.
    (Smith also cycles momentum inversely; the course keeps momentum fixed.)
    """

    peak_at: float = 0.25
    div: float = 25.0
    final_div: float = 1e4

    def __call__(self, step: int, total: int) -> float:
        peak = max(1, int(round(self.peak_at * total)))
        start, end = 1 / self.div, 1 / self.final_div
        if step < peak:
            return start + (1 - start) * step / peak
        t = (step - peak) / max(1, total - peak)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))


@dataclass(frozen=True)
class SlantedTriangular:
    """ULMFiT's schedule (Howard & Ruder 2018, eq. 3): a short linear increase, then a long linear decay.

    cut = floor(T * cut_frac); p = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / cut_frac - 1));
    factor = (1 + p * (ratio - 1)) / ratio, so the rate goes from base/ratio up to base and back down.
    """

    cut_frac: float = 0.1
    ratio: float = 32.0

    def __call__(self, step: int, total: int) -> float:
        cut = max(1, math.floor(total * self.cut_frac))
        if step < cut:
            p = step / cut
        else:
            p = max(0.0, 1 - (step - cut) / (cut * (1 / self.cut_frac - 1)))
        return (1 + p * (self.ratio - 1)) / self.ratio


SCHEDULES = {"constant": Constant, "cosine": Cosine, "onecycle": OneCycle, "slanted": SlantedTriangular}


def get_schedule(schedule) -> callable:
    """A schedule from its name (``"constant"``, ``"cosine"``, ``"onecycle"``, ``"slanted"``) or a callable."""
    if callable(schedule):
        return schedule
    if schedule in SCHEDULES:
        return SCHEDULES[schedule]()
    raise ValueError(f"Unknown schedule {schedule!r}. Use one of {sorted(SCHEDULES)}, an instance such as "
                     f"ftcourse.lr.Cosine(warmup=0.1), or any function f(step, total_steps) -> factor.")


# ------------------------------------------------------------------------------------------------------------------
# The LR range test.

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
    from . import train  # imported here, not at the top: train imports this module for its schedules

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
    device = train._model_device(model)
    data = train._as_data(data, "train", model, device)
    train._check_trainable(model)
    precision = train._resolve_precision(device, precision)
    groups = train._param_groups(model, params, start_lr)
    if not all(group["base_lr"] > 0 for group in groups):
        raise ValueError(f"Every parameter group needs a positive 'lr' (the ramp keeps their ratios), got "
                         f"{[group['base_lr'] for group in groups]}.")
    opt = train._make_optimizer(optimizer, groups, start_lr, weight_decay, momentum, device)
    ratios = [group["base_lr"] / groups[0]["base_lr"] for group in opt.param_groups]
    scaler = torch.amp.GradScaler(device.type, enabled=(precision == "fp16"))
    autocast = train._autocast(device, precision)
    batches = _endless_batches(data, batch_size, torch.Generator(device=device).manual_seed(seed), device)

    # Everything the test changes, to be put back afterwards. (Unlike fit, no channels_last on the GPU: that
    # would change the model's memory layout for good.)
    saved = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]

    lrs, losses, smoothed = [], [], []
    average, best, diverged = 0.0, math.inf, False
    model.train()
    try:
        for i in range(steps):
            lr = start_lr * (end_lr / start_lr) ** (i / (steps - 1))
            for group, ratio in zip(opt.param_groups, ratios):
                group["lr"] = lr * ratio
            x, y = next(batches)
            with autocast:
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            # One host sync per step (.item()): the test must see the loss to know when to stop, and a hundred
            # syncs cost nothing next to a training run.
            raw = loss.item()
            average = smoothing * average + (1 - smoothing) * raw
            smooth = average / (1 - smoothing ** (i + 1))
            lrs.append(lr)
            losses.append(raw)
            smoothed.append(smooth)
            if not math.isfinite(smooth) or smooth > diverge_factor * best:
                diverged = True
                break
            best = min(best, smooth)
    finally:
        model.load_state_dict(saved)
        for p, flag, grad in zip(model.parameters(), flags, grads):
            p.requires_grad_(flag)
            p.grad = grad
        for module, mode in zip(model.modules(), modes):
            module.training = mode

    suggestion, lr_at_min = _read_curve(lrs, smoothed)
    return LRFinderResult(lrs, losses, smoothed, suggestion, lr_at_min, lr_at_min / 10, diverged)


def _endless_batches(data, batch_size: int, generator: torch.Generator, device: torch.device):
    """fit's batches, epoch after epoch (a fresh permutation each time), for as long as they are asked for."""
    from . import train

    n_batches = len(data) if train._is_loader(data) else max(1, len(data) // batch_size)
    if n_batches == 0:
        raise ValueError("The DataLoader yields no batches; give it more data or a smaller batch_size.")
    while True:
        yield from train._batches(data, batch_size, n_batches, generator, device)


def _read_curve(lrs: list[float], smoothed: list[float]) -> tuple[float, float]:
    """(the rate of steepest descent before the minimum, the rate at the minimum) of a range test's curve.

    The slope at step i is a central difference in log lr, (s_(i+1) - s_(i-1)) / log(lr_(i+1) / lr_(i-1)); the
    ends of the curve, which have only one neighbour, are left out.
    """
    finite = [i for i, s in enumerate(smoothed) if math.isfinite(s)]
    if not finite:
        raise ValueError(f"The loss was {smoothed[0]} from the very first step (lr {lrs[0]:.2g}), so the test has "
                         f"nothing to show. Check that the model gives finite outputs on this data.")
    lowest = min(finite, key=lambda i: smoothed[i])
    slopes = {i: (smoothed[i + 1] - smoothed[i - 1]) / math.log(lrs[i + 1] / lrs[i - 1]) for i in range(1, lowest)}
    if not slopes:
        warnings.warn(f"The loss did not fall during the range test (it was lowest at step {lowest}, lr "
                      f"{lrs[lowest]:.2g}), so there is no descent to read. Try a smaller start_lr, more steps, or "
                      f"check that the model can learn this data; the suggestion is the rate at the minimum.",
                      stacklevel=3)
        return lrs[lowest], lrs[lowest]
    return lrs[min(slopes, key=slopes.get)], lrs[lowest]
