import random
import sys

import numpy as np
import pytest
import torch

from ftcourse import env


def test_setup_picks_the_profile_from_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("FTCOURSE_PROFILE", "cpu")
    e = env.setup(seed=1)
    assert e.profile == "cpu" and e.sizes == env.PROFILES["cpu"]
    assert "profile=cpu" in capsys.readouterr().out
    assert env.active_profile() == "cpu"


def test_an_explicit_profile_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("FTCOURSE_PROFILE", "cpu")
    assert env.setup(profile="quick", verbose=False).profile == "quick"


def test_without_a_setting_every_device_gets_the_verified_sizes(monkeypatch):
    monkeypatch.delenv("FTCOURSE_PROFILE", raising=False)
    assert env.pick_profile(device=torch.device("cpu")) == "cpu"
    assert env.pick_profile(device=torch.device("cuda")) == "cpu"  # a GPU runs the checked sizes faster
    assert env.pick_profile() in env.VERIFIED_PROFILES


def test_the_full_size_profile_says_its_cost_and_that_it_is_unverified(capsys):
    env.setup(profile="gpu")
    out = capsys.readouterr().out
    assert "profile=gpu" in out and "about 7x the training of the cpu profile" in out
    assert "not at these" in out
    env.setup(profile="cpu")
    assert "not at these" not in capsys.readouterr().out


def test_seeds_can_be_replaced_without_editing_a_lesson(monkeypatch, capsys):
    monkeypatch.setenv("FTCOURSE_SEEDS", "3, 4,5")
    e = env.setup(profile="cpu")
    assert e.sizes.seeds == (3, 4, 5) and e.sizes.steps == env.PROFILES["cpu"].steps
    assert "seeds=[3, 4, 5]" in capsys.readouterr().out
    monkeypatch.delenv("FTCOURSE_SEEDS")
    assert env.setup(profile="cpu", verbose=False).sizes.seeds == (0, 1, 2)


@pytest.mark.parametrize("text", ["3;4", "a,b", "3,3", "-1,2"])
def test_a_bad_seed_list_says_how_to_write_one(monkeypatch, text):
    monkeypatch.setenv("FTCOURSE_SEEDS", text)
    with pytest.raises(ValueError, match="FTCOURSE_SEEDS=3,4,5"):
        env.setup(profile="cpu", verbose=False)


def test_unknown_profile_is_refused_with_the_choices(monkeypatch):
    with pytest.raises(ValueError, match=r"Use one of \['cpu', 'gpu', 'quick'\]"):
        env.setup(profile="huge", verbose=False)


def test_setup_seeds_python_numpy_and_torch():
    env.setup(seed=5, verbose=False)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    env.setup(seed=5, verbose=False)
    assert first == (random.random(), np.random.rand(), torch.rand(1).item())


def test_device_is_cpu_without_gpu_and_colab_is_detected(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert env.pick_device() == torch.device("cpu")
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab")
    assert env.in_colab()


def test_results_and_checkpoints_go_where_the_environment_says(monkeypatch, tmp_path):
    monkeypatch.setenv("FTCOURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FTCOURSE_RUNS", str(tmp_path / "runs"))
    e = env.setup(verbose=False)
    assert (e.cache_dir, e.runs_dir) == (tmp_path / "cache", tmp_path / "runs")


def test_in_colab_with_drive_mounted_results_survive_a_disconnect(monkeypatch):
    monkeypatch.delenv("FTCOURSE_CACHE", raising=False)
    monkeypatch.delenv("FTCOURSE_RUNS", raising=False)
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab")
    monkeypatch.setattr(env.Path, "is_dir", lambda self: str(self) == "/content/drive/MyDrive")
    cache, runs = env.storage_dirs()
    assert str(cache) == "/content/drive/MyDrive/ftcourse/cache" and str(runs) == "/content/drive/MyDrive/ftcourse/runs"


def _shell_named(name):
    return type(name, (), {})()


@pytest.mark.parametrize("shell, expected", [
    ("ZMQInteractiveShell", True),  # a Jupyter kernel
    ("Shell", True),  # Colab's google.colab._shell.Shell
    ("TerminalInteractiveShell", False),  # IPython in a terminal
])
def test_in_notebook_knows_jupyter_and_colab_from_a_terminal(monkeypatch, shell, expected):
    IPython = pytest.importorskip("IPython")
    monkeypatch.setattr(IPython, "get_ipython", lambda: _shell_named(shell))
    assert env.in_notebook() is expected


def test_a_script_is_not_a_notebook(monkeypatch):
    IPython = pytest.importorskip("IPython")
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert env.in_notebook() is False


def test_without_ipython_installed_there_is_no_notebook(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", None)  # makes `from IPython import ...` raise ImportError
    assert env.in_notebook() is False
