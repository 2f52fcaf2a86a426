"""Specification of ftcourse.sweep: grids of runs, the on-disk cache, summaries over seeds, and the plots."""

import collections
import importlib.util
import json
import math
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import ftcourse  # noqa: E402
from ftcourse import models, plots, widgets  # noqa: E402
from ftcourse.stats import mean_and_std  # noqa: E402
from ftcourse.sweep import SweepResult, plot_heatmap, plot_metric, sweep  # noqa: E402

GRID = {"lr": [0.01, 0.1], "frozen_stages": [0, 2, 4]}


def fake_train(lr, frozen_stages, seed):
    """A deterministic stand-in for training: the numbers depend on every argument."""
    return {"accuracy": 0.5 + lr + 0.01 * frozen_stages + 0.001 * seed, "epochs": 3, "diverged": False}


class Counting:
    """Wraps a run function and records each (config, seed) it is called with.

    Its source cannot be read, so its cache key uses its name: compare Counting runs with Counting runs.
    """

    def __init__(self, function, fail_at_call=None):
        self.function, self.fail_at_call = function, fail_at_call
        self.calls = collections.Counter()
        self.__qualname__ = function.__qualname__  # cache files are named after the wrapped function

    def __call__(self, **kwargs):
        if self.fail_at_call is not None and sum(self.calls.values()) + 1 == self.fail_at_call:
            raise KeyboardInterrupt
        self.calls[tuple(sorted(kwargs.items()))] += 1
        return self.function(**kwargs)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_every_combination_and_seed_runs_exactly_once():
    run = Counting(fake_train)
    result = sweep(run, GRID, seeds=[0, 1])
    assert len(run.calls) == 2 * 3 * 2
    assert set(run.calls.values()) == {1}
    assert len(result.runs) == 12 and result.ran == 12 and result.from_cache == 0
    assert list(result.runs.columns[:3]) == ["lr", "frozen_stages", "seed"]
    first = result.runs.iloc[0]
    assert (first["lr"], first["frozen_stages"], first["seed"]) == (0.01, 0, 0)  # grid order, then seeds


def test_second_call_with_same_cache_runs_nothing_and_returns_identical_results(tmp_path):
    run = Counting(fake_train)
    first = sweep(run, GRID, seeds=[0, 1], cache=tmp_path)
    run.calls.clear()
    start = time.perf_counter()
    second = sweep(run, GRID, seeds=[0, 1], cache=tmp_path)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0
    assert len(run.calls) == 0
    assert second.ran == 0 and second.from_cache == 12 and second.runs["cached"].all()
    pd.testing.assert_frame_equal(first.runs.drop(columns="cached"), second.runs.drop(columns="cached"))


def test_cache_files_are_readable_json_with_config_seed_metrics_and_timing(tmp_path):
    sweep(fake_train, {"lr": [0.1], "frozen_stages": [2]}, cache=tmp_path, code_version="v1")
    (path,) = tmp_path.glob("*.json")
    assert path.name.startswith("fake_train-")
    record = json.loads(path.read_text())
    assert record["config"] == {"lr": 0.1, "frozen_stages": 2} and record["seed"] == 0
    assert record["metrics"]["accuracy"] == pytest.approx(0.62)
    assert record["code_version"] == "v1" and record["seconds"] >= 0 and "finished_at" in record


def test_interrupted_sweep_keeps_finished_runs_and_resumes_with_the_rest(tmp_path):
    interrupted = Counting(fake_train, fail_at_call=3)
    with pytest.raises(KeyboardInterrupt):
        sweep(interrupted, GRID, seeds=[0, 1], cache=tmp_path)
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert list(tmp_path.glob("*.tmp")) == []

    resumed = Counting(fake_train)
    result = sweep(resumed, GRID, seeds=[0, 1], cache=tmp_path)
    assert len(resumed.calls) == 10 and set(resumed.calls.values()) == {1}
    assert not set(resumed.calls) & set(interrupted.calls)
    assert result.ran == 10 and result.from_cache == 2


def test_adding_seeds_later_runs_only_the_new_seeds(tmp_path):
    run = Counting(fake_train)
    sweep(run, GRID, seeds=[0, 1], cache=tmp_path)
    run.calls.clear()
    result = sweep(run, GRID, seeds=[0, 1, 2], cache=tmp_path)
    assert {dict(call)["seed"] for call in run.calls} == {2}
    assert result.ran == 6 and result.from_cache == 12


