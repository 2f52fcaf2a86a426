"""Grids of runs, with an on-disk cache.

An experiment is rarely one run: it is a grid ("which learning rate, with how many stages frozen?"), and each
point of the grid is run with a few seeds. ``sweep`` runs that grid and returns a table.

Why cache? Each run is saved to its own small JSON file the moment it finishes. Re-running a notebook then costs
nothing (results are read back, not recomputed), and an interrupted sweep (a crash, a Ctrl-C, a closed laptop)
resumes where it stopped: only the missing runs execute. A result is only valid for the code that produced it, so
the file name is a hash of the function's name, the configuration, the seed and a code version (by default a hash
of the function's source: editing the function invalidates its results), and of what the function builds on: the
version of ftcourse and the sha256 of each shipped checkpoint. A new version of the library, or a new checkpoint,
runs everything again rather than serve results it did not make.

Why several seeds? The same configuration trained with two seeds gives two different numbers. One run cannot tell
a real effect from that noise: the mean over seeds is a better estimate, and the std says how big the noise is.
Two configurations whose means differ by much less than their stds have not been shown to differ.

``SweepResult.summary`` summarises its runs with :func:`ftcourse.stats.mean_and_std`, the course's one way to
summarise runs over seeds; :mod:`ftcourse.stats` also holds the one rule for comparing two methods over seeds.

Diverged runs (the loss blew up to NaN or inf) are results too: they are kept, counted and marked, never dropped.
NaN and inf are saved with Python's ``json`` as the tokens ``NaN`` and ``Infinity``: not strict JSON, but
readable, and Python reads them back as the same floats.
"""

import datetime
import hashlib
import inspect
import itertools
import json
import math
import re
import time
from pathlib import Path

import matplotlib.colors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import ftcourse

from . import models
from .stats import mean_and_std
from .files import save_json
from .plots import METHOD_COLOURS, method_colour

JSON_VALUES = "ints, floats, strings, bools, None, or lists/tuples of these"
CONFIG_FIX = ("The cache names each run by its configuration, so grid values must be JSON values: " + JSON_VALUES +
              ". Pass a name or a number and build the object inside run, e.g. {'optimizer': ['sgd', 'adam']}.")
METRIC_FIX = "Metrics are saved as JSON: return " + JSON_VALUES + ", e.g. loss.item() or float(accuracy)."


class SweepResult:
    """The runs of a sweep: ``runs`` (one row per configuration and seed) and ``summary()`` (one row per configuration).

    ``runs`` has the grid's columns, ``seed``, the metrics ``run`` returned, ``diverged`` (the run said
    ``"diverged": True`` or returned a NaN/inf metric) and ``cached`` (read from disk rather than run now).
    """

    def __init__(self, runs, knobs):
        self.runs = runs
        self.knobs = list(knobs)

    @property
    def ran(self):
        """How many runs executed in this call."""
        return int((~self.runs["cached"]).sum())

    @property
    def from_cache(self):
        """How many runs were read back from the cache."""
        return int(self.runs["cached"].sum())

    @property
    def metrics(self):
        """The names of the numeric metrics (the ones ``summary`` averages)."""
        skip = set(self.knobs) | {"seed", "diverged", "cached"}
        return [c for c in self.runs.columns if c not in skip
                and pd.api.types.is_numeric_dtype(self.runs[c]) and not pd.api.types.is_bool_dtype(self.runs[c])]

    def summary(self, metric=None):
        """Mean and std over seeds of each numeric metric (or only ``metric``), one row per configuration.

        Columns: the grid's knobs, ``<metric>_mean`` and ``<metric>_std`` for each metric, ``n_seeds`` and
        ``n_diverged`` (see :func:`mean_and_std`). NaN and inf values (diverged runs) are left out of the mean and
        std, so one blown-up seed does not turn the whole configuration into NaN; ``n_diverged`` says how many runs
        that was. The std is the sample std (ddof=1) of the finite values, 0.0 when there is only one.
        """
        if metric is not None and metric not in self.metrics:
            raise ValueError(f"{metric!r} is not a numeric metric of this sweep; choose one of {self.metrics}.")
        metrics = self.metrics if metric is None else [metric]
        table = mean_and_std(self.runs, self.knobs, metrics)
        n_diverged = self.runs.groupby(self.knobs, sort=False, dropna=False)["diverged"].sum()
        table["n_diverged"] = n_diverged.astype(int).to_numpy()
        return table

    def select(self, **values):
        """Only the runs whose knobs have the given values, e.g. ``result.select(frozen_stages=2)``."""
        keep = pd.Series(True, index=self.runs.index)
        for name, value in values.items():
            if name not in self.knobs:
                raise ValueError(f"{name!r} is not a knob of this sweep; its knobs are {self.knobs}.")
            keep &= self.runs[name].map(lambda v: v == value)  # also works for tuple values
            if not keep.any():
                raise ValueError(f"no run has {name}={value!r}; its values are {pd.unique(self.runs[name]).tolist()}.")
        return SweepResult(self.runs[keep].reset_index(drop=True), self.knobs)

    def __repr__(self):
        n_configs = len(self.runs.drop_duplicates(self.knobs))
        n_seeds, n_diverged = self.runs["seed"].nunique(), int(self.runs["diverged"].sum())
        head = (f"SweepResult: {len(self.runs)} runs ({n_configs} configurations x {n_seeds} seeds), "
                f"{self.ran} ran now, {self.from_cache} from cache, {n_diverged} diverged")
        return head + "\n" + self.summary().to_string(max_rows=20)


