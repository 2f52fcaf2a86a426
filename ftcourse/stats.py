"""Statistics over seeds: the course's one way to summarise runs and its one rule for comparing two methods.

The same configuration trained with two seeds gives two different numbers. One run cannot tell a real effect from
that noise: the mean over seeds is a better estimate, and the std says how big the noise is.

- :func:`mean_and_std` summarises runs over seeds (``SweepResult.summary``, the tour's table and the widgets' bars
  use it);
- :func:`paired_difference` compares two methods over the same seeds, seed by seed, with Student's t interval: the
  rule behind every "A beats B" and "A matches B" that a lesson asserts;
- :func:`describe_difference` says such a difference in words, with the interval's real confidence;
- :func:`readable` turns a summary into a table for a reader.
"""

import math

import numpy as np
import pandas as pd


def mean_and_std(runs: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean and std over seeds: one row per combination of the columns ``by``, in order of first appearance.

    Columns: ``by``, then ``<metric>_mean`` and ``<metric>_std`` for each of ``metrics``, then ``n_seeds`` (the
    number of runs in the group). The std is the sample std (ddof=1), the spread one more seed would show, and
    0.0 for a single run. NaN and inf values (diverged runs) are left out of the mean and std, so one blown-up seed
    does not turn its whole configuration into NaN; a metric with no finite value at all has a NaN mean.

    >>> runs = pd.DataFrame({"lr": [0.1, 0.1, 0.01], "seed": [0, 1, 0], "accuracy": [0.8, 1.0, 0.5]})
    >>> mean_and_std(runs, ["lr"], ["accuracy"])
         lr  accuracy_mean  accuracy_std  n_seeds
    0  0.10            0.9      0.141421        2
    1  0.01            0.5      0.000000        1
    """
    values = runs[list(metrics)].astype(float)
    groups = values.where(np.isfinite(values)).groupby([runs[name] for name in by], sort=False, dropna=False)
    mean, std, count = groups.mean(), groups.std(ddof=1), groups.count()
    std = std.mask(count == 1, 0.0)
    table = pd.DataFrame(index=mean.index)
    for name in metrics:
        table[f"{name}_mean"] = mean[name]
        table[f"{name}_std"] = std[name]
    table["n_seeds"] = groups.size()
    return table.reset_index()


def paired_difference(a, b, *, confidence: float = 0.9) -> dict:
    """How much ``a`` exceeds ``b``, seed by seed: the course's one rule for "A beats B" and "A matches B".

    ``a`` and ``b`` are the same metric for two methods, one value per seed, in the same order of seeds (paired: seed
    ``s`` gave both methods the same training images). The differences ``d_s = a_s - b_s`` remove what the seeds share,
    so their spread is the noise of the *comparison*. Returns ``mean`` (d̄), ``std`` (s_d, ddof=1), ``n`` and the
    two-sided ``confidence`` interval of Student's t, ``low`` and ``high`` (and ``confidence`` itself, so that the
    interval's description can say it):

        d̄ ± t_{(1+confidence)/2, n-1} · s_d / sqrt(n).

    The claims that the lessons assert follow from it:

    - "A beats B by more than m" when ``low > m`` (with 3 seeds and the default 90%, d̄ must exceed m by
      2.92 standard errors: a one-sided 95% test);
    - "A and B are within m of each other" when ``-m < low`` and ``high < m`` (an equivalence test, TOST): a "no
      effect" claim needs as much evidence as an effect claim, and a single seed can never make one (its interval
      is infinite).

    >>> result = paired_difference([0.9, 0.8, 0.85], [0.6, 0.55, 0.62])
    >>> round(result["mean"], 3), round(result["low"], 3), round(result["high"], 3)
    (0.26, 0.199, 0.321)
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired_difference needs two equally long lists of values, one per seed; got "
                         f"{a.shape} and {b.shape}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}.")
    d = a - b
    n, mean = len(d), float(d.mean())
    if n < 2:
        return {"mean": mean, "std": float("nan"), "n": n, "low": -math.inf, "high": math.inf,
                "confidence": confidence}
    std = float(d.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "low": mean - half, "high": mean + half, "confidence": confidence}


def describe_difference(difference: dict, fmt: str = "+.3f", unit: str = "") -> str:
    """A :func:`paired_difference` in words: ``"+0.120 (90% interval +0.05 to +0.19)"``, at the interval's own
    confidence (a dict without one is read as 90%, the default of :func:`paired_difference`).

    With a single seed there is no interval (it is infinite): the text says so instead of printing ``-inf to inf``.

    >>> describe_difference(paired_difference([0.9], [0.6]))
    '+0.300 (one seed: no interval)'
    >>> describe_difference(paired_difference([0.9, 0.8, 0.85], [0.6, 0.55, 0.62], confidence=0.95), ".2f")
    '0.26 (95% interval 0.17 to 0.35)'
    """
    mean = f"{difference['mean']:{fmt}}{unit}"
    if not (math.isfinite(difference["low"]) and math.isfinite(difference["high"])):
        return f"{mean} (one seed: no interval)"
    confidence = difference.get("confidence", 0.9)
    return (f"{mean} ({confidence:.0%} interval {difference['low']:{fmt}}{unit} to "
            f"{difference['high']:{fmt}}{unit})")


def readable(table: pd.DataFrame, keys: dict, metrics: dict, *, counts: dict | None = None,
             digits: int = 2) -> pd.DataFrame:
    """A summary table for a reader: labelled columns, "mean ± std" in one cell, counts as ``308,181``.

    ``table`` is a :meth:`SweepResult.summary` (or any table with ``NAME_mean`` / ``NAME_std`` columns). ``keys``
    maps the columns that name a setting to their labels (they become the index), ``metrics`` the metrics to show
    as mean ± std over seeds, ``counts`` the means to show as whole numbers with thousands separators.

    >>> summary = pd.DataFrame({"method": ["probe"], "accuracy_mean": [0.912], "accuracy_std": [0.0104],
    ...                         "trainable_mean": [645.0]})
    >>> readable(summary, {"method": "method"}, {"accuracy": "test accuracy"}, counts={"trainable": "parameters"})
           test accuracy (mean ± std) parameters
    method                                      
    probe                 0.91 ± 0.01        645
    """
    out = table[list(keys)].rename(columns=keys)
    for name, label in metrics.items():
        mean, std = table[f"{name}_mean"], table.get(f"{name}_std", pd.Series(float("nan"), index=table.index))
        out[f"{label} (mean ± std)"] = [f"{m:.{digits}f}" + ("" if pd.isna(sd) else f" ± {sd:.{digits}f}")
                                        for m, sd in zip(mean, std)]
    for name, label in (counts or {}).items():
        column = table[f"{name}_mean"] if f"{name}_mean" in table else table[name]
        out[label] = [f"{v:,.0f}" for v in column]
    return out.set_index(list(keys.values()))
