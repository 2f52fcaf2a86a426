"""Settings for every test, notebooks included: the quick profile, strict claims (a claim a lesson's run does not
bear out fails, :mod:`ftcourse.claims`), a non-interactive matplotlib backend, and the
``slow`` and ``cuda`` markers (declared in pyproject.toml).

The settings are environment variables, so the Jupyter kernels that nbval starts for the notebooks inherit them.
This file sits at the root, not in tests/, because only here does it see the notebooks of notebooks/ and solutions/
that nbval collects.
"""

import os

import pytest

os.environ.setdefault("FTCOURSE_PROFILE", "quick")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("FTCOURSE_CLAIMS", "strict")


def pytest_collection_modifyitems(config, items):
    """Every notebook cell is slow (its kernel runs the whole lesson); a ``cuda`` test without a GPU is skipped."""
    cuda = None  # asked once, and only when some test needs to know
    for item in items:
        if str(item.path).endswith(".ipynb"):
            item.add_marker(pytest.mark.slow)
        if item.get_closest_marker("cuda") is not None:
            if cuda is None:
                import torch

                cuda = torch.cuda.is_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)"))
