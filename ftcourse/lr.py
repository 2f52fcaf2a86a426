"""Learning-rate schedules: how the rate changes over the steps of a run.

A schedule is a function ``factor(step, total_steps)`` that multiplies each parameter group's base learning rate.
Every step :func:`ftcourse.train.fit` sets ``group["lr"] = group["base_lr"] * schedule(step, total)``; because the
factor is a plain function of the step, resuming a run only needs the step count.

- :class:`Constant` -- the same rate throughout, optionally after a warm-up.
- :class:`Cosine` -- warm-up, then a half cosine down to ``final`` x the base rate (Loshchilov & Hutter 2017).
- :class:`OneCycle` -- up from base/``div`` to the base rate, then down to base/``final_div`` (Smith 2018).
- :class:`SlantedTriangular` -- ULMFiT's short linear rise and long linear fall (Howard & Ruder 2018).

Why warm up? At the start the new head is random and its gradients are large; a few small steps let it settle
before large steps can wreck the pretrained features below it.

Which base rate? :func:`ftcourse.rangetest.lr_find` runs Smith's LR range test: a short run whose rate grows from
tiny to huge, read off a plot of loss against rate (Smith 2017, "Cyclical learning rates for training neural
networks").
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
