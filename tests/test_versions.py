"""The lower bounds in pyproject.toml agree with ftcourse/versions.py, and the installed packages meet them."""

import re
from importlib import metadata
from pathlib import Path

import pytest

from ftcourse import versions

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def declared_dependencies() -> list[str]:
    """The strings of ``[project] dependencies``: with tomllib on Python 3.11+, else read from the text."""
    text = PYPROJECT.read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python 3.10
        block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.S | re.M).group(1)
        return re.findall(r'^\s*"([^"]+)"', block, re.M)
    return tomllib.loads(text)["project"]["dependencies"]


def lower_bounds() -> dict[str, str]:
    """``{"torch": "2.3", ...}`` from requirement strings like ``"torch>=2.3"``."""
    bounds = {}
    for requirement in declared_dependencies():
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9.]*)\s*", requirement)
        assert match, f"{requirement!r} in pyproject.toml is not of the form 'name>=version'"
        bounds[match.group(1).lower()] = match.group(2)
    return bounds


def test_release_compares_versions_as_numbers():
    assert versions.release("2.14.1+cu121") == (2, 14, 1)
    assert versions.at_least("2.10", "2.3") and not versions.at_least("2.2.2", "2.3")
    assert versions.at_least("2.3", "2.3.0") and versions.at_least("0.18.0", "0.18")


def test_the_minimum_is_the_newest_release_in_the_rows():
    assert versions.minimum("torch") == "2.3"  # torch.amp.GradScaler(device)
    assert versions.minimum("torchvision") == "0.18"


@pytest.mark.parametrize("package", sorted(versions.REQUIREMENTS))
def test_pyproject_bound_is_not_below_what_the_course_uses(package):
    bound = lower_bounds().get(package)
    assert bound is not None, f"pyproject.toml declares no lower bound for {package}"
    needed = versions.minimum(package)
    why = [f"{first}: {feature}" for first, feature, *_ in versions.REQUIREMENTS[package] if first == needed]
    assert versions.at_least(bound, needed), (
        f"pyproject.toml says {package}>={bound}, but the course needs {package}>={needed} ({'; '.join(why)}). "
        f"Raise the bound in pyproject.toml.")


@pytest.mark.parametrize("package", sorted(lower_bounds()))
def test_the_installed_version_meets_the_bound(package):
    installed = metadata.version(package)
    bound = lower_bounds()[package]
    assert versions.at_least(installed, bound), f"{package} {installed} is installed, pyproject.toml wants >={bound}"