def sweep(run, grid, *, seeds=(0,), cache=None, code_version=None, progress=False):
    """Run ``run(**config, seed=seed)`` for every configuration of ``grid`` and every seed; return a SweepResult.

    The configurations are the cartesian product of the grid's lists, in the given order. ``run`` returns a dict
    of metrics (plain numbers, bools, None, short strings); ``"diverged": True`` marks a run that blew up.

    With ``cache`` (a folder), each finished run is saved there at once, and a run already saved is read back
    instead of executed: a second call is instant, an interrupted call resumes, and adding seeds or grid values
    later runs only the new ones. ``code_version`` (e.g. "v2") invalidates old results; by default it is a hash
    of ``run``'s source, so editing ``run`` re-runs it (editing a helper that ``run`` calls does not: pass a new
    ``code_version`` then). A new version of ftcourse or of a shipped checkpoint re-runs everything by itself.
    ``progress=True`` shows a progress bar.

    Example::

        def train(lr, frozen_stages, seed):
            ...
            return {"accuracy": 0.83, "diverged": False}

        result = sweep(train, {"lr": [0.01, 0.1], "frozen_stages": [0, 2]}, seeds=range(3), cache="runs/lr")
        result.summary()        # accuracy_mean, accuracy_std, n_seeds, n_diverged per (lr, frozen_stages)
    """
    knobs, seeds = _check_inputs(run, grid, seeds)
    if code_version is None:
        code_version = _source_version(run)
    library = _library_version()
    if cache is not None:
        cache = Path(cache)
        cache.mkdir(parents=True, exist_ok=True)

    jobs = [(dict(zip(knobs, values)), seed) for values in itertools.product(*grid.values()) for seed in seeds]
    rows = []
    for config, seed in tqdm(jobs, desc="sweep", disable=not progress):
        plain_config = {name: _plain(value, name, CONFIG_FIX) for name, value in config.items()}
        path = None if cache is None else cache / _file_name(run, plain_config, seed, code_version, library)
        if path is not None and path.exists():
            metrics, cached = json.loads(path.read_text())["metrics"], True
        else:
            start = time.perf_counter()
            metrics = _check_metrics(run(**config, seed=seed), knobs)
            cached = False
            if path is not None:
                record = {"function": _name(run), "config": plain_config, "seed": seed, "code_version": code_version,
                          **library, "metrics": metrics, "seconds": round(time.perf_counter() - start, 4),
                          "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
                save_json(path, record, indent=2)  # NaN and inf are written as NaN and Infinity
        diverged = bool(metrics.get("diverged")) or any(
            isinstance(v, float) and not math.isfinite(v) for v in metrics.values())
        config = {name: tuple(v) if isinstance(v, list) else v for name, v in config.items()}  # so pandas can group
        rows.append({**config, "seed": seed, **metrics, "diverged": diverged, "cached": cached})
    return SweepResult(pd.DataFrame(rows), knobs)


def _check_inputs(run, grid, seeds):
    if not callable(run):
        raise TypeError(f"run must be a function called as run(**config, seed=seed); got {type(run).__name__}.")
    if not isinstance(grid, dict) or not grid:
        error = TypeError if not isinstance(grid, dict) else ValueError
        raise error(f"grid must be a non-empty dict of name -> list of values, e.g. {{'lr': [0.01, 0.1]}}; "
                    f"got {grid!r:.80}.")
    for name, values in grid.items():
        if name == "seed":
            raise ValueError("'seed' cannot be a grid knob: sweep passes the seed itself. Use seeds=[0, 1, 2].")
        if not isinstance(values, (list, tuple, range, np.ndarray)):
            raise TypeError(f"grid[{name!r}] must be a list of values to try; got {type(values).__name__} "
                            f"{values!r:.60}. Wrap a single value in a list: {{{name!r}: [{values!r:.40}]}}.")
        if len(values) == 0:
            raise ValueError(f"grid[{name!r}] is empty, so the grid has no configurations; give it at least one value.")
        for value in values:  # check every value now, not after hours of runs
            _plain(value, f"grid value {name}={value!r:.40}", CONFIG_FIX)
    is_list = isinstance(seeds, (list, tuple, range, np.ndarray))
    if not is_list or len(seeds) == 0 or not all(isinstance(s, (int, np.integer)) for s in seeds):
        raise TypeError(f"seeds must be a non-empty list of ints, e.g. seeds=range(3); got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {list(seeds)} repeat a seed; each seed should appear once.")
    return list(grid), [int(s) for s in seeds]


def _check_metrics(metrics, knobs):
    if not isinstance(metrics, dict):
        raise TypeError(f"run must return a dict of metrics, e.g. {{'accuracy': 0.83}}; it returned "
                        f"{type(metrics).__name__} {metrics!r:.60}.")
    for name in metrics:
        if not isinstance(name, str) or name in knobs or name in ("seed", "cached"):
            raise ValueError(f"run returned a metric named {name!r}, which clashes with a grid knob or with "
                             f"'seed'/'cached'; rename the metric.")
    return {name: _plain(value, f"metric {name!r}", METRIC_FIX) for name, value in metrics.items()}


def _plain(value, what, fix):
    """``value`` as a plain JSON value (numpy scalars become Python numbers, tuples lists), or a TypeError."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, what, fix) for v in value]
    raise TypeError(f"{what} is a {type(value).__name__} ({value!r:.60}), which JSON cannot hold. {fix}")


def _name(run):
    return getattr(run, "__qualname__", type(run).__qualname__)


def _source_version(run):
    """A hash of ``run``'s source code, or its name when the source is not available (e.g. a builtin)."""
    try:
        source = inspect.getsource(run)
    except (OSError, TypeError):
        return _name(run)
    return "source-" + hashlib.sha256(source.encode()).hexdigest()[:12]


def _library_version() -> dict:
    """What a run builds on besides its own code: the version of ftcourse and the sha256 of each shipped checkpoint.

    Part of every cached run's name and record, so that results made by another library are never read back.
    """
    return {"ftcourse_version": ftcourse.__version__, "checkpoints": models.pretrained_digests()}


def _file_name(run, config, seed, code_version, library):
    """``<function>-<hash>.json``: the hash of everything that decides the result, the prefix for humans."""
    key = json.dumps({"function": _name(run), "config": config, "seed": seed, "code_version": code_version,
                      **library}, sort_keys=True)
    readable = re.sub(r"\W+", "_", _name(run).split(".")[-1])
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def plot_metric(result, x, metric, hue=None, ax=None, logx=False):
    """Plot ``metric``'s mean over seeds against the knob ``x``, with std error bars; one line per value of ``hue``.

    Configurations where at least one seed diverged are marked with an 'x' along the top edge of the plot.
    Any other knob of the sweep must have a single value: pick one first with ``result.select(knob=value)``.
    """
    table = _summary_for_plot(result, [x] if hue is None else [x, hue], metric)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    lines = [(None, table)] if hue is None else table.groupby(hue, sort=False, dropna=False)
    marked = False
    for value, part in lines:
        if pd.api.types.is_numeric_dtype(part[x]):
            part = part.sort_values(x)
        colour = method_colour(value) if value in METHOD_COLOURS else None  # a method: its colour of the course
        bars = ax.errorbar(part[x], part[f"{metric}_mean"], yerr=part[f"{metric}_std"], marker="o", capsize=3,
                           color=colour, label=None if hue is None else str(value))
        diverged = part[part["n_diverged"] > 0]
        if len(diverged):  # at the top edge (x in data units, y in axes units): a NaN mean has no height of its own
            ax.plot(diverged[x], [0.97] * len(diverged), "x", markersize=9, color=bars.lines[0].get_color(),
                    transform=ax.get_xaxis_transform(), label="_nolegend_" if marked else "diverged (any seed)")
            marked = True
    if logx:  # label the values that were run, not powers of ten
        ax.set_xscale("log")
        values = sorted(table[x].unique())
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.minorticks_off()
    ax.set(xlabel=x, ylabel=metric, title=f"{metric}: mean ± std over {table['n_seeds'].max()} seeds")
    if hue is not None or marked:
        handles, labels = ax.get_legend_handles_labels()
        order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("diverged"))  # "diverged" last
        ax.legend([handles[i] for i in order], [labels[i] for i in order], title=hue)
    return ax


