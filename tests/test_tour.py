from ftcourse import cli
from ftcourse.tour import run_tour


def test_tour_runs_every_method_on_both_targets_and_writes_a_figure(tmp_path):
    out = tmp_path / "tour.png"
    table = run_tour(profile="quick", out=out, verbose=False)
    assert set(table["task"]) == {"related", "conflict"}
    assert set(table["method"]) == {"scratch", "probe", "finetune"}
    assert len(table) == 2 * 2 * 3  # tasks x labels-per-class of the quick profile x methods
    assert table["accuracy"].between(0, 1).all() and (table["seconds"] > 0).all()
    assert out.stat().st_size > 10_000


def test_tour_command_prints_the_table(tmp_path, capsys):
    assert cli.main(["tour", "--profile", "quick", "--out", str(tmp_path / "t.png")]) == 0
    out = capsys.readouterr().out
    assert "labels/class" in out and "finetune" in out and "conflict" in out