def test_changing_code_version_reruns_every_run(tmp_path):
    sweep(fake_train, GRID, cache=tmp_path, code_version="v1")
    assert sweep(fake_train, GRID, cache=tmp_path, code_version="v1").ran == 0
    run = Counting(fake_train)
    result = sweep(run, GRID, cache=tmp_path, code_version="v2")
    assert result.ran == 6 and len(run.calls) == 6


def test_a_new_ftcourse_version_reruns_cached_runs(tmp_path, monkeypatch):
    sweep(fake_train, GRID, cache=tmp_path, code_version="v1")
    assert sweep(fake_train, GRID, cache=tmp_path, code_version="v1").ran == 0
    monkeypatch.setattr(ftcourse, "__version__", "99.0")
    assert sweep(fake_train, GRID, cache=tmp_path, code_version="v1").ran == 6


def test_a_changed_shipped_checkpoint_reruns_cached_runs(tmp_path, monkeypatch):
    sweep(fake_train, GRID, cache=tmp_path, code_version="v1")
    assert sweep(fake_train, GRID, cache=tmp_path, code_version="v1").ran == 0
    digests = {**models.pretrained_digests(), "lab": "0" * 64}
    monkeypatch.setattr(models, "pretrained_digests", lambda: digests)
    assert sweep(fake_train, GRID, cache=tmp_path, code_version="v1").ran == 6


def test_cache_files_record_the_library_they_were_made_with(tmp_path):
    sweep(fake_train, {"lr": [0.1], "frozen_stages": [2]}, cache=tmp_path)
    record = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert record["ftcourse_version"] == ftcourse.__version__
    assert record["checkpoints"] == models.pretrained_digests()


def _load_train_from(path, body):
    """Write a module whose function is named `train` and import it, so inspect.getsource can read it."""
    path.write_text(f"def train(lr, seed):\n    {body}\n")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.train


def test_editing_the_function_source_reruns_it(tmp_path):
    cache = tmp_path / "cache"
    original = _load_train_from(tmp_path / "lesson_v1.py", "return {'accuracy': lr}")
    edited = _load_train_from(tmp_path / "lesson_v2.py", "return {'accuracy': 2 * lr}")
    assert original.__qualname__ == edited.__qualname__ == "train"
    sweep(original, {"lr": [0.1, 0.2]}, cache=cache)
    assert sweep(original, {"lr": [0.1, 0.2]}, cache=cache).ran == 0
    result = sweep(edited, {"lr": [0.1, 0.2]}, cache=cache)
    assert result.ran == 2
    assert result.runs["accuracy"].tolist() == [0.2, 0.4]


ACCURACY = {(0.1, 0): 0.80, (0.1, 1): 0.90, (0.1, 2): 1.00, (0.01, 0): 0.50, (0.01, 1): 0.50, (0.01, 2): 0.80}


def table_train(lr, seed):
    return {"accuracy": ACCURACY[(lr, seed)]}


def test_summary_mean_and_std_match_hand_computed_values():
    summary = sweep(table_train, {"lr": [0.1, 0.01]}, seeds=[0, 1, 2]).summary()
    assert list(summary.columns) == ["lr", "accuracy_mean", "accuracy_std", "n_seeds", "n_diverged"]
    assert summary["lr"].tolist() == [0.1, 0.01]
    # lr=0.1: 0.8, 0.9, 1.0 -> mean 0.9, sample std sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    # lr=0.01: 0.5, 0.5, 0.8 -> mean 0.6, sample std sqrt((0.01 + 0.01 + 0.04) / 2) = sqrt(0.03)
    assert summary["accuracy_mean"].tolist() == pytest.approx([0.9, 0.6])
    assert summary["accuracy_std"].tolist() == pytest.approx([0.1, math.sqrt(0.03)])
    assert summary["n_seeds"].tolist() == [3, 3] and summary["n_diverged"].tolist() == [0, 0]


def test_single_seed_std_is_zero_not_nan():
    summary = sweep(table_train, {"lr": [0.1, 0.01]}, seeds=[1]).summary("accuracy")
    assert summary["accuracy_std"].tolist() == [0.0, 0.0]
    assert summary["accuracy_mean"].tolist() == pytest.approx([0.9, 0.5])


