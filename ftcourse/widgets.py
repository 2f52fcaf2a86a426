"""Explorers over cached results: move a slider, see the experiment's answer for that setting.

Built on ipywidgets' ``interactive`` and ``Output``, which exist in ipywidgets 7 (Colab) and 8 alike. Where widgets
cannot be shown (a static render of the notebook, a terminal), :func:`explore` draws every setting in one static
figure instead, so the notebook still shows the answer.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from .env import in_notebook
from .plots import METHOD_COLOURS, method_colour
from .stats import mean_and_std


def bars(table: pd.DataFrame, knob: str, value, *, metric: str, group: str, ax=None):
    """One bar per ``group`` (e.g. method): mean of ``metric`` over seeds at ``knob == value``, with std bars.

    Each method has its colour of every figure of the course (:func:`ftcourse.plots.method_colour`).
    """
    stats = mean_and_std(table[table[knob] == value], [group], [metric])
    mean, std = stats[f"{metric}_mean"], stats[f"{metric}_std"].fillna(0)
    if ax is None:
        _, ax = plt.subplots(figsize=(4.5, 3.2))
    names = stats[group].astype(str)
    colours = [method_colour(name) if name in METHOD_COLOURS else f"C{i}" for i, name in enumerate(names)]
    ax.bar(names, mean, yerr=std, capsize=4, color=colours)
    top = max(1.0, float((mean + std).max()) if len(mean) else 1.0)
    for i, (m, sd) in enumerate(zip(mean, std)):  # above the error bar; smaller where many bars share the width
        ax.text(i, m + sd + 0.02 * top, f"{m:.2f}", ha="center", fontsize=9 if len(names) <= 5 else 7)
    ax.set(ylim=(0, 1.12 * top), ylabel=f"{metric}\n(mean ± std over seeds)", xlabel=group, title=f"{knob} = {value}")
    if sum(len(name) for name in names) > 24:  # long names would overlap: slant them
        ax.set_xticks(range(len(names)), names, rotation=25 if len(names) <= 5 else 45, ha="right",
                      rotation_mode="anchor", fontsize=None if len(names) <= 5 else 8)
    return ax


def explore(table: pd.DataFrame, knob: str, *, metric: str = "accuracy", group: str = "method", where: str = ""):
    """A slider over the values of ``knob`` showing :func:`bars`, and below it the static grid of every value.

    ``where`` names what the table holds fixed, for the titles (e.g. ``"5 labels per class"``): a reader of the
    figure alone cannot see that a lesson kept only one target size.

    In a notebook the slider needs a live kernel; the static figure (:func:`static_grid`) is an ordinary image
    output, so a saved notebook, a web page, GitHub or nbviewer still shows the answer where the slider cannot be
    drawn. In a notebook it returns None (nothing for the cell to echo); elsewhere (a terminal, a script) it
    returns the static figure.
    """
    values = sorted(table[knob].unique())
    grid = static_grid(table, knob, metric=metric, group=group, where=where)
    plt.close(grid)  # shown once, below, by display(): not also by the inline backend or the slider's first draw
    if not in_notebook():  # a terminal, a script: no widgets to show
        return grid
    from IPython.display import display

    try:
        import ipywidgets
    except ImportError:
        ipywidgets = None
    if ipywidgets is not None:
        output = ipywidgets.Output()

        def show(value):
            output.clear_output(wait=True)
            with output:
                ax = bars(table, knob, value, metric=metric, group=group)
                if where:
                    ax.set_title(f"{knob} = {value}, {where}")
                display(ax.figure)
                plt.close(ax.figure)

        slider = ipywidgets.SelectionSlider(options=values, value=values[0], description=knob)
        display(ipywidgets.VBox([ipywidgets.interactive(show, value=slider), output]))
    display(grid)  # the static answer, below the slider: every page that shows the notebook shows this
    return None


def static_grid(table: pd.DataFrame, knob: str, *, metric: str = "accuracy", group: str = "method",
                where: str = ""):
    """Every value of ``knob`` side by side: the static stand-in for :func:`explore`.

    At most 10 inches wide, so the figure stays readable at a web page's width: each panel needs about 0.45 inch
    a bar, so with many groups fewer panels share a row (at most four).
    """
    values = sorted(table[knob].unique())
    panel = max(2.6, 0.45 * table[group].nunique() + 0.8)
    ncols = max(1, min(4, len(values), int(10.0 // panel)))
    nrows = -(-len(values) // ncols)
    width = min(10.0, panel * ncols + 0.8)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.2 * nrows), sharey=True, squeeze=False)
    for ax, value in zip(axes.flat, values):
        bars(table, knob, value, metric=metric, group=group, ax=ax)
    for ax in axes.flat[len(values):]:
        ax.axis("off")
    for ax in axes[:, 1:].flat:
        ax.set_ylabel("")
    fig.suptitle(f"Every value of {knob} at once{', ' + where if where else ''} (the static view of the explorer)",
                 fontsize=11)
    fig.tight_layout()
    return fig
