"""Explorers over cached results: move a slider, see the experiment's answer for that setting.

Built on ipywidgets' ``interactive`` and ``Output``, which exist in ipywidgets 7 (Colab) and 8 alike. Where widgets
cannot be shown (a static render of the notebook, a terminal), :func:`explore` draws every setting in one static
figure instead, so the notebook still shows the answer.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .env import in_notebook
from .sweep import mean_and_std


def bars(table: pd.DataFrame, knob: str, value, *, metric: str, group: str, ax=None):
    """One bar per ``group`` (e.g. method): mean of ``metric`` over seeds at ``knob == value``, with std bars."""
    stats = mean_and_std(table[table[knob] == value], [group], [metric])
    mean, std = stats[f"{metric}_mean"], stats[f"{metric}_std"]
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.bar(stats[group].astype(str), mean, yerr=std, capsize=4, color="C0")
    for i, (m, sd) in enumerate(zip(mean, std)):
        ax.text(i, m + sd + 0.02, f"{m:.2f}", ha="center")  # above the error bar
    ax.set(ylim=(0, 1.1), ylabel=f"{metric} (mean ± std over seeds)", xlabel=group, title=f"{knob} = {value}")
    return ax


def explore(table: pd.DataFrame, knob: str, *, metric: str = "accuracy", group: str = "method"):
    """A slider over the values of ``knob`` showing :func:`bars`; a static grid of all values without widgets."""
    values = sorted(table[knob].unique())
    if not in_notebook():  # a terminal, a script, a static render: no widgets to show
        return static_grid(table, knob, metric=metric, group=group)
    try:
        import ipywidgets
        from IPython.display import display
    except ImportError:
        return static_grid(table, knob, metric=metric, group=group)
    output = ipywidgets.Output()

    def show(value):
        output.clear_output(wait=True)
        with output:
            ax = bars(table, knob, value, metric=metric, group=group)
            display(ax.figure)
            plt.close(ax.figure)

    slider = ipywidgets.SelectionSlider(options=values, value=values[0], description=knob)
    widget = ipywidgets.interactive(show, value=slider)
    display(ipywidgets.VBox([widget, output]))
    return widget


def static_grid(table: pd.DataFrame, knob: str, *, metric: str = "accuracy", group: str = "method"):
    """Every value of ``knob`` side by side: the static stand-in for :func:`explore`."""
    values = sorted(table[knob].unique())
    fig, axes = plt.subplots(1, len(values), figsize=(4 * len(values), 3.2), sharey=True, squeeze=False)
    for ax, value in zip(axes[0], values):
        bars(table, knob, value, metric=metric, group=group, ax=ax)
    fig.tight_layout()
    return fig
