"""Shared fixtures of the unit tests (the profile and backend are set in the root conftest.py)."""

import pytest
import torch


@pytest.fixture(scope="session")
def learnable():
    """A tiny problem (256 images of 16x16) a ResNet learns in a few epochs: bright (class 1) or dark (class 0)?

    Shared by all tests; nothing may change these tensors in place.
    """
    g = torch.Generator().manual_seed(0)
    brightness = torch.rand(256, generator=g)
    images = (brightness.view(-1, 1, 1, 1) * 255 * torch.ones(256, 3, 16, 16)
              + torch.randint(-40, 40, (256, 3, 16, 16), generator=g)).clamp(0, 255).to(torch.uint8)
    labels = (brightness > 0.5).long()
    return images, labels


@pytest.fixture(autouse=True)
def _forget_the_active_profile(monkeypatch):
    """A test that calls env.setup() must not change the profile seen by the tests after it."""
    from ftcourse import env

    monkeypatch.setitem(env._active, "profile", None)


@pytest.fixture(scope="module")
def one_thread():
    """For modules of tiny models: a second thread gains nothing there, and on a busy CPU threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def no_penalty(model):
    """A penalty that adds nothing, on the model's device."""
    return torch.zeros((), device=next(model.parameters()).device)


@pytest.fixture
def ctrl_c_at():
    """``ctrl_c_at(step)``: a fit penalty that adds nothing and presses Ctrl-C (KeyboardInterrupt) in that step.

    It describes itself as ``no_penalty``, so that a run resumed with :func:`no_penalty` counts as the same run.
    """
    def make(step):
        calls = [0]

        def penalty(model):
            calls[0] += 1
            if calls[0] == step + 1:
                raise KeyboardInterrupt
            return no_penalty(model)

        penalty.__qualname__ = "no_penalty"
        return penalty

    return make


@pytest.fixture(scope="session")
def tuning_cache(tmp_path_factory):
    """One cache folder for the tuned runs of every effect test, so that a run two tests share is trained once."""
    return tmp_path_factory.mktemp("tuned-runs")
