"""The examples in the library's docstrings are run: an example that no longer holds is a failing test."""

import doctest
import importlib
import pkgutil

import pytest

import ftcourse

MODULES = [info.name for info in pkgutil.iter_modules(ftcourse.__path__, "ftcourse.")]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (see the output above)"