def test_mean_and_std_of_a_table_of_runs_match_hand_computed_values():
    runs = pd.DataFrame({"method": ["probe", "probe", "probe", "finetune", "finetune"],
                         "shots": [5, 5, 5, 5, 20],
                         "accuracy": [0.8, 0.9, 1.0, 0.5, 0.7],
                         "loss": [1.0, np.inf, 3.0, np.nan, 2.0]})
    table = mean_and_std(runs, ["method", "shots"], ["accuracy", "loss"])
    assert list(table.columns) == ["method", "shots", "accuracy_mean", "accuracy_std", "loss_mean", "loss_std",
                                   "n_seeds"]
    assert table[["method", "shots"]].values.tolist() == [["probe", 5], ["finetune", 5], ["finetune", 20]]
    assert table["accuracy_mean"].tolist() == pytest.approx([0.9, 0.5, 0.7])
    assert table["accuracy_std"].tolist() == pytest.approx([0.1, 0.0, 0.0])  # one run: 0.0, not NaN
    assert table["loss_mean"].tolist()[::2] == pytest.approx([2.0, 2.0])  # inf left out: mean of 1.0 and 3.0
    assert math.isnan(table["loss_mean"][1])  # no finite value at all
    assert table["n_seeds"].tolist() == [3, 1, 1]


def test_the_widgets_bars_show_the_same_mean_and_std():
    runs = pd.DataFrame({"shots": [5, 5, 5, 20], "method": ["probe", "probe", "scratch", "probe"],
                         "accuracy": [0.6, 0.8, 0.3, 0.9]})
    ax = widgets.bars(runs, "shots", 5, metric="accuracy", group="method")
    assert [bar.get_height() for bar in ax.patches] == pytest.approx([0.7, 0.3])
    assert [label.get_text() for label in ax.get_xticklabels()] == ["probe", "scratch"]


def test_explore_outside_a_notebook_draws_every_value_in_one_static_figure():
    runs = pd.DataFrame({"shots": [5, 20], "method": ["probe", "probe"], "accuracy": [0.6, 0.9]})
    figure = widgets.explore(runs, "shots")
    assert [ax.get_title() for ax in figure.axes] == ["shots = 5", "shots = 20"]


def blowing_up_train(lr, seed, width=8):
    if lr == 1.0 and seed == 1:
        return {"loss": float("nan"), "diverged": True}
    return {"loss": 1.0 + 2.0 * seed, "diverged": False}


def test_diverged_runs_are_kept_counted_and_left_out_of_the_mean():
    result = sweep(blowing_up_train, {"lr": [0.1, 1.0]}, seeds=[0, 1, 2])
    assert len(result.runs) == 6
    assert result.runs["diverged"].tolist() == [False, False, False, False, True, False]
    summary = result.summary()
    assert summary["n_diverged"].tolist() == [0, 1]
    assert summary["loss_mean"].tolist() == pytest.approx([3.0, 3.0])  # lr=1.0: mean of 1.0 and 5.0
    assert summary["loss_std"].tolist() == pytest.approx([2.0, math.sqrt(8.0)])


def test_nan_and_inf_metrics_survive_the_cache_and_count_as_diverged(tmp_path):
    def train(lr, seed):  # no "diverged" key: the non-finite values alone mark the run
        return {"loss": float("nan") if lr > 1 else float("inf"), "accuracy": 0.1}

    sweep(train, {"lr": [0.5, 2.0]}, cache=tmp_path)
    cached = sweep(train, {"lr": [0.5, 2.0]}, cache=tmp_path)
    assert cached.from_cache == 2
    assert cached.runs["loss"].iloc[0] == math.inf and math.isnan(cached.runs["loss"].iloc[1])
    assert cached.runs["diverged"].all()
    summary = cached.summary()
    assert summary["n_diverged"].tolist() == [1, 1] and summary["loss_mean"].isna().all()


@pytest.mark.parametrize("grid, error, message", [
    ({"lr": []}, ValueError, r"grid\['lr'\] is empty"),
    ({"lr": 0.1}, TypeError, r"must be a list of values.*\{'lr': \[0.1\]\}"),
    ({"lr": "0.1"}, TypeError, "must be a list of values"),
    ({"lr": [0.1], "seed": [0, 1]}, ValueError, r"Use seeds=\[0, 1, 2\]"),
    ({}, ValueError, "non-empty dict"),
    ([0.01, 0.1], TypeError, r"non-empty dict of name -> list of values, e\.g\. \{'lr'"),
    ({"lr": [0.1, object()]}, TypeError, "grid value lr=.*JSON.*build the object inside run"),
    ({"layers": [[64, {"kind": "relu"}]]}, TypeError, "dict.*JSON"),
])
def test_bad_grids_raise_with_a_message_that_says_what_to_do_before_any_run(grid, error, message):
    calls = []
    with pytest.raises(error, match=message):
        sweep(lambda seed, **config: calls.append(config) or {"accuracy": 1.0}, grid)
    assert calls == []


