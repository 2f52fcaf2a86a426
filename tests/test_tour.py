import os

import pandas as pd
import pytest

from ftcourse import cli, experiments
from ftcourse.tour import format_table, summarise, run_tour


@pytest.fixture(scope="module")
def tour_cache(tmp_path_factory):
    """One cache folder for the tour tests: the command trains the quick tour once, the other test reads it back."""
    folder = tmp_path_factory.mktemp("tour")
    before = os.environ.get("FTCOURSE_CACHE")
    os.environ["FTCOURSE_CACHE"] = str(folder / "cache")
    yield folder
    if before is None:
        del os.environ["FTCOURSE_CACHE"]
    else:
        os.environ["FTCOURSE_CACHE"] = before


@pytest.mark.slow  # the whole quick tour, through the command
def test_tour_command_prints_the_table_and_what_it_costs(tour_cache, capsys):
    assert cli.main(["tour", "--profile", "quick", "--out", str(tour_cache / "t.png")]) == 0
    out = capsys.readouterr().out
    assert "labels/class" in out and "finetune" in out and "conflict" in out
    assert "36 training runs or more" in out and "rates chosen on val" in out  # 2 targets x 2 sizes x 1 seed x 3 x 3
    assert list((tour_cache / "cache" / "runs").glob("*.json"))  # the tuning runs are cached, in the one cache of runs


@pytest.mark.slow  # every method on both targets (read back from the command's cache when it ran first)
def test_tour_runs_every_method_on_both_targets_and_writes_a_figure(tour_cache):
    out = tour_cache / "tour.png"
    table = run_tour(profile="quick", out=out, verbose=False)
    assert set(table["task"]) == {"related", "conflict"}
    assert set(table["method"]) == {"scratch", "probe", "finetune"}
    assert len(table) == 2 * 2 * 3  # tasks x labels-per-class of the quick profile x methods
    assert table["accuracy_mean"].between(0, 1).all()
    assert (table["runs"] >= len(experiments.LR_GRID)).all()  # one seed in the quick profile: a run per rate, or more
    assert all(float(rate) in experiments.LR_LADDER for rates in table["rates"] for rate in rates.split())
    assert out.stat().st_size > 10_000


def test_the_tour_table_is_the_mean_and_std_over_seeds_of_each_task_size_and_method():
    runs = pd.DataFrame({"task": ["related"] * 3, "shots": [5, 5, 5], "method": ["probe", "probe", "scratch"],
                         "seed": [0, 1, 0], "accuracy": [0.6, 0.8, 0.3], "lr": [0.1, 0.03, 0.01], "runs": [3, 3, 3]})
    table = summarise(runs)
    assert table["method"].tolist() == ["probe", "scratch"]
    assert table["accuracy_mean"].tolist() == pytest.approx([0.7, 0.3])
    assert table["accuracy_std"].tolist() == pytest.approx([0.1414214, 0.0])
    assert table["n_seeds"].tolist() == [2, 1] and table["runs"].tolist() == [6, 3]
    assert format_table(table).splitlines()[1].split() == ["related", "5", "probe", "0.700", "±", "0.141", "0.1",
                                                           "0.03", "6"]
