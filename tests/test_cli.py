import os
import time

from ftcourse import cli, experiments, lab
from ftcourse.sweep import sweep


def test_check_reports_the_setup_and_a_training_run_whose_loss_falls(capsys):
    assert cli.main(["check", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "precision: fp32" in out and "profile=quick" in out
    assert "OK: the training loop works" in out


def test_check_says_which_build_of_torch_and_whether_a_gpu_was_found(capsys):
    import torch

    assert cli.main(["check", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only"
    assert f"torch build: {build}; GPU: " in out
    assert ("none found" in out) != torch.cuda.is_available()
    assert "profile=quick: a smoke test" in out  # setup() says what the quick profile's numbers are worth


def test_check_fails_and_says_why_when_training_is_far_slower_than_it_should_be(capsys, monkeypatch):
    monkeypatch.setattr(cli, "SMOKE_IMAGES_PER_SECOND", 10**9)  # as if this machine were 10^5 times too slow
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert cli.main(["check", "--profile", "quick"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM: the loop learns, but at" in out and "this machine is busy: 9.0 processes" in out


def test_a_busy_machine_is_noticed_and_an_idle_one_is_not():
    from ftcourse.env import busy_machine_warning

    assert busy_machine_warning(load=1.9, cores=2) is None
    warning = busy_machine_warning(load=6.0, cores=2)
    assert "6.0 processes" in warning and "2 cores" in warning and "OMP_NUM_THREADS=1" in warning


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
