"""``ftcourse tour``: the course's main result in one command.

Loads the shipped lab checkpoint, then on two targets -- ``related`` (new shapes) and ``conflict`` (colour, which
the source learned to ignore) -- trains from scratch, a linear probe and a full fine-tune for each number of labels
per class and seed of the profile. Prints a table of test accuracy and time and writes a figure of accuracy against
target size. On ``related``, pretraining should win by far when labels are few; on ``conflict``, the probe should be
near chance and fine-tuning below scratch: negative transfer.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from . import experiments, lab, models
from .env import setup
from .sweep import mean_and_std

TASKS = ("related", "conflict")


def run_tour(profile: str | None = None, out: str | Path = "ftcourse-tour.png", verbose: bool = True) -> pd.DataFrame:
    """Run the tour; returns one row per task, labels per class and method (mean and std over seeds)."""
    start = time.perf_counter()
    env = setup(seed=0, profile=profile, verbose=verbose)
    pretrained = models.pretrained("lab").to(env.device)
    rows = []
    for task in TASKS:
        rows += experiments.compare(task, env.sizes.shots, seeds=env.sizes.seeds, steps=env.sizes.steps,
                                    batch_size=env.sizes.batch_size, test_per_class=env.sizes.test_per_class,
                                    pretrained=pretrained, device=env.device)
    table = summarise(pd.DataFrame(rows))
    if verbose:
        print(format_table(table))
    fig = plot_tour(table)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    if verbose:
        print(f"\nfigure: {out}    total time: {time.perf_counter() - start:.0f} s")
    return table


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per task, labels per class and method: ``accuracy_mean``, ``accuracy_std``, ``seconds_mean``,
    ``seconds_std`` and ``n_seeds`` (see :func:`ftcourse.sweep.mean_and_std`)."""
    return mean_and_std(runs, ["task", "shots", "method"], ["accuracy", "seconds"])


def format_table(table: pd.DataFrame) -> str:
    lines = [f"{'task':<10}{'labels/class':>13}  {'method':<9}{'test accuracy':>17}{'seconds':>9}"]
    for row in table.itertuples():
        lines.append(f"{row.task:<10}{row.shots:>13}  {row.method:<9}"
                     f"{row.accuracy_mean:>10.3f} ± {row.accuracy_std:.3f}{row.seconds_mean:>9.1f}")
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
    fig.suptitle("From the lab checkpoint: scratch vs linear probe vs fine-tuning")
    fig.tight_layout()
    return fig