def test_bad_run_and_seeds_raise_with_a_message_that_says_what_to_do():
    with pytest.raises(TypeError, match="run must be a function"):
        sweep("train", {"lr": [0.1]})
    with pytest.raises(TypeError, match=r"seeds=range\(3\)"):
        sweep(fake_train, GRID, seeds=3)
    with pytest.raises(ValueError, match="repeat a seed"):
        sweep(fake_train, GRID, seeds=[0, 0])


def test_bad_metrics_raise_with_a_message_that_says_what_to_do():
    with pytest.raises(TypeError, match="must return a dict of metrics"):
        sweep(lambda lr, seed: 0.9, {"lr": [0.1]})
    with pytest.raises(TypeError, match=r"metric 'loss' is a object.*loss.item\(\)"):
        sweep(lambda lr, seed: {"loss": object()}, {"lr": [0.1]})
    with pytest.raises(ValueError, match="metric named 'lr'"):
        sweep(lambda lr, seed: {"lr": lr}, {"lr": [0.1]})


def test_numpy_grids_and_metrics_become_plain_values(tmp_path):
    def train(lr, width, seed):
        return {"accuracy": np.float32(0.5), "steps": np.int64(10)}

    grid = {"lr": np.array([0.1, 0.2]), "width": [(64, 128), [32, 64]]}
    result = sweep(train, grid, cache=tmp_path)
    assert result.runs["width"].tolist() == [(64, 128), (32, 64), (64, 128), (32, 64)]  # lists become tuples
    assert result.runs["accuracy"].dtype == float and result.runs["steps"].tolist() == [10] * 4
    assert sweep(train, grid, cache=tmp_path).from_cache == 4
    assert len(result.summary()) == 4


def test_progress_bar_is_off_by_default_and_shown_on_request(capsys):
    sweep(fake_train, GRID)
    assert "sweep" not in capsys.readouterr().err
    sweep(fake_train, GRID, progress=True)
    bar = capsys.readouterr().err
    assert "sweep: 100%" in bar and "6/6" in bar


def test_select_keeps_only_matching_runs_and_names_the_valid_values():
    result = sweep(fake_train, GRID, seeds=[0, 1])
    chosen = result.select(frozen_stages=2)
    assert len(chosen.runs) == 4 and set(chosen.runs["frozen_stages"]) == {2}
    with pytest.raises(ValueError, match=r"its values are \[0, 2, 4\]"):
        result.select(frozen_stages=3)


def test_repr_reports_runs_cache_and_divergence(tmp_path):
    sweep(blowing_up_train, {"lr": [0.1]}, seeds=[0, 1], cache=tmp_path)
    result = sweep(blowing_up_train, {"lr": [0.1, 1.0]}, seeds=[0, 1], cache=tmp_path)
    text = repr(result)
    assert "4 runs (2 configurations x 2 seeds)" in text
    assert "2 ran now, 2 from cache, 1 diverged" in text
    assert "loss_mean" in text
    assert isinstance(result, SweepResult)


def test_plot_metric_draws_one_line_per_hue_value_with_labelled_axes():
    result = sweep(fake_train, GRID, seeds=[0, 1])
    ax = plot_metric(result, "lr", "accuracy", hue="frozen_stages", logx=True)
    assert len(ax.containers) == 3  # one errorbar series per frozen_stages value
    assert ax.get_xlabel() == "lr" and ax.get_ylabel() == "accuracy" and ax.get_xscale() == "log"
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["0", "2", "4"] and ax.get_legend().get_title().get_text() == "frozen_stages"
    line = ax.containers[0].lines[0]
    assert line.get_xdata().tolist() == [0.01, 0.1]
    assert line.get_ydata().tolist() == pytest.approx([0.5105, 0.6005])  # mean over seeds 0 and 1


