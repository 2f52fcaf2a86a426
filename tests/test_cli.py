import time

from ftcourse import cli, experiments, lab
from ftcourse.sweep import sweep


def test_check_reports_the_setup_and_a_training_run_whose_loss_falls(capsys):
    assert cli.main(["check", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "precision: fp32" in out and "profile=quick" in out
    assert "OK: the training loop works" in out


def test_a_quick_sweep_of_real_runs_comes_back_from_the_cache_in_under_a_second(tmp_path):
    def finetune(lr, seed):
        task = lab.target("related", 5, test_per_class=5, seed=seed)
        return {"accuracy": experiments.run(task, "finetune", seed=seed, steps=5, lr=lr)["accuracy"]}

    first = sweep(finetune, {"lr": [0.01, 0.1]}, seeds=(0, 1), cache=tmp_path)
    start = time.perf_counter()
    again = sweep(finetune, {"lr": [0.01, 0.1]}, seeds=(0, 1), cache=tmp_path)
    assert time.perf_counter() - start < 1.0
    assert (first.ran, again.ran, again.from_cache) == (4, 0, 4)
    assert again.runs["accuracy"].tolist() == first.runs["accuracy"].tolist()
