"""One progress bar over the training runs of an experiment, with a time left measured on this machine.

A lesson's experiment is many training runs (methods x seeds x learning rates), some read back from the cache.
Before it starts, the lesson says what it will cost (:func:`ftcourse.experiments.cost`), which opens a
:class:`RunMeter` here; then every run that :func:`ftcourse.protocol.tune` completes -- trained now or read from
the cache -- moves the bar by one, and every rate the ladder adds makes the bar one run longer.

**The time left** is the runs still to come times the steps of a run times the seconds one step takes *here*: at
first as measured on the spot before the experiment (a few steps of the lab network), then as measured on the
runs trained so far. Cached runs cost nothing and count as done. A run stopped early by the protocol costs less
than a whole one, so the estimate leans long.

The bar is tqdm's (``tqdm.auto``: a widget in Jupyter, text in a terminal). It is off in the ``quick`` profile (its
runs take seconds) and when ``$FTCOURSE_PROGRESS`` is ``0``, which also silences :func:`ftcourse.env.setup`'s
warning about a busy machine (the site's build sets it: a page shows results, not the state of the machine that
built it).
"""

from __future__ import annotations

import os

PROGRESS_VARIABLE = "FTCOURSE_PROGRESS"


def format_seconds(seconds: float) -> str:
    """``75`` -> ``"1 min 15 s"``; ``8`` -> ``"8 s"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class RunMeter:
    """The bar over ``runs`` runs of ``steps`` steps, at first ``seconds_per_step`` each (then as measured)."""

    def __init__(self, runs: int, steps: int, seconds_per_step: float, *, show: bool = True):
        self.total, self.steps = max(0, int(runs)), max(1, int(steps))
        self.guess = float(seconds_per_step)
        self.done = 0
        self.trained_steps, self.trained_seconds = 0, 0.0
        self.bar = None
        if show:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc="runs", unit="run", dynamic_ncols=True, mininterval=0.5,
                            bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed} so far{postfix}")
            self._show()

    @property
    def seconds_per_step(self) -> float:
        """Measured on the steps trained so far, else the guess made before the first run."""
        return self.trained_seconds / self.trained_steps if self.trained_steps else self.guess

    def seconds_left(self) -> float:
        return max(0, self.total - self.done) * self.steps * self.seconds_per_step

    def trained(self, steps: int, seconds: float) -> None:
        """``steps`` optimiser steps were just trained, in ``seconds``."""
        if steps > 0 and seconds > 0:
            self.trained_steps += steps
            self.trained_seconds += seconds
            self._show()

    def run_done(self, runs: int = 1) -> None:
        """``runs`` more runs are complete (trained, stopped early, or read from the cache)."""
        self.done += runs
        if self.done > self.total:
            self.total = self.done
            if self.bar is not None:
                self.bar.total = self.total
        if self.bar is not None:
            self.bar.update(runs)
        self._show()

    def more(self, runs: int = 1) -> None:
        """``runs`` runs that were not announced will come (the ladder tries a rate beyond the grid)."""
        self.total += runs
        if self.bar is not None:
            self.bar.total = self.total
        self._show()

    def _show(self) -> None:
        if self.bar is None:
            return
        where = "measured" if self.trained_steps else "estimated"
        self.bar.set_postfix_str(f"about {format_seconds(self.seconds_left())} left "  # tqdm writes ", " before it
                                 f"({self.seconds_per_step * 1000:.0f} ms per step, {where})",
                                 refresh=False)  # drawn by the next update, at most twice a second

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


_current: list[RunMeter] = []  # the meter of the experiment running now (at most one)


def showing(profile: str, interactive: bool) -> bool:
    """Whether bars are shown: to a person (``interactive``: a notebook or a terminal; not a log file), not in the
    quick profile, not where ``$FTCOURSE_PROGRESS=0``."""
    return interactive and profile != "quick" and os.environ.get(PROGRESS_VARIABLE, "1").strip() != "0"


def start(runs: int, steps: int, seconds_per_step: float, *, show: bool = True) -> RunMeter:
    """Open the meter of the experiment about to run, closing the previous experiment's."""
    finish()
    meter = RunMeter(runs, steps, seconds_per_step, show=show)
    _current.append(meter)
    return meter


def finish() -> None:
    """Close the open meter, if any (before printing a result under it, in a terminal)."""
    while _current:
        _current.pop().close()


def trained(steps: int, seconds: float) -> None:
    if _current:
        _current[-1].trained(steps, seconds)


def run_done(runs: int = 1) -> None:
    if _current:
        _current[-1].run_done(runs)


def more(runs: int = 1) -> None:
    if _current:
        _current[-1].more(runs)
