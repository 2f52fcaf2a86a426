"""The examples in the library's docstrings are run: an example that no longer holds is a failing test."""

import doctest
import importlib
import pkgutil

import pytest

import ftcourse

# walk_packages goes into subpackages (ftcourse.grading), which iter_modules would not see
MODULES = [info.name for info in pkgutil.walk_packages(ftcourse.__path__, "ftcourse.")]


def test_the_docstring_tests_see_the_subpackages_too():
    assert {"ftcourse.grading", "ftcourse.grading.frames", "ftcourse.grading.grade"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed (see the output above)"