def test_plot_metric_draws_each_method_in_its_course_colour():
    runs = pd.DataFrame({"shots": [5, 20, 5, 20], "method": ["scratch", "scratch", "finetune", "finetune"],
                         "accuracy": [0.3, 0.5, 0.8, 0.9], "seed": [0, 0, 0, 0], "diverged": [False] * 4})
    ax = plot_metric(SweepResult(runs, ["shots", "method"]), "shots", "accuracy", hue="method")
    colours = [matplotlib.colors.to_hex(container.lines[0].get_color()) for container in ax.containers]
    assert colours == [plots.method_colour("scratch"), plots.method_colour("finetune")]


def test_plot_metric_marks_diverged_configurations_with_an_x():
    result = sweep(blowing_up_train, {"lr": [0.1, 1.0]}, seeds=[0, 1, 2])
    ax = plot_metric(result, "lr", "loss")
    assert len(ax.containers) == 1
    (marks,) = [line for line in ax.lines if line.get_marker() == "x"]
    assert marks.get_xdata().tolist() == [1.0]
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["diverged (any seed)"]


def test_plot_metric_lists_the_diverged_marker_after_the_lines():
    result = sweep(blowing_up_train, {"lr": [0.1, 1.0], "width": [8, 16]}, seeds=[0, 1])
    ax = plot_metric(result, "lr", "loss", hue="width")
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["8", "16", "diverged (any seed)"]


def test_plots_refuse_a_knob_they_do_not_show_and_suggest_select():
    result = sweep(fake_train, GRID)
    with pytest.raises(ValueError, match=r"result.select\(frozen_stages=0\)"):
        plot_metric(result, "lr", "accuracy")
    with pytest.raises(ValueError, match="not a knob"):
        plot_heatmap(result, "lr", "momentum", "accuracy")
    with pytest.raises(ValueError, match="not a numeric metric.*accuracy"):
        plot_metric(result, "lr", "acc", hue="frozen_stages")


def test_plot_heatmap_has_one_cell_per_configuration_with_numbers_and_a_colourbar():
    result = sweep(fake_train, GRID, seeds=[0, 1])
    ax = plot_heatmap(result, "lr", "frozen_stages", "accuracy")
    assert ax.images[0].get_array().shape == (3, 2)  # rows: frozen_stages, columns: lr
    assert ax.get_xlabel() == "lr" and ax.get_ylabel() == "frozen_stages"
    assert len(ax.texts) == 6 and ax.texts[0].get_text() == "0.51"  # lr=0.01, frozen_stages=0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.01", "0.1"]
    assert len(ax.figure.axes) == 2  # the heatmap and its colourbar


def test_plot_heatmap_with_a_center_puts_it_in_the_middle_of_the_colour_scale():
    result = sweep(fake_train, GRID, seeds=[0, 1])
    ax = plot_heatmap(result, "lr", "frozen_stages", "accuracy", cmap="RdBu_r", center=0.5)
    norm = ax.images[0].norm
    assert norm(0.5) == pytest.approx(0.5)
    assert norm.vmin + norm.vmax == pytest.approx(1.0)  # symmetric around the center


# --- paired differences ---------------------------------------------------------------------------------------------

def test_paired_difference_is_students_t_interval_of_the_per_seed_differences():
    from scipy import stats

    from ftcourse.stats import paired_difference

    a, b = [0.9, 0.8, 0.85, 0.7], [0.6, 0.55, 0.62, 0.6]
    result = paired_difference(a, b, confidence=0.95)
    d = np.subtract(a, b)
    low, high = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert result["mean"] == pytest.approx(d.mean()) and result["n"] == 4
    assert (result["low"], result["high"]) == pytest.approx((low, high))


def test_pairing_removes_what_the_seeds_share():
    from ftcourse.stats import paired_difference

    # Seeds differ a lot, but a is always 0.05 above b: paired, that is a sure effect.
    result = paired_difference([0.55, 0.95, 0.75], [0.5, 0.9, 0.7])
    assert result["low"] == pytest.approx(0.05) and result["high"] == pytest.approx(0.05)


def test_one_seed_can_claim_neither_an_effect_nor_its_absence():
    from ftcourse.stats import paired_difference

    result = paired_difference([0.9], [0.1])
    assert result["low"] == -math.inf and result["high"] == math.inf
    with pytest.raises(ValueError, match="one per seed"):
        paired_difference([0.9, 0.8], [0.1])