def plot_heatmap(result, x, y, metric, ax=None, fmt=".2f", cmap="viridis", center=None, label=None, halfrange=None):
    """A heatmap of ``metric``'s mean over seeds for each pair of values of the knobs ``x`` and ``y``.

    Each cell shows its number (formatted with ``fmt``); a cell whose runs all diverged says "diverged". For a
    metric with a meaningful middle (a gap that can be negative or positive), pass ``center=0`` and a diverging
    ``cmap`` such as ``"RdBu_r"``: the colour scale is then symmetric around it. ``label`` names the colour bar
    (with its unit) for a reader; by default it is the metric's column name. ``halfrange`` fixes how far the colour
    scale reaches either side of ``center``: give two heatmaps the same one and their colours compare.
    Any other knob of the sweep must have a single value: pick one first with ``result.select(knob=value)``.
    """
    table = _summary_for_plot(result, [x, y], metric)
    rows, columns = pd.unique(table[y]), pd.unique(table[x])  # grid order, not sorted order
    means = table.pivot(index=y, columns=x, values=f"{metric}_mean").reindex(index=rows, columns=columns)
    diverged = table.pivot(index=y, columns=x, values="n_diverged").reindex(index=rows, columns=columns)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    norm = None if center is None else matplotlib.colors.CenteredNorm(vcenter=center, halfrange=halfrange)
    image = ax.imshow(means.to_numpy(dtype=float), cmap=cmap, norm=norm, origin="lower", aspect="auto")
    for i, j in itertools.product(range(len(rows)), range(len(columns))):
        value = means.iat[i, j]
        if math.isnan(value):
            text, colour = ("diverged" if diverged.iat[i, j] > 0 else "n/a"), "black"
        else:
            shade = float(image.norm(value))  # where the value sits on the colour scale, 0..1
            light = 0.2 < shade < 0.8 if center is not None else shade > 0.5
            text, colour = format(value, fmt), "black" if light else "white"
        ax.text(j, i, text, ha="center", va="center", color=colour)
    ax.set_xticks(range(len(columns)), labels=[str(v) for v in columns])
    ax.set_yticks(range(len(rows)), labels=[str(v) for v in rows])
    ax.set(xlabel=x, ylabel=y, title=f"{metric}: mean over {table['n_seeds'].max()} seeds")
    ax.figure.colorbar(image, ax=ax, label=metric if label is None else label)
    return ax


def _summary_for_plot(result, knobs, metric):
    for knob in knobs:
        if knob not in result.knobs:
            raise ValueError(f"{knob!r} is not a knob of this sweep; its knobs are {result.knobs}.")
    others = [k for k in result.knobs if k not in knobs and result.runs[k].nunique(dropna=False) > 1]
    if others:
        first = pd.unique(result.runs[others[0]]).tolist()[0]
        raise ValueError(f"the sweep also varies {others}, which this plot does not show; fix them first, "
                         f"e.g. result.select({others[0]}={first!r}).")
    return result.summary(metric)
