"""The "Try it" explorers: a slider where a kernel runs, and always a static figure a saved notebook keeps."""

import IPython.display
import matplotlib

matplotlib.use("Agg")
import matplotlib.figure  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from ftcourse import plots, widgets  # noqa: E402

RUNS = pd.DataFrame({"shots": [5, 5, 20, 20], "method": ["scratch", "finetune", "scratch", "finetune"],
                     "accuracy": [0.3, 0.6, 0.5, 0.9]})


@pytest.fixture
def notebook(monkeypatch):
    """Pretend to be a Jupyter kernel; record what explore() hands to IPython's display()."""
    shown = []
    monkeypatch.setattr(widgets, "in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda *objects, **kwargs: shown.extend(objects))
    return shown


def test_explore_in_a_notebook_shows_the_slider_and_a_static_figure_below_it(notebook):
    ipywidgets = pytest.importorskip("ipywidgets")
    result = widgets.explore(RUNS, "shots")
    assert result is None  # nothing for the cell to echo as a repr
    assert any(isinstance(shown, ipywidgets.VBox) for shown in notebook)  # the slider and its output
    static = notebook[-1]  # below the slider: an ordinary image output
    assert isinstance(static, matplotlib.figure.Figure)
    assert [ax.get_title() for ax in static.axes] == ["shots = 5", "shots = 20"]


def test_explore_without_ipywidgets_still_shows_the_static_figure(notebook, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ipywidgets(name, *args, **kwargs):
        if name == "ipywidgets":
            raise ImportError("no ipywidgets here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ipywidgets)
    assert widgets.explore(RUNS, "shots") is None
    assert len(notebook) == 1 and isinstance(notebook[0], matplotlib.figure.Figure)


def test_each_method_has_its_course_colour_in_the_explorer():
    ax = widgets.bars(RUNS, "shots", 5, metric="accuracy", group="method")
    names = [label.get_text() for label in ax.get_xticklabels()]
    colours = [matplotlib.colors.to_hex(bar.get_facecolor()) for bar in ax.patches]
    assert colours == [plots.method_colour(name) for name in names]
    assert plots.method_colour("scratch") != plots.method_colour("finetune")


def test_what_the_table_holds_fixed_is_named_in_the_static_figure_and_the_slider_figure(notebook):
    pytest.importorskip("ipywidgets")
    figure = widgets.static_grid(RUNS, "shots", where="related target")
    assert figure._suptitle.get_text().startswith("Every value of shots at once, related target")
    widgets.explore(RUNS, "shots", where="related target")
    assert notebook[-1]._suptitle.get_text() == figure._suptitle.get_text()
