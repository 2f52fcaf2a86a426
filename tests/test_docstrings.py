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


def _docstrings(module):
    """The module's own docstring and those of its functions, classes and methods."""
    import inspect

    yield module.__name__, inspect.getdoc(module)
    for name, value in vars(module).items():
        if (inspect.isfunction(value) or inspect.isclass(value)) and value.__module__ == module.__name__:
            yield f"{module.__name__}.{name}", inspect.getdoc(value)
            for method_name, method in vars(value).items() if inspect.isclass(value) else ():
                if inspect.isfunction(method):
                    yield f"{module.__name__}.{name}.{method_name}", inspect.getdoc(method)


# reStructuredText that the site's library page cannot render: |x| is a substitution, a lone ** or * opens emphasis
MARKUP_ERRORS = ("Undefined substitution referenced", "Inline strong start-string without end-string",
                 "Inline emphasis start-string without end-string", "Inline literal start-string without end-string")


@pytest.mark.parametrize("name", MODULES)
def test_docstrings_are_readable_restructuredtext_for_the_library_page(name):
    import io

    docutils_core = pytest.importorskip("docutils.core", reason="docutils comes with the site's Jupyter Book (test extra)")
    problems = []
    for where, doc in _docstrings(importlib.import_module(name)):
        if not doc:
            continue
        stream = io.StringIO()
        docutils_core.publish_doctree(doc, settings_overrides={"warning_stream": stream, "report_level": 2})
        problems += [f"{where}: {line}" for line in stream.getvalue().splitlines()
                     if any(error in line for error in MARKUP_ERRORS)]
    assert not problems, "\n".join(problems)
