"""``ftcourse tour``: the course's main result in one command.

Loads the shipped lab checkpoint, then on two targets -- ``related`` (new shapes) and ``conflict`` (colour, which
the source learned to ignore) -- trains from scratch, a linear probe and a full fine-tune for each number of labels
per class and seed of the profile. It follows the course's fair-comparison protocol: every method gets its own
learning rate, chosen on the target's validation set by the course's one rule (:mod:`ftcourse.protocol`: the grid
:data:`ftcourse.experiments.LR_GRID`, the ladder past an edge, clearly worse smaller rates stopped early), each seed for
itself, and the table reports the test accuracy of that choice. Tuning costs about one run per rate; the tour says
how many before it starts and caches every run (in ``env.run_cache``, the cache the lessons share), so a second tour
reads them back. Prints a table of test accuracy and the
rates chosen, and writes a figure of accuracy against target size.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from . import experiments, lab, models, progress
from .env import setup
from .stats import mean_and_std

TASKS = ("related", "conflict")
SHOTS = {"quick": (5, 20), "cpu": (5, 20), "gpu": None}  # labels per class; None: the profile's own list


def run_tour(profile: str | None = None, out: str | Path = "ftcourse-tour.png", verbose: bool = True) -> pd.DataFrame:
    """Run the tour; returns one row per task, labels per class and method (mean and std over seeds)."""
    start = time.perf_counter()
    env = setup(seed=0, profile=profile, verbose=verbose)
    pretrained = models.pretrained("lab").to(env.device)
    shots = SHOTS.get(env.profile) or env.sizes.shots
    tunings = len(TASKS) * len(shots) * len(env.sizes.seeds) * len(experiments.METHODS)
    runs = tunings * len(experiments.LR_GRID)
    most = tunings * len(set(experiments.LR_GRID) | set(experiments.LR_LADDER))
    estimate = experiments.cost(runs, env.sizes.steps, env.device, most=most)
    if verbose:
        print(f"{runs} training runs or more: {len(TASKS)} targets x {len(shots)} sizes x {len(env.sizes.seeds)} seeds "
              f"x {len(experiments.METHODS)} methods x {len(experiments.LR_GRID)} learning rates to choose from on "
              f"validation, and one more rate wherever the best lies at the edge of those, up to {most} if every "
              f"ladder ran to its end (smaller rates clearly behind the best at 30% of the steps stop there).\n"
              f"{estimate}; cached in {env.run_cache}.")
    rows = []
    for task in TASKS:
        rows += experiments.compare(task, shots, seeds=env.sizes.seeds, steps=env.sizes.steps,
                                    batch_size=env.sizes.batch_size, test_per_class=env.sizes.test_per_class,
                                    pretrained=pretrained, device=env.device, lr="tuned",
                                    cache=env.run_cache)
    progress.finish()  # the bar ends before the table prints under it
    table = summarise(pd.DataFrame(rows))
    if verbose:
        print(format_table(table))
    fig = plot_tour(table)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    if verbose:
        print(f"\nfigure: {out}    total time: {time.perf_counter() - start:.0f} s")
    return table


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per task, labels per class and method: ``accuracy_mean``, ``accuracy_std``, ``n_seeds`` (see
    :func:`ftcourse.stats.mean_and_std`), ``rates`` (the learning rates chosen on validation, one per seed) and
    ``runs`` (training runs spent, tuning included)."""
    keys = ["task", "shots", "method"]
    table = mean_and_std(runs, keys, ["accuracy"])
    grouped = runs.groupby(keys, sort=False)
    table["rates"] = grouped["lr"].agg(lambda rates: " ".join(f"{r:g}" for r in rates)).to_numpy()
    table["runs"] = grouped["runs"].sum().to_numpy()
    return table


def format_table(table: pd.DataFrame) -> str:
    lines = [f"{'task':<10}{'labels/class':>13}  {'method':<9}{'test accuracy':>17}  {'rates chosen on val':<22}"
             f"{'runs':>5}"]
    for row in table.itertuples():
        lines.append(f"{row.task:<10}{row.shots:>13}  {row.method:<9}"
                     f"{row.accuracy_mean:>10.3f} ± {row.accuracy_std:.3f}  {row.rates:<22}{row.runs:>5}")
    return "\n".join(lines)


def plot_tour(table: pd.DataFrame):
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(table["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.8), sharey=True, squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = table[table["task"] == task]
        for method, rows in part.groupby("method", sort=False):
            ax.errorbar(rows["shots"], rows["accuracy_mean"], yerr=rows["accuracy_std"], marker="o", capsize=3,
                        label=method)
        chance = 1 / len(lab.TASKS[task][0])
        ax.axhline(chance, color="grey", ls=":", label="chance")
        ax.set(xscale="log", xlabel="labels per class (log scale)", title=f"target: {task}", ylim=(0, 1.02))
        shots = sorted(part["shots"].unique())
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.minorticks_off()
    axes[0][0].set_ylabel("test accuracy (mean ± std over seeds)")
    axes[0][-1].legend(loc="center right")
    fig.suptitle("From the lab checkpoint: scratch vs linear probe vs fine-tuning, each at its rate tuned on val")
    fig.tight_layout()
    return fig
